#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Logging
import Synchronization

/// One entry read back from the log.
public struct LogRecord: Sendable, Hashable {
    public var offset: UInt64
    /// Broker append time, ms since the Unix epoch.
    public var timestampMs: Int64
    public var payload: [UInt8]
}

/// The offsets an append was given. Returned only once the entries are durable (per policy).
public struct AppendResult: Sendable, Hashable {
    public var firstOffset: UInt64
    public var lastOffset: UInt64
    public var count: Int { Int(lastOffset - firstOffset + 1) }

    public init(firstOffset: UInt64, lastOffset: UInt64) {
        self.firstOffset = firstOffset
        self.lastOffset = lastOffset
    }
}

/// What recovery found when the stream was opened.
public struct RecoveryReport: Sendable, Hashable, CustomStringConvertible {
    /// Segment whose tail was scanned.
    public var segment: String
    /// Bytes scanned (from the last index point): bounded, whatever the log's size.
    public var scannedBytes: Int64
    /// Set when a torn or corrupt tail was cut: where, how many bytes, from which offset on.
    public var truncatedAtPosition: Int64?
    public var truncatedBytes: Int64 = 0
    public var reason: String?
    public var endOffset: UInt64
    /// Cursors that pointed past the end after a truncation and were set back to it.
    public var clampedCursors: [String] = []

    public var description: String {
        if let at = truncatedAtPosition {
            return "recovered \(segment): cut \(truncatedBytes) bytes at byte \(at) (\(reason ?? "?")); entries from offset \(endOffset) on were never acknowledged"
        }
        return "recovered \(segment): clean, scanned \(scannedBytes) bytes, end offset \(endOffset)"
    }
}

/// A stream: an append-only, durable, compressed log of entries in a directory of segments.
///
/// - Appends from many tasks are group-committed by one flusher on a dedicated dispatch queue
///   (never on a Swift concurrency or event-loop thread): while a flush is in flight new appends
///   queue; the next flush writes all of them with one write and one fdatasync.
/// - Readers see only acknowledged entries; ``waitForEntries(after:)`` wakes on append.
/// - Thread-safe: every method may be called from any task.
public final class StreamLog: Sendable {
    public let name: String
    public let directory: String
    public let configuration: LogConfiguration
    public let cursors: CursorStore
    public let recovery: RecoveryReport
    /// The stream's id and epochs (see ``StreamLineage``): what targets store with their offsets.
    public let lineage: StreamLineage
    let storage: any LogStorage
    /// The open files of sealed segments: at most `configuration.openSealedSegmentsMax`.
    let sealedFiles: SealedSegmentFiles
    let logger: Logger
    /// Wall-clock milliseconds for batch timestamps (segment age, retention). Injectable for tests.
    let clock: @Sendable () -> Int64
    /// Told about every flush (for metrics); nil for none.
    let observer: (any LogObserver)?
    let flushQueue: DispatchQueue
    let state: Mutex<State>
    /// Wakes the flusher while it gathers a group (see `gatherStragglers`).
    let gatherSignal = DispatchSemaphore(value: 0)
    /// Held while the log is open (released by `close()`): one writer process per stream.
    let lock: Mutex<(any LogLock)?>
    /// Preset dictionaries being made and used by the flusher (only it takes this lock).
    let dictionaryWriter: Mutex<DictionaryWriter>

    struct PendingAppend {
        var entries: [[UInt8]]
        var bytes: Int
        var continuation: CheckedContinuation<AppendOutcome, any Error>
        /// The idempotency key this append claimed (in flight until it is written or fails).
        var claim: KeyClaim?
        /// Record batches already encoded (compressed) by the appender, base offsets still 0;
        /// the flusher patches offsets and CRCs. Nil for small appends, grouped by the flusher.
        var encoded: EncodedBatches?
    }

    struct KeyClaim {
        var key: String
        var fingerprint: EntriesFingerprint
    }

    struct EncodedBatches {
        var bytes: [UInt8]
        var batches: [(position: Int, entryCount: Int)]
    }

