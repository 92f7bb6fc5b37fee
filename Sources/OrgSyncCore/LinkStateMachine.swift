/// Where a link stands with its target.
public enum LinkState: String, Sendable, Hashable, Codable, CaseIterable {
    /// Consuming: entries are applied and the cursor moves.
    case active
    /// The target failed; the cursor is frozen and the target is probed with backoff.
    case suspended
    /// The target answered a probe; it must answer ``LinkSupervisorConfiguration/probeThreshold``
    /// times in a row, within the window, before the link resumes.
    case verifying
    /// Paused by an operator (or stopped on a rejected entry): cursor frozen, no probing.
    case paused
    /// The target holds a position from another stream, from a later or cut epoch of this one,
    /// or past the stream's end: nothing is applied (nothing skipped, nothing guessed) until an
    /// operator resets the link to an offset or adopts the target's position. No probing.
    case diverged
}

/// What happened to a link, as the state machine is told it.
public enum LinkEvent: Sendable, Hashable {
    /// Applying a batch failed with a connection error (or retryable errors ran out).
    case applyFailed(reason: String)
    /// Applying the batch in flight failed with an error worth retrying as it is (a deadlock, a
    /// serialization failure): it is applied again after a backoff, until
    /// ``LinkSupervisorConfiguration/retryableAttemptsMax`` attempts in a row have failed; then
    /// it counts as a connection failure and the link suspends.
    case applyRetryable(reason: String)
    /// A batch was applied and its cursor stored.
    case applySucceeded
    /// The probe the machine asked for with ``LinkAction/sendProbe(probeID:)`` was answered.
    case probeAnswered(probeID: UInt64)
    /// That probe failed.
    case probeFailed(probeID: UInt64, reason: String)
    /// The timer the machine scheduled is due (stale or early firings are ignored).
    case timerFired
    /// An operator (or the link itself, on a rejected entry with `stopOnReject`) pauses the link.
    case operatorSuspend(reason: String)
    /// An operator resumes the link: through verification, or at once with `force`. Ignored
    /// while diverged: only a reset or an adoption ends that.
    case operatorResume(force: Bool)
    /// The link found that the target's stored position does not belong to this stream as it
    /// is now (checked every time consuming starts, and reported by the adapter on apply).
    case positionDiverged(reason: String)
    /// An operator rewrote the target's position (reset to an offset, or adopted it): a
    /// diverged link consumes again; a paused one stays paused.
    case positionResolved(reason: String)
}

/// An effect the supervisor performs for the state machine, in the order returned.
public enum LinkAction: Sendable, Hashable {
    /// Open the adapter if it is closed, take the larger of cursor and applied offset, consume.
    case startConsuming
    /// Stop taking new batches: the cursor is frozen from here on.
    case stopConsuming
    /// Close the adapter once no call to it is in flight; the next use reopens it.
    case closeAdapter
    /// Deliver ``LinkEvent/timerFired`` at `atMs`, replacing any earlier timer.
    case scheduleTimer(atMs: UInt64)
    /// Forget the pending timer.
    case cancelTimer
    /// Apply the batch in flight again at `atMs` (``LinkEvent/applyRetryable(reason:)``); the
    /// link stays active. Not the state timer: an active link has none.
    case retryApply(atMs: UInt64)
    /// Call the adapter's `probe()` (opening it first if needed) and report the outcome with
    /// this id.
    case sendProbe(probeID: UInt64)
    /// Write this to the sync log and the process log, once.
    case record(LinkTransition)
}

/// The kind of a sync log record: connection events of the link, and rejected entries.
public enum SyncLogEvent: String, Sendable, Hashable, Codable, CaseIterable {
    case suspended
    case heldDown = "held_down"
    case verifying
    case verificationFailed = "verification_failed"
    case resumed
    case forcedResume = "forced_resume"
    case paused
    case entryFailed = "entry_failed"
    case entryResolved = "entry_resolved"
    /// An operator moved the cursor of a paused link.
    case cursorSet = "cursor_set"
    /// The target's position does not belong to this stream as it is now.
    case diverged
    /// An operator reset the link to an offset or adopted the target's position.
    case positionReset = "position_reset"
}

/// One change of a link's state (or of its held-down sub-state), with why.
public struct LinkTransition: Sendable, Hashable {
    public var event: SyncLogEvent
    public var from: LinkState
    public var to: LinkState
    /// Link clock time of the change.
    public var atMs: UInt64
    public var reason: String

    public init(event: SyncLogEvent, from: LinkState, to: LinkState, atMs: UInt64, reason: String) {
        self.event = event
        self.from = from
        self.to = to
        self.atMs = atMs
        self.reason = reason
    }
}

