import OrgSyncLog
import OrgSyncPluginAPI

/// Where a link reads its entries: one stream of the log, seen from a cursor.
///
/// The broker implements it over the segment log; tests use an in-memory stream. Several links
/// may share one source: every method must be safe to call concurrently.
public protocol LinkEntrySource: Sendable {
    /// The stream's name, passed to adapters in every ``EntryBatch``.
    var streamName: String { get }
    /// The stream's id and epochs: batches carry the current ones, and a target's stored
    /// position is checked against them (``LinkStartPosition``).
    func lineage() async -> StreamLineage
    /// Up to `maxCount` entries starting at `offset`, in order and dense; empty if none yet.
    /// Throws only for storage failures (the link then stops: it must not skip anything).
    func read(from offset: Offset, maxCount: Int) async throws -> [Entry]
    /// The offset the next appended entry will get (as far as the source knows).
    func endOffset() async -> Offset
    /// The end as the stream says now, never an underestimate: throws ``LinkStoreUnavailable``
    /// when a stream kept elsewhere cannot say. What the link checks its stored cursor against.
    func checkedEndOffset() async throws -> Offset
    /// Returns once `endOffset() > offset`, or throws `CancellationError` when cancelled.
    /// It waits on appends (no polling loop).
    func waitForEntries(after offset: Offset) async throws
}

extension LinkEntrySource {
    /// A source that always knows its end (the segment log): ``endOffset()``.
    public func checkedEndOffset() async throws -> Offset { await endOffset() }
}

/// A stream or cursor store kept elsewhere (a cluster's NATS) that cannot answer now: a link
/// starting waits and asks again rather than stop, or take "unknown" for an answer.
public struct LinkStoreUnavailable: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "the stream's store cannot answer now: \(reason)" }
}

/// How long a supervisor waits before it asks a store that could not answer
/// (``LinkStoreUnavailable``) again: from ``firstMs``, doubling to ``maxMs`` while it keeps
/// failing, from the start again once it answered.
struct StoreRetryBackoff: Sendable {
    static let firstMs: UInt64 = 100
    static let maxMs: UInt64 = 5_000
    /// The next wait, ms; nil while the store answers.
    private(set) var nextMs: UInt64?

    /// The store failed again: the wait before asking it again, ms.
    mutating func failed() -> UInt64 {
        let delayMs = nextMs ?? Self.firstMs
        nextMs = min(delayMs * 2, Self.maxMs)
        return delayMs
    }

    /// The store answered; whether it had failed before (the error shown for it can go).
    mutating func answered() -> Bool {
        defer { nextMs = nil }
        return nextMs != nil
    }
}

/// Where a link keeps its cursor: the next offset to apply. The broker implements it over the
/// log's crash-safe cursor files.
public protocol LinkCursorStore: Sendable {
    /// The stored cursor of `link`, or nil if it has none yet (the link then starts at 0).
    func load(link: String) async throws -> Offset?
    /// Stores `offset` durably before returning. The link calls it only with increasing offsets,
    /// after the adapter has applied every entry below `offset`. An implementation that blocks
    /// (a write and an fsync) does so off the cooperative pool (``BlockingFileQueue``).
    func store(link: String, offset: Offset) async throws
}

/// A small, fast, seedable generator (SplitMix64), so that a supervisor's jitter — and a whole
/// simulation — replays exactly from its seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { self.state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in 0..<1.
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) / Double(UInt64(1) << 53)
    }
}