    struct State {
        var segments: [Segment]
        /// Next offset readers cannot see yet: everything below is acknowledged.
        var endOffset: UInt64
        var startOffset: UInt64
        /// The next offset the flusher will assign (≥ endOffset).
        var writeOffset: UInt64
        var pending: [PendingAppend] = []
        var pendingBytes = 0
        /// Appends waiting for room in `pending` (back-pressure), in arrival order.
        var waiting: [PendingAppend] = []
        var flushing = false
        var tailWaiters: [UInt64: (after: UInt64, continuation: CheckedContinuation<Void, any Error>)] = [:]
        var nextWaiterID: UInt64 = 0
        var closed = false
        var failure: LogError?
        var intervalSyncScheduled = false
        /// Appends in the last flushed group, and whether the flusher is waiting for stragglers.
        var lastGroupAppends = 0
        var gathering = false
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        /// Remembered and in-flight idempotency keys (set up by `loadIdempotencyKeys`).
        var idempotency = IdempotencyTable(windowMs: 1, keysMax: 1)
        /// Key records written to the active segment: its `.keys` file when it is sealed.
        var activeSegmentKeys: [IdempotencyRecord] = []
    }

    /// The marker file that refuses a stream with interior corruption until repaired.
    public static let corruptMarkerName = "CORRUPT"

    // MARK: Opening

    /// Opens (creating if needed) the stream `name` under `dataDirectory/streams/`, recovering
    /// the tail of its last segment.
    ///
    /// - Throws: ``LogError/corrupt(_:)`` if the stream was marked corrupt (by `log verify` or a
    ///   read); ``LogError/storage(_:)``; ``LogError/invalidConfiguration(field:problem:)``.
    public static func open(
        dataDirectory: String, name: String, configuration: LogConfiguration = LogConfiguration(),
        storage: any LogStorage = PosixStorage(), logger: Logger = Logger(label: "orgsync.log"),
        clock: @escaping @Sendable () -> Int64 = wallClockMs, observer: (any LogObserver)? = nil
    ) throws -> StreamLog {
        guard isValidName(name) else { throw LogError.invalidStreamName(name) }
        try configuration.validate()
        let directory = streamDirectory(dataDirectory: dataDirectory, name: name)
        return try wrapStorage {
            try StreamLog(name: name, directory: directory, configuration: configuration, storage: storage, logger: logger, clock: clock, observer: observer)
        }
    }

    public static func streamDirectory(dataDirectory: String, name: String) -> String {
        (dataDirectory.hasSuffix("/") ? dataDirectory : dataDirectory + "/") + "streams/" + name
    }

    private init(
        name: String, directory: String, configuration: LogConfiguration, storage: any LogStorage, logger: Logger,
        clock: @escaping @Sendable () -> Int64, observer: (any LogObserver)?
    ) throws {
        self.name = name
        self.clock = clock
        self.observer = observer
        self.directory = directory
        self.configuration = configuration
        self.storage = storage
        self.sealedFiles = SealedSegmentFiles(storage: storage, capacity: configuration.openSealedSegmentsMax)
        var logger = logger
        logger[metadataKey: "stream"] = "\(name)"
        self.logger = logger
        self.flushQueue = DispatchQueue(label: "orgsync.flush.\(name)", qos: .userInitiated)
        try storage.createDirectory(directory)
        self.lock = Mutex(try storage.lockFile(directory + "/LOCK"))
        if let report = try StreamLog.readCorruptMarker(directory: directory, storage: storage) {
            throw LogError.corrupt(report)
        }
        var bases = try StreamLog.segmentBaseOffsets(directory: directory, storage: storage)
        var (lineage, madeIdentity) = try StreamLineage.loadOrCreate(directory: directory, storage: storage)
        if !lineage.usesPresetDictionaries,
           try storage.listDirectory(directory).contains(where: { $0.hasSuffix(DictionaryFile.suffix) }) {
            // Written by a build that made dictionaries without marking the identity: marked
            // now, so that an older release refuses the stream rather than cut its codec-2 batches.
            lineage.usesPresetDictionaries = true
            try lineage.store(directory: directory, storage: storage)
        }
        self.lineage = lineage
        self.dictionaryWriter = Mutex(DictionaryWriter(dictionaryBytesMax: configuration.dictionaryBytesMax,
                                                       identityAllowsDictionaries: lineage.usesPresetDictionaries))
        if madeIdentity {
            logger.notice("stream has a new identity", metadata: ["stream_id": "\(lineage.streamID)", "had_segments": "\(!bases.isEmpty)"])
        }
        if bases.isEmpty {
            _ = try Segment(directory: directory, baseOffset: 0, storage: storage, sealedFiles: sealedFiles, create: true,
                            sealed: false, nextOffset: 0, indexIntervalBytes: configuration.indexIntervalBytes)
            try storage.syncDirectory(directory)
            bases = [0]
        }
        // Sealed segments are not opened here (only stat'ed): recovery scans the active one, and
        // reads open the others through `sealedFiles`.
        var segments: [Segment] = []
        segments.reserveCapacity(bases.count)
        for (i, base) in bases.enumerated() {
            let last = i == bases.count - 1
            segments.append(try Segment(
                directory: directory, baseOffset: base, storage: storage, sealedFiles: sealedFiles, create: false,
                sealed: !last, nextOffset: last ? base : bases[i + 1], indexIntervalBytes: configuration.indexIntervalBytes))
        }
        let active = segments[segments.count - 1]
        var report = try active.recover()
        let end = active.snapshot.nextOffset
        self.cursors = try CursorStore(directory: directory + "/cursors", storage: storage)
        report.clampedCursors = try cursors.clamp(to: end)
        self.recovery = report
        self.state = Mutex(State(segments: segments, endOffset: end, startOffset: segments[0].baseOffset, writeOffset: end))
        try loadIdempotencyKeys(segments: segments)
        if report.truncatedAtPosition != nil || !report.clampedCursors.isEmpty {
            logger.warning("recovery cut a torn tail", metadata: ["report": "\(report)"])
        } else {
            logger.debug("recovered", metadata: ["report": "\(report)"])
        }
    }

