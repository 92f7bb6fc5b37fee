@testable import OrgSyncServer
import Testing

/// When the broker gives freed memory back after links worked: once per quiet spell.
@Suite struct IdleTrimDecisionTests {
    @Test func nothingAtStartAndNothingWhileLinksWork() {
        var decision = IdleTrimDecision(quietTicksBeforeTrim: 2)
        #expect(!decision.observe(appliedTotal: 0))
        #expect(!decision.observe(appliedTotal: 0))
        #expect(!decision.observe(appliedTotal: 0), "an idle broker that never worked has nothing to give back")
        for total in stride(from: UInt64(500), through: 5_000, by: 500) {
            #expect(!decision.observe(appliedTotal: total), "not while the count moves")
        }
    }

    @Test func onceAfterTheCountStoodStillThenAgainAfterMoreWork() {
        var decision = IdleTrimDecision(quietTicksBeforeTrim: 2)
        _ = decision.observe(appliedTotal: 0)
        #expect(!decision.observe(appliedTotal: 1_000))
        #expect(!decision.observe(appliedTotal: 1_000), "one quiet look is not enough")
        #expect(decision.observe(appliedTotal: 1_000), "the second quiet look gives memory back")
        #expect(!decision.observe(appliedTotal: 1_000), "once per quiet spell")
        #expect(!decision.observe(appliedTotal: 1_000))
        #expect(!decision.observe(appliedTotal: 1_200))
        #expect(!decision.observe(appliedTotal: 1_200))
        #expect(decision.observe(appliedTotal: 1_200), "more work, another quiet spell, another trim")
    }
}
