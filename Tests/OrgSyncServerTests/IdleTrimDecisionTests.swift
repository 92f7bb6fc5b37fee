@testable import OrgSyncServer
import Testing

/// When the broker gives freed memory back after links worked: once per quiet spell.
@Suite struct IdleTrimDecisionTests {
    /// What the decision says for each observed applied total, in order.
    func decisions(_ totals: [UInt64], quietTicks: Int = 2) -> [Bool] {
        var decision = IdleTrimDecision(quietTicksBeforeTrim: quietTicks)
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
}
