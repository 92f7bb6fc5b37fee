import OrgSyncCore

/// A ``LinkClock`` whose time moves only when told to.
///
/// Manual mode (the default): sleepers wake when the test calls ``advance(toMs:)`` past their
/// deadline; ``advanceToNextDeadline()`` steps to the earliest sleeper, so a test can walk a
/// link through its timers deterministically. Auto-advance mode (for single-task simulations):
/// `sleep` itself moves time to the deadline, so simulated hours pass in microseconds.
public final class ManualClock: LinkClock {
    private let time: Observed<UInt64>
    /// Deadlines of the current sleepers, by sleeper id.
    private let deadlines = Observed<[Int: UInt64]>([:])
    private let nextSleeperID = Observed(0)
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
        let id = nextSleeperID.update { id in
            defer { id += 1 }
            return id
        }
        // Registered before time is checked, so an advance in between cannot be missed.
        deadlines.update { $0[id] = deadlineMs }
        defer { deadlines.update { $0[id] = nil } }
        _ = try await time.wait { $0 >= deadlineMs }
    }

    /// Moves time forward to `ms` (never backwards) and wakes the sleepers due by then.
    public func advance(toMs ms: UInt64) {
        deadlines.update { $0 = $0.filter { $0.value > ms } }
        time.update { $0 = max($0, ms) }
    }

    public func advance(byMs ms: UInt64) { advance(toMs: nowMs() + ms) }

    public var sleeperCount: Int { deadlines.value.count }

    /// Waits (bounded by the caller) until at least `count` tasks sleep on this clock until a
    /// time still to come (a sleeper already due is about to wake on its own).
    public func waitForSleepers(count: Int = 1) async throws {
        let now = nowMs()
        _ = try await deadlines.wait { $0.values.count { $0 > now } >= count }
    }

    /// Waits (bounded by the caller) until time reaches `ms`: in auto-advance mode, a bound in
    /// virtual time, which holds whatever the machine's load.
    public func waitForTime(atLeastMs ms: UInt64) async throws {
        _ = try await time.wait { $0 >= ms }
    }

    /// Waits (bounded by the caller) until nothing sleeps on this clock.
    public func waitUntilNoSleepers() async throws {
        _ = try await deadlines.wait { $0.isEmpty }
    }

    /// Waits for a sleeper with a deadline to come, then moves time to the earliest such
    /// deadline. Returns the new time.
    @discardableResult
    public func advanceToNextDeadline() async throws -> UInt64 {
        let now = nowMs()
        let pending = try await deadlines.wait { $0.values.contains { $0 > now } }
        advance(toMs: pending.values.filter { $0 > now }.min() ?? now)
        return nowMs()
    }
}
