#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// One point of a segment's sparse index: the entry at `baseOffset + relativeOffset` starts a
/// batch at byte `position` of the segment's `.log`.
struct IndexPoint: Sendable, Hashable {
    var relativeOffset: UInt32
    var position: UInt32
    static let size = 8
}

/// A segment: one `.log` file of record batches and its sparse `.index`.
///
/// The `.index` is a cache: it is never trusted without checks and can always be rebuilt from
/// the `.log`. Sealed segments are truncated to their exact data length; the active (last)
/// segment is pre-written with zeros past its data, so its data end is found by scanning.
///
/// The active segment holds its `.log` open for as long as it is active; a sealed one is opened
/// only when read, through the stream's bounded ``SealedSegmentFiles``.
final class Segment: Sendable {
    let baseOffset: UInt64
    let logPath: String
    let indexPath: String
    /// Idempotency records of the segment, written when it is sealed (see ``KeysFile``).
    let keysPath: String
    /// The preset dictionary of its codec-2 batches, if it has any (see ``DictionaryFile``).
    let dictionaryPath: String
    /// The `.zdict` as last read or written; nil until first needed, and after a read that
    /// failed with an I/O error (retried next time). Never changes once a file is there: a
    /// dictionary is written once, before any batch that uses it.
    private let loadedDictionary: Mutex<SegmentDictionary?>
    /// The active segment's open `.log`; nil once sealed (reads then go through `sealedFiles`).
    private let activeFile: Mutex<(any LogFile)?>
    private let sealedFiles: SealedSegmentFiles
    let storage: any LogStorage
    private let indexIntervalBytes: Int

    struct State: Sendable {
        /// Bytes of valid batches from the start of the file.
        var dataEnd: Int64 = 0
        /// The offset after the last entry in this segment.
        var nextOffset: UInt64
        /// Index points, increasing; nil until loaded (sealed segments load lazily).
        var index: [IndexPoint]?
        /// Index points already written to the `.index` file.
        var indexPointsWritten = 0
        var lastIndexedPosition: Int64 = -1
        /// Bytes of the file that exist (zeros past dataEnd up to here).
        var preallocatedEnd: Int64 = 0
        var firstTimestampMs: Int64?
        var maxTimestampMs: Int64?
        var sealed: Bool
        /// Bytes of entries (uncompressed, without framing) in the batches noted so far; for
        /// a sealed segment nil until ``rawBytes()`` walks its headers once.
        var rawBytes: Int64? = nil
    }

    let state: Mutex<State>

