import OrgSyncCore
import Testing

/// The machine as a table: every state against every event, then the timing rules.
@Suite struct LinkStateMachineTests {
    static var configuration: LinkSupervisorConfiguration {
        var c = LinkSupervisorConfiguration()
        c.probeThreshold = 3
        c.verifyIntervalMs = 1_000
        c.verifyWindowMs = 10_000
        c.backoffBaseMs = 500
        c.backoffCapMs = 30_000
        c.jitterRatio = 0
        c.flapLimit = 2
        c.flapWindowMs = 60_000
        c.holdDownMs = 120_000
        return c
    }

    enum EventKind: String, CaseIterable, Sendable {
        case applyFailed, applyRetryable, applySucceeded, probeAnswered, probeFailed, timerFired, operatorSuspend, resume, forceResume, diverge, resolve
    }

    /// A machine in `state`. For the probe events of suspended/verifying, with a probe in flight.
    static func machine(in state: LinkState, probeInFlight: Bool = false) -> (LinkStateMachine, UInt64) {
        var machine = LinkStateMachine(configuration: configuration, nowMs: 0)
        var now: UInt64 = 0
        func fireTimer() -> UInt64? {
            guard let due = machine.timerDueMs else { return nil }
            now = due
            if case .sendProbe(let id)? = machine.handle(.timerFired, nowMs: now, jitterUnit: 0.5).first { return id }
            return nil
        }
        switch state {
        case .active:
            break
        case .paused:
            _ = machine.handle(.operatorSuspend(reason: "test"), nowMs: now, jitterUnit: 0.5)
        case .diverged:
            _ = machine.handle(.positionDiverged(reason: "test"), nowMs: now, jitterUnit: 0.5)
        case .suspended, .verifying:
            _ = machine.handle(.applyFailed(reason: "down"), nowMs: now, jitterUnit: 0.5)
            if state == .verifying, let id = fireTimer() {
                _ = machine.handle(.probeAnswered(probeID: id), nowMs: now, jitterUnit: 0.5)
            }
            if probeInFlight { _ = fireTimer() }
        }
        return (machine, now)
    }

    static func event(_ kind: EventKind, for machine: LinkStateMachine) -> LinkEvent {
        let probeID = machine.probeInFlight ?? 999  // 999: a stale id where none is in flight
        switch kind {
        case .applyFailed: return .applyFailed(reason: "connection refused")
        case .applyRetryable: return .applyRetryable(reason: "deadlock")
        case .applySucceeded: return .applySucceeded
        case .probeAnswered: return .probeAnswered(probeID: probeID)
        case .probeFailed: return .probeFailed(probeID: probeID, reason: "timeout")
        case .timerFired: return .timerFired
        case .operatorSuspend: return .operatorSuspend(reason: "maintenance")
        case .resume: return .operatorResume(force: false)
        case .forceResume: return .operatorResume(force: true)
        case .diverge: return .positionDiverged(reason: "another stream")
        case .resolve: return .positionResolved(reason: "reset by operator")
        }
    }

    static func shape(_ actions: [LinkAction]) -> [String] {
        actions.map { action in
            switch action {
            case .startConsuming: "start"
            case .stopConsuming: "stop"
            case .closeAdapter: "close"
            case .scheduleTimer: "timer"
            case .cancelTimer: "cancelTimer"
            case .retryApply: "retry"
            case .sendProbe: "probe"
            case .record(let transition): "record:\(transition.event.rawValue)"
            }
        }
    }