    static func segmentBaseOffsets(directory: String, storage: any LogStorage) throws -> [UInt64] {
        try storage.listDirectory(directory).compactMap { name -> UInt64? in
            guard name.hasSuffix(".log"), name.utf8.count == 24 else { return nil }
            return UInt64(name.dropLast(4))
        }.sorted()
    }

    static func directoryOf(_ segment: Segment) -> String {
        String(segment.logPath[..<(segment.logPath.lastIndex(of: "/") ?? segment.logPath.endIndex)])
    }

    /// Position of the last non-zero byte in [from, to), or nil if all zero.
    static func lastNonZeroByte(_ file: any LogFile, from: Int64, to: Int64) throws -> Int64? {
        var last: Int64?
        var at = from
        var chunk: [UInt8] = []
        let chunkBytes = 1 << 20
        while at < to {
            chunk.removeAll(keepingCapacity: true)
            let n = try file.read(at: at, count: Int(min(Int64(chunkBytes), to - at)), into: &chunk)
            if n == 0 { break }
            if let i = chunk.lastIndex(where: { $0 != 0 }) { last = at + Int64(i) }
            at += Int64(n)
        }
        return last
    }

    // MARK: Positions

    /// The offset the next appended entry will get, as far as readers can see: every entry
    /// below it is acknowledged.
    public var endOffset: UInt64 { state.withLock { $0.endOffset } }

    /// The oldest offset still held (older segments were deleted by retention).
    public var startOffset: UInt64 { state.withLock { $0.startOffset } }

    /// Segments, bytes stored, offsets: cheap (no scan).
    public func info() -> StreamInfo {
        let (segments, start, end) = state.withLock { ($0.segments, $0.startOffset, $0.endOffset) }
        let bytes = segments.reduce(Int64(0)) { $0 + $1.snapshot.dataEnd }
        let raw = segments.reduce(Int64(0)) { $0 + $1.rawBytes() }
        return StreamInfo(name: name, startOffset: start, endOffset: end, segmentCount: segments.count, storedBytes: bytes, rawBytes: raw)
    }

    // MARK: Reading

    /// Payload bytes one read returns at most unless asked otherwise: 4 MiB.
    public static let readBytesMaxDefault = 4 << 20