    static func fileName(_ baseOffset: UInt64, _ suffix: String) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + suffix
    }

    init(directory: String, baseOffset: UInt64, storage: any LogStorage, sealedFiles: SealedSegmentFiles,
         create: Bool, sealed: Bool, nextOffset: UInt64, indexIntervalBytes: Int) throws {
        self.baseOffset = baseOffset
        self.logPath = directory + "/" + Segment.fileName(baseOffset, ".log")
        self.indexPath = directory + "/" + Segment.fileName(baseOffset, ".index")
        self.keysPath = directory + "/" + Segment.fileName(baseOffset, ".keys")
        self.dictionaryPath = directory + "/" + Segment.fileName(baseOffset, DictionaryFile.suffix)
        self.loadedDictionary = Mutex(nil)
        self.storage = storage
        self.indexIntervalBytes = indexIntervalBytes
        self.sealedFiles = sealedFiles
        let size: Int64
        if sealed && !create {
            // Not opened: its size is all opening the stream needs.
            size = try storage.fileSize(logPath)
            self.activeFile = Mutex(nil)
        } else {
            let file = try storage.openFile(logPath, create: create)
            size = try file.size()
            self.activeFile = Mutex(file)
        }
        self.state = Mutex(State(dataEnd: sealed ? size : 0, nextOffset: nextOffset, index: nil,
                                 preallocatedEnd: size, sealed: sealed))
    }

    var snapshot: State { state.withLock { $0 } }

    /// The open `.log`: the active segment's own, or a sealed one's from the cache (opened now
    /// if it is not there). Callers keep it for one operation only, not beyond.
    func file() throws -> any LogFile {
        if let file = activeFile.withLock({ $0 }) { return file }
        return try sealedFiles.file(logPath)
    }

    /// Called once the segment is sealed: its descriptor is no longer held for writing; reads
    /// reopen it through the cache when they need it.
    func releaseActiveFile() {
        let file = activeFile.withLock { file -> (any LogFile)? in
            defer { file = nil }
            return file
        }
        _ = file  // dropped outside the lock
    }

    // MARK: Dictionary

    /// The segment's preset dictionary: read from its `.zdict` the first time, then kept.
    ///
    /// - Throws: ``StorageError`` when the file could not be read (not remembered).
    func dictionary() throws -> SegmentDictionary {
        if let known = loadedDictionary.withLock({ $0 }) { return known }
        let loaded = try DictionaryFile.load(path: dictionaryPath, storage: storage)
        return loadedDictionary.withLock { known in
            if let known { return known }
            known = loaded
            return loaded
        }
    }

    /// Sets what the segment remembers of its `.zdict` (nil: nothing, read it next time).
    /// For tests: a segment as a sealed one is before its first read, or as a stat error
    /// would have left it.
    func forgetDictionaryForTesting(as remembered: SegmentDictionary? = nil) {
        loadedDictionary.withLock { $0 = remembered }
    }

    /// Writes `dictionary` as the segment's `.zdict` (temporary file, fsync, rename). The
    /// caller syncs the directory before writing any batch that uses it. Only for a segment
    /// that has none: a dictionary file is never replaced, as earlier codec-2 batches may need
    /// the one there. Checked on disk, whatever was remembered: only the flusher (of the one
    /// process holding the stream's lock) installs dictionaries, so nothing creates the file
    /// between the check and the rename.
    ///
    /// - Throws: ``StorageError`` with `EEXIST` when the segment has a `.zdict` on disk (and
    ///   then forgets what it remembered, so that the next call reads that file).
    func installDictionary(_ dictionary: Zlib.PresetDictionary) throws {
        if try storage.identity(ofPath: dictionaryPath) != nil {
            loadedDictionary.withLock { $0 = nil }
            throw StorageError(operation: "install dictionary", path: dictionaryPath, errno: EEXIST)
        }
        try storage.replaceFile(dictionaryPath, with: DictionaryFile.encode(dictionary))
        loadedDictionary.withLock { $0 = .present(dictionary) }
    }

    // MARK: Index

    /// Reads the `.index` file and keeps its longest valid prefix: points must increase and
    /// lie inside the data. Returns the points (not yet checked against batch headers).
    func readIndexFile(dataEnd: Int64) -> [IndexPoint] {
        guard storage.fileExists(indexPath), let indexFile = try? storage.openFile(indexPath, create: false),
              let bytes = try? indexFile.readAll()
        else { return [] }
        var points: [IndexPoint] = []
        bytes.withUnsafeBytes { raw in
            var at = 0
            while at + IndexPoint.size <= raw.count {
                let point = IndexPoint(relativeOffset: raw.loadLE(at: at), position: raw.loadLE(at: at + 4))
                if let last = points.last, point.relativeOffset <= last.relativeOffset || point.position <= last.position { break }
                if Int64(point.position) >= dataEnd && dataEnd > 0 { break }
                if points.isEmpty && point.position != 0 { break }
                if !pointsAtBatch(point, dataEnd: dataEnd) { break }
                points.append(point)
                at += IndexPoint.size
            }
        }
        return points
    }

    /// Whether a batch header with the point's base offset starts at the point's position.
    /// A damaged index point must never be mistaken for damaged data.
    private func pointsAtBatch(_ point: IndexPoint, dataEnd: Int64) -> Bool {
        var bytes: [UInt8] = []
        guard (try? file().read(at: Int64(point.position), count: RecordBatchHeader.size, into: &bytes)) != nil,
              let header = try? bytes.withUnsafeBytes({ try RecordBatchCodec.decodeHeader($0) })
        else { return false }
        return header.baseOffset == baseOffset + UInt64(point.relativeOffset)
            && (dataEnd == 0 || Int64(point.position) + Int64(header.batchLength) <= dataEnd)
    }

    /// Rewrites the whole `.index` file from memory (after a rebuild or at seal).
    func writeIndexFile(sync: Bool) throws {
        let points = state.withLock { $0.index ?? [] }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(points.count * IndexPoint.size)
        for point in points {
            bytes.appendLE(point.relativeOffset)
            bytes.appendLE(point.position)
        }
        let indexFile = try storage.openFile(indexPath, create: true)
        try indexFile.truncate(to: 0)
        try indexFile.write(bytes, at: 0)
        if sync { try indexFile.sync() }
        state.withLock { $0.indexPointsWritten = points.count }
    }

    /// Appends index points added since the last call to the `.index` file (not synced: the
    /// index is rebuilt from the log when it is behind or bad).
    func flushIndexPoints() throws {
        let (points, from) = state.withLock { s -> ([IndexPoint], Int) in
            let all = s.index ?? []
            return (Array(all[s.indexPointsWritten...]), s.indexPointsWritten)
        }
        guard !points.isEmpty else { return }
        var bytes: [UInt8] = []
        for point in points {
            bytes.appendLE(point.relativeOffset)
            bytes.appendLE(point.position)
        }
        let indexFile = try storage.openFile(indexPath, create: true)
        try indexFile.write(bytes, at: Int64(from * IndexPoint.size))
        state.withLock { $0.indexPointsWritten = from + points.count }
    }

    /// Records a batch written at `position` (called by the writer, or while scanning).
    func noteBatch(_ header: RecordBatchHeader, at position: Int64) {
        state.withLock { s in
            if s.index == nil { s.index = [] }
            // Index points name entries; a control batch holds none (and shares its base offset
            // with the next data batch, which the point must name).
            if !header.isControl && (s.lastIndexedPosition < 0 || position - s.lastIndexedPosition >= Int64(indexIntervalBytes)) {
                s.index?.append(IndexPoint(relativeOffset: UInt32(header.baseOffset - baseOffset), position: UInt32(position)))
                s.lastIndexedPosition = position
            }
            s.dataEnd = position + Int64(header.batchLength)
            s.nextOffset = header.nextOffset
            if !s.sealed || s.rawBytes != nil {
                s.rawBytes = (s.rawBytes ?? 0) + header.entryBytes
            }
            if s.firstTimestampMs == nil { s.firstTimestampMs = header.firstTimestampMs }
            s.maxTimestampMs = max(s.maxTimestampMs ?? header.maxTimestampMs, header.maxTimestampMs)
        }
    }

    /// Entry bytes held by this segment (for the compression ratio). A sealed segment's are
    /// found once by reading each batch header (52 bytes a batch), then kept.
    func rawBytes() -> Int64 {
        learnFromHeadersIfNeeded()
        return state.withLock { $0.rawBytes ?? 0 }
    }

    /// The newest batch timestamp in this segment, ms since 1970 (what age retention counts
    /// from); nil when it holds no batch or its headers cannot all be read. A sealed segment
    /// opened from disk learns it once by reading each batch header, with ``rawBytes()``.
    func newestTimestampMs() -> Int64? {
        if let known = state.withLock({ $0.maxTimestampMs }) { return known }
        learnFromHeadersIfNeeded()
        return state.withLock { $0.maxTimestampMs }
    }

    /// Reads every batch header of a sealed segment once, for what only the headers tell: the
    /// entry bytes and the newest timestamp. The newest timestamp is kept only when every header
    /// up to the data's end was read (a partial walk would make a damaged segment look older).
    private func learnFromHeadersIfNeeded() {
        let (known, dataEnd) = state.withLock { ($0.rawBytes, $0.dataEnd) }
        guard known == nil else { return }
        let facts = factsOfHeaders(upTo: dataEnd)
        state.withLock { s in
            s.rawBytes = facts.rawBytes
            if facts.complete, let newest = facts.newestTimestampMs { s.maxTimestampMs = max(s.maxTimestampMs ?? newest, newest) }
        }
    }

    /// What the batch headers in [0, `dataEnd`) tell, read without their payloads.
    struct HeaderFacts {
        var rawBytes: Int64 = 0
        var firstTimestampMs: Int64?
        var newestTimestampMs: Int64?
        /// Whether the headers led exactly to `dataEnd` (if not, the figures are of a prefix).
        var complete = false
    }

    /// Reads only the batch headers in [0, `dataEnd`), 52 bytes a batch.
    func factsOfHeaders(upTo dataEnd: Int64) -> HeaderFacts {
        var facts = HeaderFacts()
        var position: Int64 = 0
        var bytes: [UInt8] = []
        guard dataEnd > 0, let file = try? file() else { return HeaderFacts(complete: dataEnd == 0) }
        while position < dataEnd {
            bytes.removeAll(keepingCapacity: true)
            guard (try? file.read(at: position, count: RecordBatchHeader.size, into: &bytes)) != nil,
                  let header = try? bytes.withUnsafeBytes({ try RecordBatchCodec.decodeHeader($0) })
            else { return facts }
            facts.rawBytes += header.entryBytes
            if facts.firstTimestampMs == nil { facts.firstTimestampMs = header.firstTimestampMs }
            facts.newestTimestampMs = max(facts.newestTimestampMs ?? header.maxTimestampMs, header.maxTimestampMs)
            position += Int64(header.batchLength)
        }
        facts.complete = position == dataEnd
        return facts
    }

    // MARK: Reading batches

    /// The index point to start reading at for `offset` (the greatest point at or below it).
    func startPoint(for offset: UInt64) throws -> (position: Int64, base: UInt64) {
        try ensureIndex()
        let points = state.withLock { $0.index ?? [] }
        let relative = offset - baseOffset
        var low = 0
        var high = points.count - 1
        var best: IndexPoint?
        while low <= high {
            let mid = (low + high) / 2
            if UInt64(points[mid].relativeOffset) <= relative {
                best = points[mid]
                low = mid + 1
            } else {
                high = mid - 1
            }
        }
        guard let best else { return (0, baseOffset) }
        return (Int64(best.position), baseOffset + UInt64(best.relativeOffset))
    }

    /// Loads (and if needed rebuilds) the index of a sealed segment.
    func ensureIndex() throws {
        let (loaded, dataEnd) = state.withLock { ($0.index != nil, $0.dataEnd) }
        if loaded { return }
        var points = readIndexFile(dataEnd: dataEnd)
        // Trust a point only if a batch header with the right base offset is there.
        var buffer: [UInt8] = []
        while let last = points.last {
            if (try? readBatch(at: Int64(last.position), limit: dataEnd, expectedBase: baseOffset + UInt64(last.relativeOffset), buffer: &buffer)) != nil { break }
            points.removeLast()
        }
        let complete = !points.isEmpty && isIndexComplete(points, dataEnd: dataEnd, buffer: &buffer)
        if complete {
            state.withLock { s in
                s.index = points
                s.indexPointsWritten = points.count
                s.lastIndexedPosition = Int64(points.last?.position ?? 0)
            }
            return
        }
        try rebuildIndex(dataEnd: dataEnd)
    }

    /// An index is complete when the tail after its last point is short (within one interval
    /// plus one batch); otherwise rebuild it so reads stay fast.
    private func isIndexComplete(_ points: [IndexPoint], dataEnd: Int64, buffer: inout [UInt8]) -> Bool {
        guard let last = points.last else { return false }
        var position = Int64(last.position)
        var expected = baseOffset + UInt64(last.relativeOffset)
        var batches = 0
        while position < dataEnd && batches < 64 {
            guard let header = try? readBatch(at: position, limit: dataEnd, expectedBase: expected, buffer: &buffer) else { return false }
            position += Int64(header.batchLength)
            expected = header.nextOffset
            batches += 1
        }
        return position == dataEnd
    }

    /// Rebuilds the index of a sealed segment by scanning it; a bad batch is corruption.
    private func rebuildIndex(dataEnd: Int64) throws {
        state.withLock { s in
            s.index = []
            s.lastIndexedPosition = -1
            s.indexPointsWritten = 0
        }
        var position: Int64 = 0
        var expected = baseOffset
        var buffer: [UInt8] = []
        while position < dataEnd {
            let header: RecordBatchHeader
            do {
                header = try readBatch(at: position, limit: dataEnd, expectedBase: expected, buffer: &buffer)
            } catch let error as BatchDecodeError {
                let next = state.withLock { $0.nextOffset }
                throw LogError.corrupt(CorruptionReport(
                    segment: Segment.fileName(baseOffset, ".log"), bytePosition: position,
                    firstOffset: expected, endOffset: next, reason: error.description))
            }
            let nextOffset = state.withLock { $0.nextOffset }
            noteBatch(header, at: position)
            state.withLock { $0.nextOffset = nextOffset }  // a sealed segment's end is known
            position += Int64(header.batchLength)
            expected = header.nextOffset
        }
        try? writeIndexFile(sync: false)
    }
}
