import OrgSyncCore

/// Retention of a cluster stream (`retention_bytes_max`, `retention_age_ms_max`,
/// `retention_drops_unconsumed`, as for the segment log). JetStream keeps whole messages, so
/// retention removes the oldest ones — `STREAM.PURGE` to a sequence — where the segment log
/// deletes whole segments. Never the last message (it carries the stream's end offset, as the
/// segment log keeps its active segment) and, unless `dropsUnconsumed`, none that holds an
/// entry a cursor has not passed. Pure: the decision, from the stream's state and what was read
/// of it (``JetStreamStreamStore/applyRetention(nowMs:)`` does the reading and the purge).
public struct ClusterRetention: Sendable, Hashable {
    public var bytesMax: Int64?
    public var ageMsMax: Int64?
    public var dropsUnconsumed: Bool

    public init(bytesMax: Int64? = nil, ageMsMax: Int64? = nil, dropsUnconsumed: Bool = false) {
        self.bytesMax = bytesMax
        self.ageMsMax = ageMsMax
        self.dropsUnconsumed = dropsUnconsumed
    }

    /// Whether there is a limit at all (without one, nothing is read and nothing removed).
    public var isSet: Bool { bytesMax != nil || ageMsMax != nil }

    /// A stream's messages as JetStream reports them.
    struct State: Sendable, Hashable {
        var firstSequence: UInt64
        var lastSequence: UInt64
        var messages: UInt64
        var bytes: UInt64
    }

    /// The first sequence to keep (the stream's first: nothing goes).
    ///
    /// - `bytesMax`: the oldest messages whose bytes — at the stream's mean message size, as
    ///   JetStream counts bytes per stream, not per message — bring it under the limit.
    /// - `firstYoungEnough`: the first message appended within `ageMsMax` (past the last when
    ///   none is); nil without an age limit.
    /// - `firstUnconsumed`: the message holding the lowest cursor; nil when there is no cursor
    ///   or every cursor is at the end.
    func firstKept(_ state: State, firstYoungEnough: UInt64?, firstUnconsumed: UInt64?) -> UInt64 {
        guard state.messages > 1, state.firstSequence < state.lastSequence else { return state.firstSequence }
        var cut = state.firstSequence
        if let bytesMax, state.bytes > UInt64(max(0, bytesMax)) {
            let mean = max(1, state.bytes / state.messages)
            let excess = state.bytes - UInt64(max(0, bytesMax))
            let over = excess / mean + (excess % mean == 0 ? 0 : 1)
            cut = max(cut, state.firstSequence.saturatingAdd(over))
        }
        if let firstYoungEnough { cut = max(cut, firstYoungEnough) }
        cut = min(cut, state.lastSequence)
        if !dropsUnconsumed, let firstUnconsumed { cut = min(cut, firstUnconsumed) }
        return max(cut, state.firstSequence)
    }

    /// The append time before which a message is too old at `nowMs` (no earlier than 0 ms).
    func ageCutoffMs(nowMs: Int64) -> Int64? {
        guard let ageMsMax else { return nil }
        let (cutoff, overflow) = nowMs.subtractingReportingOverflow(max(0, ageMsMax))
        return overflow ? Int64.min : cutoff
    }
}
