/// The timetable of an open-loop producer: entry `i` is due at `startNs + i / entriesPerSecond`,
/// whatever happened to the appends before it. A slow append does not push the later entries
/// back (that would hide the slowness: coordinated omission); the entries that fell due
/// meanwhile go out together in the next append, and each entry's latency is counted from its
/// due time.
///
/// Pure: the producer asks ``nextStep(appendedCount:lastAppendStartNs:nowNs:)`` what to do and
/// does it. Invariants: `dueNs` never decreases with the index; `dueCount(atNs:)` is the number
/// of entries with `dueNs(i) <= nowNs`, at most ``entryCount``.
struct PacingSchedule: Sendable, Equatable {
    /// Most entries one paced run may schedule (memory: the workload and every entry's latency).
    static let entryCountMax = 50_000_000

    let startNs: UInt64
    let entriesPerSecond: Double
    /// Entries the run appends: rate × duration, rounded down.
    let entryCount: Int
    /// Most entries in one append call.
    let appendBatchMax: Int
    /// Shortest time between the starts of two appends: what falls due in between goes in one
    /// append, as a client batching by time would send it (an fsync per entry would otherwise
    /// make the producer, not the link, the bottleneck).
    let appendIntervalMinNs: UInt64

    /// The next thing the producer does.
    enum Step: Equatable {
        /// Append the entries with these indexes (all due, in order, at most `appendBatchMax`).
        case append(Range<Int>)
        /// Nothing to append before this time.
        case wait(untilNs: UInt64)
        /// Every entry has been appended.
        case finished
    }

    /// Nil when the rate or duration is not a positive finite number, the batch is below 1, or
    /// the run would exceed ``entryCountMax`` entries.
    init?(startNs: UInt64, entriesPerSecond: Double, durationSeconds: Double, appendBatchMax: Int, appendIntervalMinNs: UInt64) {
        guard entriesPerSecond.isFinite, entriesPerSecond > 0, durationSeconds.isFinite, durationSeconds > 0, appendBatchMax >= 1
        else { return nil }
        let count = (entriesPerSecond * durationSeconds).rounded(.down)
        guard count >= 1, count <= Double(Self.entryCountMax) else { return nil }
        self.startNs = startNs
        self.entriesPerSecond = entriesPerSecond
        self.entryCount = Int(count)
        self.appendBatchMax = appendBatchMax
        self.appendIntervalMinNs = appendIntervalMinNs
    }

    /// When entry `index` (0-based) is due, monotonic ns. Indexes past the end get the time the
    /// next entry would have had.
    func dueNs(_ index: Int) -> UInt64 {
        let offsetNs = (Double(max(0, index)) * 1e9 / entriesPerSecond).rounded(.down)
        // entryCountMax / smallest positive rate bounds this in theory only; clamp anyway.
        guard offsetNs < Double(UInt64.max - startNs) else { return UInt64.max }
        return startNs + UInt64(offsetNs)
    }

    /// How many entries are due at `nowNs` (those with `dueNs(i) <= nowNs`), at most ``entryCount``.
    func dueCount(atNs nowNs: UInt64) -> Int {
        guard nowNs >= startNs else { return 0 }
        let estimate = (Double(nowNs - startNs) * entriesPerSecond / 1e9).rounded(.down) + 1
        var count = estimate >= Double(entryCount) ? entryCount : Int(max(0, estimate))
        // The estimate can be one off either way where floating point rounds dueNs down.
        while count > 0, dueNs(count - 1) > nowNs { count -= 1 }
        while count < entryCount, dueNs(count) <= nowNs { count += 1 }
        return count
    }

    /// What to do at `nowNs` with `appendedCount` entries appended so far, the last append
    /// having started at `lastAppendStartNs` (nil before the first).
    func nextStep(appendedCount: Int, lastAppendStartNs: UInt64?, nowNs: UInt64) -> Step {
        guard appendedCount < entryCount else { return .finished }
        let nextDueNs = dueNs(appendedCount)
        var earliestNs = nextDueNs
        if let lastAppendStartNs {
            let (gapEndNs, overflow) = lastAppendStartNs.addingReportingOverflow(appendIntervalMinNs)
            earliestNs = max(earliestNs, overflow ? UInt64.max : gapEndNs)
        }
        guard nowNs >= earliestNs else { return .wait(untilNs: earliestNs) }
        let due = dueCount(atNs: nowNs)
        return .append(appendedCount..<min(due, appendedCount + appendBatchMax))
    }
}
