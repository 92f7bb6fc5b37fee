import OrgSyncAPI
import Testing

/// The decision `orgsync links resume --wait` takes on each status it reads.
@Suite struct ResumeWaitTests {
    static func status(_ state: String, successes: Int = 0, heldDown: Bool = false, running: Bool = true,
                       lastError: String? = nil) -> LinkStatusBody {
        LinkStatusBody(
            name: "demo", stream: "events", state: state, heldDown: heldDown, cursor: 7, endOffset: 9, lag: 2, lastError: lastError,
            probeProgress: "\(successes)/3", probeSuccesses: successes, probeThreshold: 3, timeInStateMs: 0, suspensions: 0, flaps: 0,
            holdDowns: 0, rejectedEntries: 0, appliedEntries: 0, deadLettersFailed: 0, running: running, streamId: "id", epoch: 1)
    }

    @Test func activeIsDone() {
        #expect(ResumeWait.decide(Self.status("active"), waitedMs: 0, timeoutMs: 1_000) == .done("demo: active (cursor 7, lag 2)"))
    }

    @Test func verifyingGoesOnWithItsProgressUntilTheTimeout() {
        #expect(ResumeWait.decide(Self.status("verifying", successes: 2), waitedMs: 999, timeoutMs: 1_000) == .waiting("demo: verifying 2/3"))
        guard case .failed(let reason) = ResumeWait.decide(Self.status("verifying", successes: 2), waitedMs: 1_000, timeoutMs: 1_000) else {
            Issue.record("the timeout passed: the wait fails")
            return
        }
        #expect(reason == "demo: not active after 1 s (still verifying 2/3)")
    }

    @Test(arguments: [
        ("suspended", true, "demo: went back to suspended (held down): connection: refused"),
        ("paused", false, "demo: paused (by an operator, or stopped on a rejected entry): connection: refused"),
        ("diverged", false, "demo: diverged: connection: refused; reset it (links reset) or adopt the target's position (links adopt)"),
    ])
    func goingBackFailsWithTheReason(state: String, heldDown: Bool, reason: String) {
        let decision = ResumeWait.decide(Self.status(state, heldDown: heldDown, lastError: "connection: refused"), waitedMs: 0, timeoutMs: 60_000)
        #expect(decision == .failed(reason))
    }

    @Test func aStoppedLinkFailsWhateverItsState() {
        #expect(ResumeWait.decide(Self.status("active", running: false, lastError: "cursor beyond end"), waitedMs: 0, timeoutMs: 1)
                == .failed("demo: the link stopped: cursor beyond end"))
    }

    @Test func timeoutsParseWithTheirUnitAndWithinRange() {
        #expect(ResumeWait.parseTimeoutMs("60") == 60_000, "a bare number is seconds")
        #expect(ResumeWait.parseTimeoutMs("90s") == 90_000)
        #expect(ResumeWait.parseTimeoutMs("2m") == 120_000)
        #expect(ResumeWait.parseTimeoutMs("1500ms") == 1_500)
        #expect(ResumeWait.parseTimeoutMs("1440m") == ResumeWait.timeoutMsMax)
        for bad in ["", "0", "0s", "-5", "+5", "5h", "s", "ms", "1.5s", " 5", "1441m", "99999999999999999999", "18446744073709551615s"] {
            #expect(ResumeWait.parseTimeoutMs(bad) == nil, "\(bad)")
        }
        #expect(ResumeWait.describe(ms: 60_000) == "1 min")
        #expect(ResumeWait.describe(ms: 90_000) == "1 min 30 s")
        #expect(ResumeWait.describe(ms: 1_500) == "1500 ms")
    }
}