/// The decisions of one link's supervisor, as a pure value: events and the time come in,
/// actions come out. No I/O and no clock reads, so every path is testable in microseconds.
///
/// Invariants (checked by the tests):
/// - ``LinkAction/startConsuming`` is returned only on entering ``LinkState/active``, and every
///   exit from it returns ``LinkAction/stopConsuming``: the cursor can only move while active.
/// - The machine enters `active` from `suspended`/`verifying` only after `probeThreshold`
///   consecutive answered probes within `verifyWindowMs`, or on an operator's forced resume.
/// - In `paused` and `diverged` it never asks for a probe and has no timer; in `active` it has
///   no timer (a retry of the batch in flight, ``applyRetryDueMs``, is not one), and only
///   `active` has a retry pending. It leaves `diverged` only for `paused` or, on an operator's reset, `active`.
/// - At most one probe is in flight; an answer with another id is stale and ignored.
/// - Time arithmetic saturates: a deadline past `UInt64.max` is `UInt64.max` (never), so no
///   configuration, however extreme, traps (see `LinkStateMachinePropertyTests`).
public struct LinkStateMachine: Sendable {
    public let configuration: LinkSupervisorConfiguration
    public private(set) var state: LinkState
    public private(set) var stateEnteredAtMs: UInt64
    /// k of k/K while verifying.
    public private(set) var probeSuccessCount = 0
    /// When the supervisor must deliver ``LinkEvent/timerFired``; nil when no timer is armed.
    public private(set) var timerDueMs: UInt64?
    public private(set) var probeInFlight: UInt64?
    /// When the batch in flight is to be applied again after a retryable failure; nil when no
    /// retry is pending (always nil outside `active`).
    public private(set) var applyRetryDueMs: UInt64?
    /// Set while a flapping link is held down: no probe before this time.
    public private(set) var heldDownUntilMs: UInt64?
    /// The last failure's reason, for status.
    public private(set) var lastFailureReason: String?
    public private(set) var suspensionCount = 0
    public private(set) var flapCount = 0
    public private(set) var holdDownCount = 0

    private var lastNowMs: UInt64
    private var verifyWindowStartMs: UInt64 = 0
    /// Retryable failures of the batch in flight in a row (reset by a commit or a state change).
    private var retryableFailureCount = 0
    /// Failed probes since the last answered one: the backoff exponent.
    private var failedProbeCount = 0
    /// True while active after a resume: a failure now is a flap.
    private var activeAfterResume = false
    private var recentFlapsMs: [UInt64] = []
    private var nextProbeID: UInt64 = 1

    /// A machine that starts `active`, or `paused` when an operator paused the link before a
    /// restart. It never starts suspended: a link finds out that its target is down by trying.
    public init(configuration: LinkSupervisorConfiguration, nowMs: UInt64, startPaused: Bool = false) {
        self.configuration = configuration
        self.state = startPaused ? .paused : .active
        self.stateEnteredAtMs = nowMs
        self.lastNowMs = nowMs
    }

    /// What the supervisor does when the link starts.
    public func initialActions() -> [LinkAction] {
        state == .active ? [.startConsuming] : []
    }

    /// Applies `event` at `nowMs`. `jitterUnit` is a uniform random value in 0...1 from the
    /// supervisor's seeded generator; it spreads backoff delays and keeps the machine
    /// deterministic.
    public mutating func handle(_ event: LinkEvent, nowMs: UInt64, jitterUnit: Double) -> [LinkAction] {
        let now = max(nowMs, lastNowMs)
        lastNowMs = now
        switch event {
        case .applyFailed(let reason):
            return state == .active ? suspendFromActive(reason: reason, now: now, jitterUnit: jitterUnit) : []
        case .applyRetryable(let reason):
            return state == .active ? applyRetryable(reason: reason, now: now, jitterUnit: jitterUnit) : []
        case .applySucceeded:
            retryableFailureCount = 0
            applyRetryDueMs = nil
            return []
        case .probeAnswered(let probeID):
            return takeProbe(probeID) ? probeAnswered(now: now) : []
        case .probeFailed(let probeID, let reason):
            return takeProbe(probeID) ? probeFailed(reason: reason, now: now, jitterUnit: jitterUnit) : []
        case .timerFired:
            return timerFired(now: now)
        case .operatorSuspend(let reason):
            return pause(reason: reason, now: now)
        case .operatorResume(let force):
            guard state != .diverged else { return [] }
            return force ? forceResume(now: now) : resumeThroughVerification(now: now)
        case .positionDiverged(let reason):
            return state == .active ? diverge(reason: reason, now: now) : []
        case .positionResolved(let reason):
            return resolvePosition(reason: reason, now: now)
        }
    }