    /// Up to `maxEntries` acknowledged entries from `offset` on (and about `maxBytes` of payload;
    /// at least one entry when any is there). Empty when `offset` is the end.
    ///
    /// - Throws: ``LogError/offsetOutOfRange(requested:start:end:)``; ``LogError/corrupt(_:)``
    ///   when a batch fails its checks (the stream is then marked corrupt and refused on the
    ///   next open until repaired).
    public func read(from offset: UInt64, maxEntries: Int, maxBytes: Int = StreamLog.readBytesMaxDefault) throws -> [LogRecord] {
        let (segments, start, end) = state.withLock { ($0.segments, $0.startOffset, $0.endOffset) }
        guard offset >= start, offset <= end else {
            throw LogError.offsetOutOfRange(requested: offset, start: start, end: end)
        }
        guard offset < end, maxEntries > 0 else { return [] }
        var index = segments.count - 1
        while index > 0 && segments[index].baseOffset > offset { index -= 1 }
        var records: [LogRecord] = []
        var bytes = 0
        var buffer: [UInt8] = []
        var payload: [UInt8] = []
        var ranges: [Range<Int>] = []
        var segment = segments[index]
        var (position, expected): (Int64, UInt64)
        do {
            (position, expected) = try wrapStorage { try segment.startPoint(for: offset) }
        } catch LogError.corrupt(let report) {
            markCorrupt(report)
            throw LogError.corrupt(report)
        }
        while records.count < maxEntries && bytes < maxBytes && expected < end {
            let limit = segment.snapshot.dataEnd
            if position >= limit {
                guard index + 1 < segments.count else { break }
                // A sealed segment must end where the next begins. One that ends short (cut or
                // emptied on disk) or runs past it holds other offsets than its neighbours say:
                // stepping to the next segment would skip entries, or go back, without a word.
                let next = segments[index + 1].baseOffset
                if expected != next {
                    if !records.isEmpty && expected < next { return records }
                    let report = CorruptionReport(
                        segment: Segment.fileName(segment.baseOffset, ".log"), bytePosition: position,
                        firstOffset: min(expected, next), endOffset: max(expected, next),
                        reason: "segment ends at offset \(expected), next starts at \(next)")
                    markCorrupt(report)
                    throw LogError.corrupt(report)
                }
                index += 1
                segment = segments[index]
                position = 0
                expected = segment.baseOffset
                continue
            }
            let header: RecordBatchHeader
            do {
                header = try segment.readAndDecodeBatch(
                    at: position, limit: limit, expectedBase: expected, buffer: &buffer, payload: &payload, ranges: &ranges)
            } catch let error as BatchDecodeError {
                // Retention may have deleted the segment, `.zdict` and all, between this read of
                // a batch and of its dictionary: as for any segment deleted under a reader, the
                // offsets are gone, and the stream is not damaged.
                if error.isDictionaryError, let start = retiredStart(of: segment) {
                    if !records.isEmpty { return records }
                    throw LogError.offsetOutOfRange(requested: offset, start: start, end: end)
                }
                let next = index + 1 < segments.count ? segments[index + 1].baseOffset : end
                // Serve what was good before the damage; the next read starts at it and throws.
                // Not when the damage follows the last entry of a sealed segment: the next read
                // would start in the next segment and step over it, unlike `log verify`.
                let afterLastEntryOfSealed = index + 1 < segments.count && expected == next
                if !records.isEmpty && !afterLastEntryOfSealed { return records }
                let report = CorruptionReport(
                    segment: Segment.fileName(segment.baseOffset, ".log"), bytePosition: position,
                    firstOffset: expected, endOffset: next, reason: error.description)
                markCorrupt(report)
                throw LogError.corrupt(report)
            } catch let error as StorageError {
                throw LogError.storage(error)
            }
            for (i, range) in ranges.enumerated() {
                let entryOffset = header.baseOffset + UInt64(i)
                guard entryOffset >= offset, entryOffset < end else { continue }
                guard records.count < maxEntries, records.isEmpty || bytes < maxBytes else { break }
                records.append(LogRecord(offset: entryOffset, timestampMs: header.firstTimestampMs, payload: Array(payload[range])))
                bytes += range.count
            }
            position += Int64(header.batchLength)
            expected = header.nextOffset
        }
        return records
    }

    /// The stream's start offset when retention has deleted `segment` (the start moved past
    /// its first offset); nil while it is held.
    func retiredStart(of segment: Segment) -> UInt64? {
        let start = state.withLock { $0.startOffset }
        return start > segment.baseOffset ? start : nil
    }