    /// Expected next state and action shape, for every (state, event).
    static let table: [String: (LinkState, [String])] = [
        "active/applyFailed": (.suspended, ["stop", "close", "record:suspended", "timer"]),
        "active/applyRetryable": (.active, ["retry"]),
        "suspended/applyRetryable": (.suspended, []),
        "verifying/applyRetryable": (.verifying, []),
        "paused/applyRetryable": (.paused, []),
        "diverged/applyRetryable": (.diverged, []),
        "active/applySucceeded": (.active, []),
        "active/probeAnswered": (.active, []),
        "active/probeFailed": (.active, []),
        "active/timerFired": (.active, []),
        "active/operatorSuspend": (.paused, ["stop", "close", "record:paused"]),
        "active/resume": (.active, []),
        "active/forceResume": (.active, []),
        "suspended/applyFailed": (.suspended, []),
        "suspended/applySucceeded": (.suspended, []),
        "suspended/probeAnswered": (.verifying, ["record:verifying", "timer"]),
        "suspended/probeFailed": (.suspended, ["close", "timer"]),
        "suspended/timerFired": (.suspended, ["probe"]),
        "suspended/operatorSuspend": (.paused, ["cancelTimer", "close", "record:paused"]),
        "suspended/resume": (.verifying, ["record:verifying", "timer"]),
        "suspended/forceResume": (.active, ["cancelTimer", "record:forced_resume", "start"]),
        "verifying/applyFailed": (.verifying, []),
        "verifying/applySucceeded": (.verifying, []),
        "verifying/probeAnswered": (.verifying, ["timer"]),
        "verifying/probeFailed": (.suspended, ["close", "record:verification_failed", "timer"]),
        "verifying/timerFired": (.verifying, ["probe"]),
        "verifying/operatorSuspend": (.paused, ["cancelTimer", "close", "record:paused"]),
        "verifying/resume": (.verifying, []),
        "verifying/forceResume": (.active, ["cancelTimer", "record:forced_resume", "start"]),
        "paused/applyFailed": (.paused, []),
        "paused/applySucceeded": (.paused, []),
        "paused/probeAnswered": (.paused, []),
        "paused/probeFailed": (.paused, []),
        "paused/timerFired": (.paused, []),
        "paused/operatorSuspend": (.paused, []),
        "paused/resume": (.verifying, ["record:verifying", "timer"]),
        "paused/forceResume": (.active, ["record:forced_resume", "start"]),
        "active/diverge": (.diverged, ["stop", "close", "record:diverged"]),
        "active/resolve": (.active, []),
        "suspended/diverge": (.suspended, []),
        "suspended/resolve": (.suspended, []),
        "verifying/diverge": (.verifying, []),
        "verifying/resolve": (.verifying, []),
        "paused/diverge": (.paused, []),
        "paused/resolve": (.paused, ["record:position_reset"]),
        "diverged/applyFailed": (.diverged, []),
        "diverged/applySucceeded": (.diverged, []),
        "diverged/probeAnswered": (.diverged, []),
        "diverged/probeFailed": (.diverged, []),
        "diverged/timerFired": (.diverged, []),
        "diverged/operatorSuspend": (.paused, ["close", "record:paused"]),
        "diverged/resume": (.diverged, []),
        "diverged/forceResume": (.diverged, []),
        "diverged/diverge": (.diverged, []),
        "diverged/resolve": (.active, ["record:position_reset", "start"]),
    ]

