import OrgSyncCore

/// A ``LinkClock`` whose time moves only when told to.
///
/// Manual mode (the default): sleepers wake when the test calls ``advance(toMs:)`` past their
/// deadline; ``advanceToNextDeadline()`` steps to the earliest sleeper, so a test can walk a
/// link through its timers deterministically. Auto-advance mode (for single-task simulations):
/// `sleep` itself moves time to the deadline, so simulated hours pass in microseconds.
public final class ManualClock: LinkClock {
    private let time: Observed<UInt64>
    /// Deadlines of the current sleepers (a multiset).
    private let deadlines = Observed<[UInt64]>([])
    public let autoAdvance: Bool

    public init(startMs: UInt64 = 0, autoAdvance: Bool = false) {
        self.time = Observed(startMs)
        self.autoAdvance = autoAdvance
    }

    public func nowMs() -> UInt64 { time.value }

    public func sleep(untilMs deadlineMs: UInt64) async throws {
        try Task.checkCancellation()
        if autoAdvance {
            time.update { $0 = max($0, deadlineMs) }
            return
        }
        if time.value >= deadlineMs { return }
        deadlines.update { $0.append(deadlineMs) }
        do {
            _ = try await time.wait { $0 >= deadlineMs }
        } catch {
            removeDeadline(deadlineMs)
            throw error
        }
    }

    /// Moves time forward to `ms` (never backwards) and wakes the sleepers due by then.
    public func advance(toMs ms: UInt64) {
        deadlines.update { $0.removeAll { $0 <= ms } }
        time.update { $0 = max($0, ms) }
    }

    public func advance(byMs ms: UInt64) { advance(toMs: nowMs() + ms) }

    public var sleeperCount: Int { deadlines.value.count }

    /// Waits (bounded by the caller) until at least `count` tasks sleep on this clock.
    public func waitForSleepers(count: Int = 1) async throws {
        _ = try await deadlines.wait { $0.count >= count }
    }

    /// Waits for a sleeper, then moves time to the earliest deadline. Returns the new time.
    @discardableResult
    public func advanceToNextDeadline() async throws -> UInt64 {
        let pending = try await deadlines.wait { !$0.isEmpty }
        let next = pending.min() ?? nowMs()
        advance(toMs: next)
        return nowMs()
    }

    private func removeDeadline(_ deadlineMs: UInt64) {
        deadlines.update { list in
            if let index = list.firstIndex(of: deadlineMs) { list.remove(at: index) }
        }
    }
}
