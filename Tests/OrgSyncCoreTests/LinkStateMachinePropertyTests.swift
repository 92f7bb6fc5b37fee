import OrgSyncCore
import Testing

/// Seeded random event sequences against the machine's invariants.
@Suite struct LinkStateMachinePropertyTests {
    static func configuration(_ random: inout SplitMix64) -> LinkSupervisorConfiguration {
        var c = LinkSupervisorConfiguration()
        c.probeThreshold = Int(1 + random.next() % 5)
        c.verifyIntervalMs = 1 + random.next() % 2_000
        c.verifyWindowMs = c.verifyIntervalMs * UInt64(c.probeThreshold - 1) + random.next() % 3_000
        c.backoffBaseMs = 1 + random.next() % 1_000
        c.backoffCapMs = c.backoffBaseMs + random.next() % 20_000
        c.jitterRatio = random.nextUnit() * 0.9
        c.flapLimit = Int(random.next() % 4)
        c.flapWindowMs = 1 + random.next() % 100_000
        c.holdDownMs = 1 + random.next() % 50_000
        return c
    }

    /// What the test knows independently of the machine.
    struct Model {
        var consuming: Bool
        /// Answered probes since the last failure, pause or operator resume, with their times.
        var answerTimesMs: [UInt64] = []
        var sentProbes: [UInt64] = []
        var cursor = 0
    }

    @Test(arguments: 0..<400)
    func invariantsHoldForRandomSequences(seed: Int) {
        var random = SplitMix64(seed: UInt64(seed) &* 0x9E37_79B9)
        let configuration = Self.configuration(&random)
        var machine = LinkStateMachine(configuration: configuration, nowMs: 0)
        var model = Model(consuming: machine.initialActions().contains(.startConsuming))
        var now: UInt64 = 0
        for step in 0..<250 {
            now += random.next() % 3_000
            let event = Self.randomEvent(&random, machine: machine, model: model, now: &now)
            let before = machine.state
            let actions = machine.handle(event, nowMs: now, jitterUnit: random.nextUnit())
            let context = "seed \(seed) step \(step): \(before) --\(event)--> \(machine.state)"
            Self.track(actions, event: event, before: before, machine: machine, model: &model, now: now, context: context)
            if Self.checkInvariants(machine, model: model, actions: actions, before: before, event: event, context: context) == false {
                return
            }
        }
    }

    static func randomEvent(_ random: inout SplitMix64, machine: LinkStateMachine, model: Model, now: inout UInt64) -> LinkEvent {
        let inFlight = machine.probeInFlight ?? model.sentProbes.last ?? 1
        switch random.next() % 100 {
        case 0..<25:
            if let due = machine.timerDueMs, random.next() % 4 != 0 { now = max(now, due) }
            return .timerFired
        case 25..<50: return .probeAnswered(probeID: random.next() % 10 == 0 ? inFlight &+ 7 : inFlight)
        case 50..<62: return .probeFailed(probeID: inFlight, reason: "refused")
        case 62..<75: return .applyFailed(reason: "reset")
        case 75..<85: return .applySucceeded
        case 85..<90: return .operatorSuspend(reason: "op")
        case 90..<97: return .operatorResume(force: false)
        default: return .operatorResume(force: true)
        }
    }

    static func track(
        _ actions: [LinkAction], event: LinkEvent, before: LinkState, machine: LinkStateMachine, model: inout Model,
        now: UInt64, context: String
    ) {
        switch event {
        case .probeAnswered(let id) where model.sentProbes.last == id && (before == .suspended || before == .verifying):
            model.answerTimesMs.append(now)
        case .probeFailed(let id, _) where model.sentProbes.last == id && (before == .suspended || before == .verifying):
            model.answerTimesMs = []
        case .applyFailed where before == .active:
            model.answerTimesMs = []
        case .operatorSuspend, .operatorResume(force: false):
            model.answerTimesMs = []
        default:
            break
        }
        // The harness "applies" an entry only while the machine let it consume.
        if case .applySucceeded = event, model.consuming { model.cursor += 1 }
        for action in actions {
            switch action {
            case .startConsuming: model.consuming = true
            case .stopConsuming: model.consuming = false
            case .sendProbe(let id): model.sentProbes.append(id)
            default: break
            }
        }
    }

    static func checkInvariants(
        _ machine: LinkStateMachine, model: Model, actions: [LinkAction], before: LinkState, event: LinkEvent, context: String
    ) -> Bool {
        var ok = true
        func check(_ condition: Bool, _ message: String) {
            if !condition, ok {
                Issue.record("\(context): \(message)")
                ok = false
            }
        }
        check(model.consuming == (machine.state == .active), "consuming must match active (the cursor only moves while active)")
        if machine.state == .paused || before == .paused && machine.state == .paused {
            check(!actions.contains { if case .sendProbe = $0 { true } else { false } }, "paused must never probe")
            check(machine.timerDueMs == nil && machine.probeInFlight == nil, "paused has no timer nor probe")
        }
        if machine.timerDueMs != nil {
            check(machine.state == .suspended || machine.state == .verifying, "a timer only while suspended/verifying")
            check(machine.probeInFlight == nil, "no timer while a probe is in flight")
        }
        if before != .active, machine.state == .active, event != .operatorResume(force: true) {
            let k = machine.configuration.probeThreshold
            check(model.answerTimesMs.count >= k, "active without \(k) consecutive answers (had \(model.answerTimesMs.count))")
            if model.answerTimesMs.count >= k {
                let span = model.answerTimesMs[model.answerTimesMs.count - 1] - model.answerTimesMs[model.answerTimesMs.count - k]
                check(span <= machine.configuration.verifyWindowMs, "the K answers span \(span) ms, over the window")
            }
        }
        return ok
    }
}