    /// How long the link has been in its state.
    public func timeInStateMs(nowMs: UInt64) -> UInt64 {
        nowMs >= stateEnteredAtMs ? nowMs - stateEnteredAtMs : 0
    }

    /// Delay before probe number `attempt + 1` of a suspension: base × 2^attempt, spread by
    /// ± `jitterRatio`, never above the cap nor below 1 ms.
    public func backoffDelayMs(attempt: Int, jitterUnit: Double) -> UInt64 {
        let cap = configuration.backoffCapMs
        let delay = min(configuration.backoffBaseMs.saturatingMultiply(1 << UInt64(min(max(attempt, 0), 40))), cap)
        let unit = jitterUnit.isFinite ? min(max(jitterUnit, 0), 1) : 0.5
        let jittered = Double(delay) * (1 + configuration.jitterRatio * (2 * unit - 1))
        // Near 2^64 the Double rounds past UInt64.max: convert saturating, then clamp to 1...cap.
        let delayMs = UInt64(saturatingRounded: jittered) ?? delay
        return max(1, min(cap, delayMs))
    }

    /// Delay before applying a batch again after its `failedAttempts`-th retryable failure in a
    /// row: `retryableBackoffBaseMs` × 2^(failedAttempts − 1), never above `backoffCapMs`.
    public func retryDelayMs(failedAttempts: Int) -> UInt64 {
        let shift = UInt64(min(max(failedAttempts - 1, 0), 30))
        return min(configuration.backoffCapMs, configuration.retryableBackoffBaseMs.saturatingMultiply(1 << shift))
    }

    // MARK: - Transitions

    private mutating func applyRetryable(reason: String, now: UInt64, jitterUnit: Double) -> [LinkAction] {
        retryableFailureCount += 1
        guard retryableFailureCount < configuration.retryableAttemptsMax else {
            return suspendFromActive(reason: "gave up after \(retryableFailureCount) attempts: \(reason)", now: now, jitterUnit: jitterUnit)
        }
        let dueMs = now.saturatingAdd(retryDelayMs(failedAttempts: retryableFailureCount))
        applyRetryDueMs = dueMs
        return [.retryApply(atMs: dueMs)]
    }

    private mutating func suspendFromActive(reason: String, now: UInt64, jitterUnit: Double) -> [LinkAction] {
        suspensionCount += 1
        lastFailureReason = reason
        let flapped = activeAfterResume
        enter(.suspended, now: now)
        failedProbeCount = 0
        var actions: [LinkAction] = [.stopConsuming, .closeAdapter]
        actions.append(.record(transition(.suspended, from: .active, now: now, reason: reason)))
        if flapped { recordFlap(now: now) }
        if recentFlapsMs.count > configuration.flapLimit {
            holdDownCount += 1
            let until = now.saturatingAdd(configuration.holdDownMs)
            heldDownUntilMs = until
            actions.append(.record(transition(.heldDown, from: .active, now: now, reason:
                "failed \(recentFlapsMs.count) times after resuming within \(configuration.flapWindowMs) ms; holding down for \(configuration.holdDownMs) ms")))
            actions.append(schedule(atMs: until))
        } else {
            actions.append(schedule(atMs: now.saturatingAdd(backoffDelayMs(attempt: 0, jitterUnit: jitterUnit))))
        }
        return actions
    }

    private mutating func recordFlap(now: UInt64) {
        flapCount += 1
        recentFlapsMs.append(now)
        // Times never exceed `now` (the machine clamps time to be monotonic).
        let windowMs = configuration.flapWindowMs
        recentFlapsMs.removeAll { now - $0 >= windowMs }
    }

    private mutating func timerFired(now: UInt64) -> [LinkAction] {
        guard state == .suspended || state == .verifying, let due = timerDueMs, now >= due, probeInFlight == nil else {
            return []
        }
        timerDueMs = nil
        if let until = heldDownUntilMs, now >= until { heldDownUntilMs = nil }
        let probeID = nextProbeID
        nextProbeID += 1
        probeInFlight = probeID
        return [.sendProbe(probeID: probeID)]
    }

    private mutating func takeProbe(_ probeID: UInt64) -> Bool {
        guard probeInFlight == probeID else { return false }
        probeInFlight = nil
        return state == .suspended || state == .verifying
    }

    private mutating func probeAnswered(now: UInt64) -> [LinkAction] {
        var actions: [LinkAction] = []
        failedProbeCount = 0
        if state == .suspended {
            enter(.verifying, now: now)
            actions.append(.record(transition(.verifying, from: .suspended, now: now,
                reason: "target answered a probe; verifying with \(configuration.probeThreshold) probes")))
        }
        if probeSuccessCount == 0 || now - verifyWindowStartMs > configuration.verifyWindowMs {
            // The series starts (again) with this answer: all K must fit in one window.
            probeSuccessCount = 1
            verifyWindowStartMs = now
        } else {
            probeSuccessCount += 1
        }
        if probeSuccessCount >= configuration.probeThreshold {
            return actions + resume(now: now)
        }
        return actions + [schedule(atMs: now.saturatingAdd(configuration.verifyIntervalMs))]
    }