    @Test(arguments: LinkState.allCases, EventKind.allCases)
    func everyStateAndEvent(state: LinkState, kind: EventKind) throws {
        let needsProbe = kind == .probeAnswered || kind == .probeFailed
        var (machine, now) = Self.machine(in: state, probeInFlight: needsProbe)
        #expect(machine.state == state)
        if kind == .timerFired { now = machine.timerDueMs ?? now + 1 }
        let actions = machine.handle(Self.event(kind, for: machine), nowMs: now, jitterUnit: 0.5)
        let expected = try #require(Self.table["\(state.rawValue)/\(kind.rawValue)"])
        #expect(machine.state == expected.0)
        #expect(Self.shape(actions) == expected.1)
        // Invariants that hold after every event.
        if machine.state == .paused || machine.state == .active || machine.state == .diverged {
            #expect(machine.timerDueMs == nil)
            #expect(machine.probeInFlight == nil)
        }
        if machine.state != .active { #expect(machine.applyRetryDueMs == nil, "a retry is pending only while active") }
        #expect(actions.contains(.startConsuming) == (state != .active && machine.state == .active))
        #expect(actions.contains(.stopConsuming) == (state == .active && machine.state != .active))
    }

    @Test func resumesAfterThresholdProbesAtTheVerifyInterval() {
        var (machine, now) = Self.machine(in: .suspended)
        var resumedAtMs: UInt64?
        var probeTimes: [UInt64] = []
        for _ in 0..<10 where resumedAtMs == nil {
            guard let due = machine.timerDueMs else { break }
            now = due
            guard case .sendProbe(let id)? = machine.handle(.timerFired, nowMs: now, jitterUnit: 0.5).first else { break }
            probeTimes.append(now)
            let actions = machine.handle(.probeAnswered(probeID: id), nowMs: now, jitterUnit: 0.5)
            if actions.contains(.startConsuming) { resumedAtMs = now }
        }
        #expect(machine.state == .active)
        #expect(probeTimes == [500, 1_500, 2_500])
        #expect(resumedAtMs == 2_500)
    }

    @Test func slowAnswersRestartTheWindow() {
        var configuration = Self.configuration
        configuration.verifyWindowMs = 2_500
        var machine = LinkStateMachine(configuration: configuration, nowMs: 0)
        _ = machine.handle(.applyFailed(reason: "x"), nowMs: 0, jitterUnit: 0.5)
        var now: UInt64 = 500
        var id = probe(&machine, at: now)
        _ = machine.handle(.probeAnswered(probeID: id), nowMs: now, jitterUnit: 0.5)  // k=1 at 500
        now = 1_500
        id = probe(&machine, at: now)
        _ = machine.handle(.probeAnswered(probeID: id), nowMs: now, jitterUnit: 0.5)  // k=2 at 1500
        now = 4_000  // 3500 ms after the first answer: outside the window
        id = probe(&machine, at: now)
        _ = machine.handle(.probeAnswered(probeID: id), nowMs: now, jitterUnit: 0.5)
        #expect(machine.state == .verifying)
        #expect(machine.probeSuccessCount == 1)
    }

    private func probe(_ machine: inout LinkStateMachine, at now: UInt64) -> UInt64 {
        if case .sendProbe(let id)? = machine.handle(.timerFired, nowMs: now, jitterUnit: 0.5).first { return id }
        Issue.record("no probe at \(now), timer due \(String(describing: machine.timerDueMs))")
        return 0
    }

    /// Retryable failures of the batch in flight: applied again after base × 2^(n−1) (capped),
    /// the attempt that makes `retryableAttemptsMax` gives up and suspends with the reason, and a
    /// commit or a state change starts the count again.
    @Test func retryableFailuresBackOffThenGiveUpAndACommitResetsTheCount() {
        var configuration = Self.configuration
        configuration.retryableAttemptsMax = 4
        configuration.retryableBackoffBaseMs = 100
        configuration.backoffCapMs = 300
        var machine = LinkStateMachine(configuration: configuration, nowMs: 1_000)
        #expect(machine.handle(.applyRetryable(reason: "deadlock"), nowMs: 1_000, jitterUnit: 0.5) == [.retryApply(atMs: 1_100)])
        #expect(machine.handle(.applyRetryable(reason: "deadlock"), nowMs: 1_100, jitterUnit: 0.5) == [.retryApply(atMs: 1_300)])
        #expect(machine.handle(.applyRetryable(reason: "deadlock"), nowMs: 1_300, jitterUnit: 0.5) == [.retryApply(atMs: 1_600)], "capped at 300")
        #expect(machine.state == .active)
        #expect(machine.timerDueMs == nil, "a retry is not the state timer")
        let gaveUp = machine.handle(.applyRetryable(reason: "deadlock"), nowMs: 1_600, jitterUnit: 0.5)
        #expect(machine.state == .suspended)
        #expect(Self.shape(gaveUp) == ["stop", "close", "record:suspended", "timer"])
        #expect(machine.lastFailureReason == "gave up after 4 attempts: deadlock")
        #expect(machine.applyRetryDueMs == nil)

        var fresh = LinkStateMachine(configuration: configuration, nowMs: 0)
        for _ in 0..<3 { _ = fresh.handle(.applyRetryable(reason: "x"), nowMs: 0, jitterUnit: 0.5) }
        _ = fresh.handle(.applySucceeded, nowMs: 0, jitterUnit: 0.5)
        #expect(fresh.applyRetryDueMs == nil)
        #expect(fresh.handle(.applyRetryable(reason: "x"), nowMs: 0, jitterUnit: 0.5) == [.retryApply(atMs: 100)], "the count starts again after a commit")
        _ = fresh.handle(.operatorSuspend(reason: "op"), nowMs: 0, jitterUnit: 0.5)
        #expect(fresh.applyRetryDueMs == nil, "a pause drops the pending retry")
        _ = fresh.handle(.operatorResume(force: true), nowMs: 0, jitterUnit: 0.5)
        #expect(fresh.handle(.applyRetryable(reason: "x"), nowMs: 0, jitterUnit: 0.5) == [.retryApply(atMs: 100)], "and the count")

        var once = LinkStateMachine(configuration: { var c = configuration; c.retryableAttemptsMax = 1; return c }(), nowMs: 0)
        _ = once.handle(.applyRetryable(reason: "x"), nowMs: 0, jitterUnit: 0.5)
        #expect(once.state == .suspended, "one attempt allowed: the first retryable failure gives up")
    }

    @Test func backoffDoublesUpToTheCap() {
        var (machine, now) = Self.machine(in: .suspended)
        var delays: [UInt64] = []
        for _ in 0..<10 {
            guard let due = machine.timerDueMs else { break }
            now = due
            let id = probe(&machine, at: now)
            _ = machine.handle(.probeFailed(probeID: id, reason: "refused"), nowMs: now, jitterUnit: 0.5)
            delays.append((machine.timerDueMs ?? now) - now)
        }
        #expect(delays == [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000, 30_000])
        #expect(machine.state == .suspended)
    }

    @Test func jitterStaysWithinItsRatioAndIsDeterministic() {
        var configuration = Self.configuration
        configuration.jitterRatio = 0.2
        let machine = LinkStateMachine(configuration: configuration, nowMs: 0)
        #expect(machine.backoffDelayMs(attempt: 1, jitterUnit: 0) == 800)
        #expect(machine.backoffDelayMs(attempt: 1, jitterUnit: 1) == 1_200)
        #expect(machine.backoffDelayMs(attempt: 1, jitterUnit: 0.5) == 1_000)
        #expect(machine.backoffDelayMs(attempt: 10, jitterUnit: 1) == 30_000)  // cap holds with jitter
        #expect(machine.backoffDelayMs(attempt: 1, jitterUnit: .nan) == 1_000)
        #expect(machine.backoffDelayMs(attempt: 1_000, jitterUnit: 0.5) == 30_000)
    }

    /// Fails the active link, then walks it back to active through K probes; returns the time.
    private func flap(_ machine: inout LinkStateMachine, at start: UInt64) -> UInt64 {
        var now = start
        _ = machine.handle(.applyFailed(reason: "reset"), nowMs: now, jitterUnit: 0.5)
        while machine.state != .active, let due = machine.timerDueMs {
            now = due
            let id = probe(&machine, at: now)
            _ = machine.handle(.probeAnswered(probeID: id), nowMs: now, jitterUnit: 0.5)
        }
        return now
    }

    @Test func flappingMoreThanTheLimitHoldsDown() {
        var machine = LinkStateMachine(configuration: Self.configuration, nowMs: 0)
        var now = flap(&machine, at: 0)  // first failure: not a flap (no resume before it)
        now = flap(&machine, at: now + 10)  // flap 1
        now = flap(&machine, at: now + 10)  // flap 2
        #expect(machine.flapCount == 2)
        #expect(machine.heldDownUntilMs == nil)
        now += 10
        let actions = machine.handle(.applyFailed(reason: "reset"), nowMs: now, jitterUnit: 0.5)  // flap 3 > limit 2
        #expect(machine.flapCount == 3)
        #expect(machine.holdDownCount == 1)
        #expect(machine.heldDownUntilMs == now + 120_000)
        #expect(machine.timerDueMs == now + 120_000)
        #expect(Self.shape(actions).contains("record:held_down"))
        // Nothing happens before the hold-down ends.
        #expect(machine.handle(.timerFired, nowMs: now + 119_999, jitterUnit: 0.5).isEmpty)
        #expect(Self.shape(machine.handle(.timerFired, nowMs: now + 120_000, jitterUnit: 0.5)) == ["probe"])
        #expect(machine.heldDownUntilMs == nil)
    }

    @Test func flapsOutsideTheWindowDoNotHoldDown() {
        var machine = LinkStateMachine(configuration: Self.configuration, nowMs: 0)
        var now = flap(&machine, at: 0)
        for _ in 0..<6 { now = flap(&machine, at: now + 61_000) }
        #expect(machine.flapCount == 6)
        #expect(machine.holdDownCount == 0)
    }

    @Test func staleProbeAnswersAndEarlyTimersAreIgnored() {
        var (machine, now) = Self.machine(in: .suspended)
        let due = machine.timerDueMs ?? 0
        #expect(machine.handle(.timerFired, nowMs: due - 1, jitterUnit: 0.5).isEmpty)
        let id = probe(&machine, at: due)
        now = due
        #expect(machine.handle(.probeAnswered(probeID: id + 1), nowMs: now, jitterUnit: 0.5).isEmpty)
        #expect(machine.handle(.timerFired, nowMs: now + 100_000, jitterUnit: 0.5).isEmpty)  // probe in flight
        _ = machine.handle(.operatorSuspend(reason: "op"), nowMs: now, jitterUnit: 0.5)
        _ = machine.handle(.operatorResume(force: false), nowMs: now, jitterUnit: 0.5)
        // The answer to the probe sent before the pause no longer counts.
        #expect(machine.handle(.probeAnswered(probeID: id), nowMs: now, jitterUnit: 0.5).isEmpty)
        #expect(machine.probeSuccessCount == 0)
    }

    @Test func timeNeverGoesBackwards() {
        var machine = LinkStateMachine(configuration: Self.configuration, nowMs: 10_000)
        _ = machine.handle(.applyFailed(reason: "x"), nowMs: 5_000, jitterUnit: 0.5)
        #expect(machine.stateEnteredAtMs == 10_000)
        #expect(machine.timerDueMs == 10_500)
    }

    @Test func startingPausedDoesNothingUntilResumed() {
        var machine = LinkStateMachine(configuration: Self.configuration, nowMs: 0, startPaused: true)
        #expect(machine.state == .paused)
        #expect(machine.initialActions().isEmpty)
        #expect(LinkStateMachine(configuration: Self.configuration, nowMs: 0).initialActions() == [.startConsuming])
        let actions = machine.handle(.operatorResume(force: false), nowMs: 7, jitterUnit: 0.5)
        #expect(actions.contains(.scheduleTimer(atMs: 7)))
    }
}
