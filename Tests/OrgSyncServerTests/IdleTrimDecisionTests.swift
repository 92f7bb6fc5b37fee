@testable import OrgSyncBroker
@testable import OrgSyncServer
import Testing

/// When the broker gives freed memory back: once per quiet spell after links worked, and every
/// so often while they keep working.
@Suite struct IdleTrimDecisionTests {
    /// What the decision says for each observed applied total, in order.
    func decisions(_ totals: [UInt64], quietTicks: Int = 2, busyTicks: Int = 100) -> [Bool] {
        var decision = IdleTrimDecision(quietTicksBeforeTrim: quietTicks, busyTicksBetweenTrims: busyTicks)
        return totals.map { decision.observe(appliedTotal: $0) }
    }

    @Test func nothingAtStartAndNothingWhileLinksWork() {
        #expect(decisions([0, 0, 0, 0]) == [false, false, false, false], "an idle broker that never worked has nothing to give back")
        #expect(decisions([0, 500, 1_000, 1_500, 2_000]) == [false, false, false, false, false], "not while the count moves")
    }

    @Test func onceAfterTheCountStoodStillThenAgainAfterMoreWork() {
        #expect(decisions([0, 1_000, 1_000, 1_000, 1_000, 1_000, 1_200, 1_200, 1_200])
            == [false, false, false, true, false, false, false, false, true])
        #expect(decisions([0, 10, 10, 10], quietTicks: 1) == [false, false, true, false])
    }

    @Test func everyFewTicksWhileTheCountKeepsMovingAndAQuietTickStartsTheCountAgain() {
        let working: [UInt64] = [0, 1, 2, 3, 4, 5, 6, 7]
        #expect(decisions(working, busyTicks: 3) == [false, false, false, true, false, false, true, false])
        // Two busy ticks, a quiet one (too short to trim for), two busy ticks: no trim yet.
        #expect(decisions([0, 1, 2, 2, 3, 4, 5], quietTicks: 2, busyTicks: 3) == [false, false, false, false, false, false, true])
    }
}
