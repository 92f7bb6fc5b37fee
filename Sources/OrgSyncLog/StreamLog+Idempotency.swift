import Logging
import Synchronization

extension StreamLog {
    /// Appends entries like ``append(_:)``, once per idempotency key: a producer that never got
    /// the answer retries with the same key and gets the first append's offsets, and nothing is
    /// appended again. Keys are remembered for `idempotencyWindowMs` (at most the newest
    /// `idempotencyKeysMax`), durably: they are written with the entries, in the same write.
    ///
    /// - Parameter idempotencyKey: 1–255 visible ASCII bytes (0x21–0x7E); nil appends as
    ///   ``append(_:)`` does.
    /// - Returns: ``AppendOutcome/appended(_:)``, or ``AppendOutcome/replayed(_:)`` when the key
    ///   was seen within the window with the same entries (same count, bytes and hash).
    /// - Throws: ``LogError/invalidIdempotencyKey(_:)``; ``LogError/idempotencyKeyReused(key:)``
    ///   when the key was used for different entries; ``LogError/idempotencyKeyInFlight(key:)``
    ///   while the first append with the key is queued or being written; and what ``append(_:)``
    ///   throws. A failed append forgets its key: a retry may append.
    public func append(_ entries: [[UInt8]], idempotencyKey: String?) async throws -> AppendOutcome {
        guard let key = idempotencyKey else { return .appended(try await append(entries)) }
        guard IdempotencyKey.isValid(key) else { throw LogError.invalidIdempotencyKey(key) }
        try checkLimits(entries)
        return try await enqueue(entries, claim: KeyClaim(key: key, fingerprint: EntriesFingerprint(entries: entries)))
    }

    /// Keys remembered now (for tests and metrics).
    public var idempotencyKeyCount: Int { state.withLock { $0.idempotency.count } }

    // MARK: Rebuilding the keys on open

    /// Rebuilds the remembered keys: the active segment's control batches (found by walking
    /// batch headers), then the `.keys` files of sealed segments from the newest back, until the
    /// window's age or count is covered. A missing or damaged `.keys` file is rebuilt from its
    /// segment's control batches.
    func loadIdempotencyKeys(segments: [Segment]) throws {
        let nowMs = clock()
        let windowMs = configuration.idempotencyWindowMs
        let keysMax = configuration.idempotencyKeysMax
        guard let active = segments.last else { return }
        let activeKeys = try controlRecords(of: active, limit: active.snapshot.dataEnd).records
        var newestFirst: [[IdempotencyRecord]] = [activeKeys]
        var count = activeKeys.count
        for (i, segment) in segments.enumerated().dropLast().reversed() {
            guard count < keysMax else { break }
            let keys = try keysFile(of: segment)
            // Batches are written in time order: once a segment is out of the window, so are the older ones.
            if let newest = keys.newestTimestampMs, ageMs(of: newest, nowMs: nowMs) >= windowMs { break }
            let end = segments[i + 1].baseOffset
            let records = keys.records.filter { $0.result.lastOffset < end }
            newestFirst.append(records)
            count += records.count
        }
        var table = IdempotencyTable(windowMs: windowMs, keysMax: keysMax)
        for records in newestFirst.reversed() {
            for record in records { table.remember(record, nowMs: nowMs) }
        }
        state.withLock { s in
            s.idempotency = table
            s.activeSegmentKeys = activeKeys
        }
    }

    /// The `.keys` file of a sealed segment, rebuilt (and rewritten) when missing or damaged.
    private func keysFile(of segment: Segment) throws -> KeysFile {
        if storage.fileExists(segment.keysPath),
           let bytes = try? storage.openFile(segment.keysPath, create: false).readAll(),
           let keys = KeysFile.decode(bytes, segmentBaseOffset: segment.baseOffset) {
            return keys
        }
        let (records, newest) = try controlRecords(of: segment, limit: segment.snapshot.dataEnd)
        let keys = KeysFile(segmentBaseOffset: segment.baseOffset, newestTimestampMs: newest, records: records)
        do {
            try writeKeysFile(keys)
            try storage.syncDirectory(directory)
        } catch {
            // A cache: the next open rebuilds it again.
            logger.warning("could not rewrite a .keys file", metadata: ["path": "\(segment.keysPath)", "error": "\(error)"])
        }
        logger.info("rebuilt idempotency keys from the segment", metadata: ["path": "\(segment.keysPath)", "keys": "\(records.count)"])
        return keys
    }

    /// Walks a segment's batch headers up to `limit`, reading only control batches in full
    /// (data batches are skipped by their length, never inflated). Stops quietly at a bad batch:
    /// reads report damage; the keys before it stay usable.
    func controlRecords(of segment: Segment, limit: Int64) throws -> (records: [IdempotencyRecord], newestTimestampMs: Int64?) {
        var records: [IdempotencyRecord] = []
        var newest: Int64?
        var position: Int64 = 0
        var buffer: [UInt8] = []
        guard limit >= Int64(RecordBatchHeader.size) else { return ([], nil) }
        let file = try segment.file()
        while position + Int64(RecordBatchHeader.size) <= limit {
            buffer.removeAll(keepingCapacity: true)
            try file.read(at: position, count: RecordBatchHeader.size, into: &buffer)
            guard let header = try? buffer.withUnsafeBytes({ try RecordBatchCodec.decodeHeader($0) }) else { break }
            if header.isControl {
                guard let whole = try? segment.readBatch(at: position, limit: limit, expectedBase: nil, buffer: &buffer),
                      let decoded = try? buffer.withUnsafeBytes({ try RecordBatchCodec.decodeControlRecords($0, header: whole) })
                else { break }
                records.append(contentsOf: decoded)
            }
            newest = max(newest ?? header.maxTimestampMs, header.maxTimestampMs)
            position += Int64(header.batchLength)
        }
        return (records, newest)
    }

    /// Writes a `.keys` file durably: a temporary file, fdatasync, then rename over the old one
    /// (the caller syncs the directory).
    func writeKeysFile(_ keys: KeysFile) throws {
        try storage.replaceFile(directory + "/" + Segment.fileName(keys.segmentBaseOffset, ".keys"), with: keys.encoded())
    }

    /// Removes every file of the segment at `base` (`.log`, `.index`, `.keys`, `.zdict`); missing
    /// ones are fine. For retention and repair: a removed segment must not leave its keys behind.
    /// The `.log` goes first, so a crash in between leaves at most files no `.log` refers to; and
    /// when there is a `.zdict`, the directory is synced between the two: unsynced removals may
    /// reach the disk in any order, and a power cut must not bring back a `.log` whose codec-2
    /// batches lost their dictionary. The caller syncs the directory after.
    public static func removeSegmentFiles(directory: String, base: UInt64, storage: any LogStorage = PosixStorage()) throws {
        let dictionary = directory + "/" + Segment.fileName(base, DictionaryFile.suffix)
        for suffix in [".log", ".index", ".keys", ".keys.tmp", DictionaryFile.suffix, DictionaryFile.suffix + ".tmp"] {
            let path = directory + "/" + Segment.fileName(base, suffix)
            if suffix == DictionaryFile.suffix && storage.fileExists(dictionary) { try storage.syncDirectory(directory) }
            if storage.fileExists(path) { try storage.removeFile(path) }
        }
    }
}
