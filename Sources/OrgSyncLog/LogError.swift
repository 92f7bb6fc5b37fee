/// Errors of the log. Each names what it is about; `description` is for an operator.
public enum LogError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidConfiguration(field: String, problem: String)
    case invalidStreamName(String)
    case entryTooLarge(index: Int, bytes: Int, limit: Int)
    case tooManyEntries(count: Int, limit: Int)
    case emptyAppend
    case storage(StorageError)
    /// The stream is refused until an operator repairs it (`orgsync log repair`).
    case corrupt(CorruptionReport)
    /// A read asked for an offset the stream no longer holds (deleted by retention) or never had.
    case offsetOutOfRange(requested: UInt64, start: UInt64, end: UInt64)
    case closed
    /// A cursor was set beyond the stream's end.
    case cursorBeyondEnd(name: String, offset: UInt64, end: UInt64)
    case invalidCursorName(String)
    /// The stream's `IDENTITY` file is unreadable: its offsets cannot be tied to targets' positions.
    case identityDamaged(path: String, problem: String)
    /// An idempotency key must be 1–255 visible ASCII bytes (0x21–0x7E).
    case invalidIdempotencyKey(String)
    /// The key was used, within the window, for an append with different entries.
    case idempotencyKeyReused(key: String)
    /// The first append with this key is still queued or being written; retry later.
    case idempotencyKeyInFlight(key: String)
    /// A retry of a key whose append retention has removed since (a cluster stream remembers the
    /// key, not the offsets): nothing is appended, and the first answer cannot be given again.
    case idempotencyKeyAppendRemoved(key: String)
    /// The active segment's file was deleted or replaced while the log was open: writes went to
    /// a file no restart will read. The stream refuses appends and is marked for an operator.
    case activeSegmentLost(segment: String, loss: FileLoss)

    public var description: String {
        switch self {
        case .invalidConfiguration(let field, let problem): "configuration \(field) \(problem)"
        case .invalidStreamName(let name): "invalid stream name \"\(name)\" (use letters, digits, '.', '_', '-'; at most 128)"
        case .entryTooLarge(let index, let bytes, let limit): "entry \(index) is \(bytes) bytes, over entryBytesMax \(limit)"
        case .tooManyEntries(let count, let limit): "\(count) entries in one append, over appendEntriesMax \(limit)"
        case .emptyAppend: "an append needs at least one entry"
        case .storage(let error): "storage: \(error)"
        case .corrupt(let report): "stream is corrupt and refused until repaired: \(report)"
        case .offsetOutOfRange(let requested, let start, let end): "offset \(requested) is outside the stream [\(start), \(end))"
        case .closed: "the log is closed"
        case .cursorBeyondEnd(let name, let offset, let end): "cursor \(name) cannot be \(offset): the stream ends at \(end)"
        case .invalidCursorName(let name): "invalid cursor name \"\(name)\""
        case .identityDamaged(let path, let problem):
            "the stream's identity file \(path) is damaged (\(problem)); restore it from a backup, or remove it to give the stream a new identity (every link's target then reports `diverged` until an operator adopts or resets it)"
        case .invalidIdempotencyKey: "an idempotency key must be 1-255 visible ASCII characters"
        case .idempotencyKeyReused(let key): "idempotency key \"\(key)\" was already used for different entries"
        case .idempotencyKeyInFlight(let key): "the append with idempotency key \"\(key)\" is still in progress"
        case .idempotencyKeyAppendRemoved(let key):
            "the append with idempotency key \"\(key)\" was stored, and the stream's retention has removed it since: its offsets are no longer known"
        case .activeSegmentLost(let segment, let loss):
            "the active segment \(segment) \(loss) while the broker had it open; appends are refused (nothing since was acknowledged) and the stream is marked corrupt: entries acknowledged into that file are lost; stop the broker, restore the file if you can, then run `orgsync log repair`"
        }
    }
}

/// Where a log is damaged: the segment, the byte position, and the offsets that cannot be read.
public struct CorruptionReport: Sendable, Hashable, Codable, CustomStringConvertible {
    public var segment: String
    public var bytePosition: Int64
    /// First offset that cannot be trusted.
    public var firstOffset: UInt64
    /// Offset after the last one that cannot be read (the next readable offset or the end).
    public var endOffset: UInt64
    public var reason: String

    public init(segment: String, bytePosition: Int64, firstOffset: UInt64, endOffset: UInt64, reason: String) {
        self.segment = segment
        self.bytePosition = bytePosition
        self.firstOffset = firstOffset
        self.endOffset = endOffset
        self.reason = reason
    }

    public var description: String {
        "offsets \(firstOffset)..<\(endOffset) in \(segment) at byte \(bytePosition): \(reason)"
    }
}