    /// Returns once the end offset is beyond `offset` (an entry at `offset` is readable).
    /// Wakes on append; no polling. Throws `CancellationError` when the task is cancelled and
    /// ``LogError/closed`` when the log closes.
    public func waitForEntries(after offset: UInt64) async throws {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome: Result<Void, any Error>? = state.withLock { s in
                    if s.closed { return .failure(LogError.closed) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if s.endOffset > offset { return .success(()) }
                    s.tailWaiters[id] = (offset, continuation)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.tailWaiters.removeValue(forKey: id) }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    // MARK: Corruption marker

    func markCorrupt(_ report: CorruptionReport) {
        logger.error("corruption found; the stream is refused until repaired", metadata: ["where": "\(report)"])
        try? StreamLog.writeCorruptMarker(report, directory: directory, storage: storage)
    }

    static func writeCorruptMarker(_ report: CorruptionReport, directory: String, storage: any LogStorage) throws {
        let text = "\(report.segment)\n\(report.bytePosition)\n\(report.firstOffset)\n\(report.endOffset)\n\(report.reason)\n"
        let path = directory + "/" + corruptMarkerName
        let file = try storage.openFile(path, create: true)
        try file.truncate(to: 0)
        try file.write(Array(text.utf8), at: 0)
        try file.sync()
        try storage.syncDirectory(directory)
    }

    static func readCorruptMarker(directory: String, storage: any LogStorage) throws -> CorruptionReport? {
        let path = directory + "/" + corruptMarkerName
        guard storage.fileExists(path) else { return nil }
        let bytes = try storage.openFile(path, create: false).readAll()
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 5 else {
            return CorruptionReport(segment: "?", bytePosition: 0, firstOffset: 0, endOffset: 0, reason: "stream marked corrupt")
        }
        return CorruptionReport(
            segment: String(lines[0]), bytePosition: Int64(lines[1]) ?? 0, firstOffset: UInt64(lines[2]) ?? 0,
            endOffset: UInt64(lines[3]) ?? 0, reason: String(lines[4]))
    }
}

/// Receives facts about the log's work, for metrics. Called on the flusher's thread: keep it
/// short and non-blocking.
public protocol LogObserver: Sendable {
    /// One group commit: `entryCount` entries in `byteCount` bytes written, then flushed in
    /// `syncNanoseconds` (0 when the policy did not flush).
    func didFlush(stream: String, entryCount: Int, byteCount: Int, syncNanoseconds: UInt64)
}

/// Cheap facts about a stream.
public struct StreamInfo: Sendable, Hashable, Codable {
    public var name: String
    public var startOffset: UInt64
    public var endOffset: UInt64
    public var segmentCount: Int
    /// Bytes of the segments' batches on disk (headers included).
    public var storedBytes: Int64
    /// Bytes of the entries themselves, uncompressed.
    public var rawBytes: Int64

    public var compressionRatio: Double { storedBytes > 0 ? Double(rawBytes) / Double(storedBytes) : 0 }

    public init(name: String, startOffset: UInt64, endOffset: UInt64, segmentCount: Int, storedBytes: Int64, rawBytes: Int64) {
        self.name = name
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.segmentCount = segmentCount
        self.storedBytes = storedBytes
        self.rawBytes = rawBytes
    }
}

/// Runs `body`, turning storage errors into ``LogError/storage(_:)``.
func wrapStorage<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as StorageError {
        throw LogError.storage(error)
    }
}

/// Milliseconds since the Unix epoch (wall clock; used for batch timestamps and retention).
public func wallClockMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// How long before `nowMs` a timestamp read from disk lies, saturating: a batch header, `.keys`
/// file or control record may hold any 64-bit value (damage that kept its checksum, a crafted
/// file), and `nowMs - timestampMs` would trap for one far in the past. Found by the `log` fuzz
/// target (a far-past record timestamp trapped while the idempotency keys were loaded).
func ageMs(of timestampMs: Int64, nowMs: Int64) -> Int64 {
    let (age, overflow) = nowMs.subtractingReportingOverflow(timestampMs)
    guard overflow else { return age }
    return timestampMs < 0 ? .max : .min
}

extension StreamLog {
    /// The position of the first valid batch (magic, lengths and CRC all good) that starts
    /// after `position`, or nil. A valid batch after a bad one means the damage is inside
    /// acknowledged data rather than a torn tail.
    static func validBatchPosition(in file: any LogFile, after position: Int64, size: Int64) throws -> Int64? {
        var bytes: [UInt8] = []
        try file.read(at: position, count: Int(size - position), into: &bytes)
        guard bytes.count > RecordBatchHeader.size else { return nil }
        return bytes.withUnsafeBytes { raw -> Int64? in
            var at = 1
            while at + RecordBatchHeader.size <= raw.count {
                if raw[at] == 0x4F, raw[at + 1] == 0x53, raw[at + 2] == 0x42, raw[at + 3] == 0x31 {
                    let rest = UnsafeRawBufferPointer(rebasing: raw[at...])
                    if let header = try? RecordBatchCodec.decodeHeader(rest),
                       Int(header.batchLength) <= rest.count,
                       (try? RecordBatchCodec.verifyChecksum(rest, header: header)) != nil {
                        return position + Int64(at)
                    }
                }
                at += 1
            }
            return nil
        }
    }
}
