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
        /// The probe the model knows to be unanswered: an answer with any other id (a duplicate,
        /// or one abandoned by a pause or resume) is stale and must not count.
        var pendingProbe: UInt64?
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
        case 62..<70: return .applyFailed(reason: "reset")
        case 70..<75: return .applyRetryable(reason: "deadlock")
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
        case .probeAnswered(let id) where model.pendingProbe == id && (before == .suspended || before == .verifying):
            model.answerTimesMs.append(now)
            model.pendingProbe = nil
        case .probeFailed(let id, _) where model.pendingProbe == id && (before == .suspended || before == .verifying):
            model.answerTimesMs = []
            model.pendingProbe = nil
        case .applyFailed where before == .active:
            model.answerTimesMs = []
        case .applyRetryable where before == .active && machine.state == .suspended:
            model.answerTimesMs = []  // gave up: a suspension like any other
        case .operatorSuspend:
            model.answerTimesMs = []
        case .operatorResume(force: false) where before == .paused || before == .suspended:
            // A resume restarts verification from paused or suspended; while verifying it is a
            // no-op and the series goes on (seen with a clock pinned at UInt64.max, where every
            // answer falls in one window).
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
            case .sendProbe(let id):
                model.sentProbes.append(id)
                model.pendingProbe = id
            default: break
            }
        }
        // Active, paused and diverged abandon the probe in flight (its answer is stale).
        if machine.state != .suspended, machine.state != .verifying { model.pendingProbe = nil }
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
        if machine.applyRetryDueMs != nil {
            check(machine.state == .active, "a retry is pending only while active")
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

/// The machine with configurations at the edges of (and past) what validation allows: durations
/// near `UInt64.max`, zero where a field allows it, and a clock near the end of its range. Before
/// the time arithmetic saturated, `now + holdDownMs` trapped at the first failure (SIGILL).
@Suite struct LinkStateMachineExtremeConfigurationTests {
    static let nearMax: [UInt64] = [.max, .max - 1, .max / 2 + 1, UInt64(Int64.max), (UInt64(1) << 63) - 1000]

    static func extremeConfiguration(_ random: inout SplitMix64) -> LinkSupervisorConfiguration {
        func duration() -> UInt64 {
            switch random.next() % 4 {
            case 0: return nearMax[Int(random.next() % UInt64(nearMax.count))]
            case 1: return 1
            case 2: return 1 + random.next() % 5_000
            default: return random.next()
            }
        }
        var c = LinkSupervisorConfiguration()
        c.probeThreshold = Int(1 + random.next() % 4)
        c.verifyIntervalMs = duration()
        c.verifyWindowMs = random.next() % 2 == 0 ? .max : duration()
        c.backoffBaseMs = duration()
        c.backoffCapMs = random.next() % 3 == 0 ? .max : max(c.backoffBaseMs, duration())
        c.jitterRatio = [0, 0.5, 0.999][Int(random.next() % 3)]
        c.flapLimit = Int(random.next() % 3)  // 0 is allowed: the first flap holds down
        c.flapWindowMs = duration()
        c.holdDownMs = duration()
        return c
    }

    @Test(arguments: 0..<300)
    func extremeConfigurationsNeitherTrapNorBreakInvariants(seed: Int) {
        var random = SplitMix64(seed: UInt64(seed) &* 0xD1B5_4A32_D192_ED03 &+ 1)
        let configuration = Self.extremeConfiguration(&random)
        // Half the runs start with the clock near its end, so deadlines overflow on the first failure.
        var now: UInt64 = seed % 2 == 0 ? 0 : UInt64.max - random.next() % 1_000_000
        var machine = LinkStateMachine(configuration: configuration, nowMs: now)
        var model = LinkStateMachinePropertyTests.Model(consuming: machine.initialActions().contains(.startConsuming))
        for step in 0..<200 {
            let (advanced, _) = now.addingReportingOverflow(random.next() % 3_000)
            now = advanced < now ? .max : advanced
            let event = LinkStateMachinePropertyTests.randomEvent(&random, machine: machine, model: model, now: &now)
            let before = machine.state
            let actions = machine.handle(event, nowMs: now, jitterUnit: random.nextUnit())
            let context = "extreme seed \(seed) step \(step): \(before) --\(event)--> \(machine.state)"
            LinkStateMachinePropertyTests.track(actions, event: event, before: before, machine: machine, model: &model, now: now, context: context)
            guard LinkStateMachinePropertyTests.checkInvariants(
                machine, model: model, actions: actions, before: before, event: event, context: context)
            else { return }
            for case .scheduleTimer(let atMs) in actions {
                #expect(atMs >= now, "\(context): a timer in the past (\(atMs) < \(now)) means the deadline wrapped")
            }
            if let until = machine.heldDownUntilMs {
                #expect(until >= machine.stateEnteredAtMs, "\(context): a hold-down that ends before it began wrapped")
            }
        }
    }

    /// The backoff delay stays in 1...cap for every attempt, whatever the base, cap and jitter.
    @Test(arguments: [UInt64.max, UInt64.max - 1, UInt64(Int64.max), UInt64(1) << 53 + 1, UInt64(3)] as [UInt64])
    func backoffDelayStaysWithinTheCap(base: UInt64) {
        for cap in [base, UInt64.max] {
            var c = LinkSupervisorConfiguration()
            c.backoffBaseMs = base
            c.backoffCapMs = cap
            c.jitterRatio = 0.999
            let machine = LinkStateMachine(configuration: c, nowMs: 0)
            for attempt in [0, 1, 40, 63, 64, Int.max] {
                for unit in [0.0, 0.5, 1.0, .nan, .infinity] {
                    let delay = machine.backoffDelayMs(attempt: attempt, jitterUnit: unit)
                    #expect(delay >= 1 && delay <= cap, "base \(base) cap \(cap) attempt \(attempt) unit \(unit): \(delay)")
                }
            }
        }
    }

    /// The first failure of a link held down at once (flap limit 0) with `holdDownMs` = max:
    /// the case that crashed the broker. The hold-down lasts "forever", it does not wrap.
    @Test func holdDownNearTheEndOfTimeSaturates() {
        var c = LinkSupervisorConfiguration()
        c.flapLimit = 0
        c.holdDownMs = .max
        c.probeThreshold = 1
        var machine = LinkStateMachine(configuration: c, nowMs: 1_000)
        _ = machine.handle(.applyFailed(reason: "down"), nowMs: 1_000, jitterUnit: 0.5)
        #expect(machine.state == .suspended)
        var actions = machine.handle(.timerFired, nowMs: machine.timerDueMs ?? 0, jitterUnit: 0.5)
        guard case .sendProbe(let id)? = actions.first else {
            Issue.record("no probe after the first backoff: \(actions)")
            return
        }
        actions = machine.handle(.probeAnswered(probeID: id), nowMs: 2_000, jitterUnit: 0.5)
        #expect(machine.state == .active)
        actions = machine.handle(.applyFailed(reason: "down again"), nowMs: 3_000, jitterUnit: 0.5)
        #expect(machine.heldDownUntilMs == .max)
        #expect(actions.contains(.scheduleTimer(atMs: .max)))
    }
}