    private mutating func resume(now: UInt64) -> [LinkAction] {
        let count = probeSuccessCount
        let elapsedMs = now - verifyWindowStartMs
        enter(.active, now: now)
        activeAfterResume = true
        return [.record(transition(.resumed, from: .verifying, now: now,
                    reason: "target answered \(count) consecutive probes in \(elapsedMs) ms")),
                .startConsuming]
    }

    private mutating func probeFailed(reason: String, now: UInt64, jitterUnit: Double) -> [LinkAction] {
        lastFailureReason = reason
        failedProbeCount += 1
        var actions: [LinkAction] = [.closeAdapter]
        if state == .verifying {
            let progress = "\(probeSuccessCount)/\(configuration.probeThreshold)"
            enter(.suspended, now: now)
            actions.append(.record(transition(.verificationFailed, from: .verifying, now: now,
                reason: "probe failed at \(progress): \(reason)")))
        }
        actions.append(schedule(atMs: now.saturatingAdd(backoffDelayMs(attempt: failedProbeCount, jitterUnit: jitterUnit))))
        return actions
    }

    private mutating func pause(reason: String, now: UInt64) -> [LinkAction] {
        guard state != .paused else { return [] }
        let from = state
        var actions: [LinkAction] = from == .active ? [.stopConsuming] : []
        if timerDueMs != nil { actions.append(.cancelTimer) }
        enter(.paused, now: now)
        actions.append(.closeAdapter)
        actions.append(.record(transition(.paused, from: from, now: now, reason: reason)))
        return actions
    }

    private mutating func diverge(reason: String, now: UInt64) -> [LinkAction] {
        lastFailureReason = reason
        enter(.diverged, now: now)
        return [.stopConsuming, .closeAdapter, .record(transition(.diverged, from: .active, now: now, reason: reason))]
    }

    private mutating func resolvePosition(reason: String, now: UInt64) -> [LinkAction] {
        switch state {
        case .diverged:
            enter(.active, now: now)
            return [.record(transition(.positionReset, from: .diverged, now: now, reason: reason)), .startConsuming]
        case .paused:
            return [.record(transition(.positionReset, from: .paused, now: now, reason: reason))]
        case .active, .suspended, .verifying:
            return []
        }
    }

    private mutating func forceResume(now: UInt64) -> [LinkAction] {
        guard state != .active else { return [] }
        let from = state
        var actions: [LinkAction] = timerDueMs != nil ? [.cancelTimer] : []
        enter(.active, now: now)
        activeAfterResume = true
        actions.append(.record(transition(.forcedResume, from: from, now: now,
            reason: "resumed by operator without verification")))
        actions.append(.startConsuming)
        return actions
    }

    private mutating func resumeThroughVerification(now: UInt64) -> [LinkAction] {
        guard state == .paused || state == .suspended else { return [] }
        let from = state
        let probePending = probeInFlight != nil
        enter(.verifying, now: now)
        var actions: [LinkAction] = [.record(transition(.verifying, from: from, now: now,
            reason: "resumed by operator; verifying with \(configuration.probeThreshold) probes"))]
        if !probePending { actions.append(schedule(atMs: now)) }
        return actions
    }

    // MARK: - Helpers

    /// Every state change goes through here so that the per-state fields stay consistent.
    private mutating func enter(_ newState: LinkState, now: UInt64) {
        state = newState
        stateEnteredAtMs = now
        probeSuccessCount = 0
        // A pending retry belongs to the batch in flight of the state left behind.
        retryableFailureCount = 0
        applyRetryDueMs = nil
        switch newState {
        case .active, .paused, .diverged:
            // No timer, no probe and no hold-down outside suspended/verifying.
            timerDueMs = nil
            probeInFlight = nil
            heldDownUntilMs = nil
            if newState != .active { activeAfterResume = false }
        case .verifying:
            heldDownUntilMs = nil
        case .suspended:
            activeAfterResume = false
        }
    }

    private mutating func schedule(atMs: UInt64) -> LinkAction {
        timerDueMs = atMs
        return .scheduleTimer(atMs: atMs)
    }

    private func transition(_ event: SyncLogEvent, from: LinkState, now: UInt64, reason: String) -> LinkTransition {
        LinkTransition(event: event, from: from, to: state, atMs: now, reason: reason)
    }
}
