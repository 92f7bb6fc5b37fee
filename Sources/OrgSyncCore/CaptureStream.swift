import OrgSyncLog
import OrgSyncPluginAPI

/// The stream a capture source appends to, as its supervisor uses it: durable appends, reading
/// the tail back (where the source's position is recorded, inside its own entries), and a hint
/// of where to start that reading.
///
/// The broker implements it over the segment log (``StreamLogCaptureStream``); every method
/// must be safe to call concurrently.
public protocol CaptureStream: Sendable {
    var streamName: String { get }
    /// Appends entries (each a validated JSON entry) durably before returning.
    ///
    /// - Throws: ``CaptureFenced`` when the stream fences the source's appends (a cluster
    ///   stream) and another writer appended for the source since the last append or
    ///   ``lastAppend(source:)`` here: nothing was appended; read the position again.
    ///   `LinkStoreUnavailable` when a stream kept elsewhere cannot answer now (the append may
    ///   be stored: read the position again once it answers).
    func append(_ entries: [[UInt8]]) async throws -> AppendResult
    /// The oldest offset still stored, and the offset the next appended entry will get.
    func bounds() async throws -> (start: Offset, end: Offset)
    /// Up to `maxCount` entries from `offset`, in order.
    func read(from offset: Offset, maxCount: Int) async throws -> [Entry]
    /// The offset from which reading the tail finds the source's last append (nil: from the
    /// start). Any older value is also correct, only slower.
    func loadHint(source: String) async throws -> Offset?
    /// Stores that offset durably.
    func storeHint(source: String, offset: Offset) async throws
    /// The entries of the source's last append, when the stream keeps a source's appends apart
    /// (a cluster stream: the last message on the source's subject; nil there when it has none
    /// yet), which also fences the source's next append on it. Nil from a stream that does not
    /// (the segment log: one writer per source, its tail is read from the hint).
    func lastAppend(source: String) async throws -> [Entry]?
}

/// The stream refused a capture source's append because another writer appended for the same
/// source first (a member that still ran it after its lease moved, or the one it moved to):
/// nothing of this append was stored. The source reads its position from the stream again and
/// skips what the other writer appended.
public struct CaptureFenced: Error, Sendable, Hashable, CustomStringConvertible {
    public var stream: String
    public var source: String
    public var problem: String

    public init(stream: String, source: String, problem: String) {
        self.stream = stream
        self.source = source
        self.problem = problem
    }

    public var description: String {
        "another writer appended for source \(source) to stream \(stream) first (\(problem)): nothing of this append was stored"
    }
}

/// A capture source's view of a stream of the segment log. Its hint is a cursor of the stream
/// named `source.<source>`, so — like a link's cursor — it holds retention at the source's
/// last append (link names starting with `source.` are refused for that reason).
public struct StreamLogCaptureStream: CaptureStream {
    public let log: StreamLog
    private let linkSource: StreamLogLinkSource
    private let cursors: StreamLogCursorStore

    public init(log: StreamLog) {
        self.log = log
        self.linkSource = StreamLogLinkSource(log: log)
        self.cursors = StreamLogCursorStore(log: log)
    }

    /// The cursor name that holds a source's hint.
    public static func hintName(source: String) -> String { "source." + source }

    public var streamName: String { log.name }

    public func append(_ entries: [[UInt8]]) async throws -> AppendResult {
        try await log.append(entries)
    }

    public func bounds() async throws -> (start: Offset, end: Offset) {
        (Offset(log.startOffset), Offset(log.endOffset))
    }

    public func read(from offset: Offset, maxCount: Int) async throws -> [Entry] {
        try await linkSource.read(from: offset, maxCount: maxCount)
    }

    public func loadHint(source: String) async throws -> Offset? {
        try await cursors.load(link: Self.hintName(source: source))
    }

    public func storeHint(source: String, offset: Offset) async throws {
        try await cursors.store(link: Self.hintName(source: source), offset: offset)
    }

    /// Nil: one process writes a stream of the segment log, so a source has one writer.
    public func lastAppend(source: String) async throws -> [Entry]? { nil }
}
