import Logging
import Synchronization

/// What a link's and a capture source's supervisor share around the pure ``LinkStateMachine``:
/// the machine with its jitter, and what its actions ask of the supervisor's loop — consume (or
/// capture) or not, close the connection first, send a probe. Pure: the supervisor (an actor)
/// owns one, records the transitions it returns and does the I/O, so both drive the machine the
/// same way.
struct SupervisorDriver: Sendable {
    private(set) var machine: LinkStateMachine
    private var random: SplitMix64
    /// `startConsuming`/`stopConsuming`: whether the loop reads and applies (or captures).
    var consuming = false
    /// `closeAdapter`: the loop closes its connection before anything else.
    var closeRequested = false
    /// `sendProbe`: the probe the loop sends next.
    var pendingProbeID: UInt64?

    /// What one event (or the start) asked for, beyond the flags it set.
    struct Outcome {
        /// To record (log, sync log, observers), in order.
        var transitions: [LinkTransition] = []
        /// The machine acted: the loop must look at the state again before it waits.
        var acted = false
        /// Consuming (re)started: a link consults its target's position again.
        var startedConsuming = false
    }

    init(configuration: LinkSupervisorConfiguration, nowMs: UInt64, startPaused: Bool, randomSeed: UInt64) {
        machine = LinkStateMachine(configuration: configuration, nowMs: nowMs, startPaused: startPaused)
        random = SplitMix64(seed: randomSeed)
    }

    /// The machine's first actions (consume, or stay paused), taken.
    mutating func start() -> Outcome { take(machine.initialActions()) }

    /// Feeds `event` to the machine at `nowMs` and takes its actions.
    mutating func handle(_ event: LinkEvent, nowMs: UInt64) -> Outcome {
        take(machine.handle(event, nowMs: nowMs, jitterUnit: random.nextUnit()))
    }

    /// Whether the machine's timer is due at `nowMs`.
    func timerIsDue(nowMs: UInt64) -> Bool {
        guard let dueMs = machine.timerDueMs else { return false }
        return nowMs >= dueMs
    }

    private mutating func take(_ actions: [LinkAction]) -> Outcome {
        var outcome = Outcome(acted: !actions.isEmpty)
        for action in actions {
            switch action {
            case .startConsuming:
                consuming = true
                outcome.startedConsuming = true
            case .stopConsuming: consuming = false
            case .closeAdapter: closeRequested = true
            case .scheduleTimer, .cancelTimer, .retryApply:
                break  // `machine.timerDueMs` and `applyRetryDueMs` are read by the loop's next wait
            case .sendProbe(let probeID): pendingProbeID = probeID
            case .record(let transition): outcome.transitions.append(transition)
            }
        }
        return outcome
    }
}

/// Ends a supervisor loop's wait early: ``kick()`` ends the wait under way, or — when the loop
/// is busy — makes its next wait return at once, so a request made during an await is never
/// missed.
///
/// The wait and the watch for a kick are child tasks of the loop's task (structured), so they run
/// where the loop runs: on a task executor the loop's task prefers (the deterministic simulation
/// runs a link on one thread that way) as much as on the shared pool.
final class LoopWakeUp: Sendable {
    private struct State {
        var requested = false
        /// The watch of the wait under way, resumed by a kick.
        var watcher: CheckedContinuation<Void, Never>?

        mutating func takeWatcher() -> CheckedContinuation<Void, Never>? {
            defer { watcher = nil }
            return watcher
        }
    }

    private let state = Mutex(State())

    /// Forgets earlier kicks: the loop is about to look at everything afresh.
    func reset() { state.withLock { $0.requested = false } }

    func kick() {
        state.withLock { state in
            state.requested = true
            return state.takeWatcher()
        }?.resume()
    }

    /// Runs `wait` (which must end when cancelled) until it returns or a kick, or the caller's
    /// cancellation, ends it; returns at once when kicked since the last wait or reset.
    func wait(_ wait: @escaping @Sendable () async -> Void) async {
        let kicked = state.withLock { state in
            defer { state.requested = false }
            return state.requested
        }
        if kicked { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await wait() }
            group.addTask { await self.watchForKick() }
            await group.next()
            group.cancelAll()
        }
        state.withLock { $0.requested = false }
    }

    /// Returns when kicked (or ``cancel()``led), or when cancelled because the wait ended.
    private func watchForKick() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    // A cancellation flags the task before its handler runs: if the handler found
                    // no watcher yet, this sees the flag.
                    if state.requested || Task.isCancelled { return true }
                    state.watcher = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.takeWatcher() }?.resume()
        }
    }

    /// Ends a wait under way (the loop has stopped).
    func cancel() { state.withLock { $0.takeWatcher() }?.resume() }
}

extension SyncLog {
    /// A supervisor's transition: logged, and appended here. A failed write is logged, not
    /// thrown: the transition happened either way (the record stays in memory for the status).
    func record(_ transition: LinkTransition, state: LinkState, timeMs: UInt64, logger: Logger) {
        transition.log(to: logger)
        do {
            try append(event: transition.event, state: state, reason: transition.reason, timeMs: timeMs,
                       linkClockMs: transition.atMs, offset: nil, status: nil, targetCode: nil)
        } catch {
            logger.error("cannot write the sync log: \(error)")
        }
    }
}

extension LinkTransition {
    /// The process log's line for a transition (a link's or a source's): failures as warnings.
    func log(to logger: Logger) {
        let message: Logger.Message = "\(from.rawValue) → \(to.rawValue): \(reason)"
        switch event {
        case .suspended, .heldDown, .verificationFailed: logger.warning(message, metadata: ["event": "\(event.rawValue)"])
        default: logger.notice(message, metadata: ["event": "\(event.rawValue)"])
        }
    }
}

/// Returns when the task is cancelled: the wait of last resort in a race of waits.
func waitUntilCancelled() async {
    let (stream, continuation) = AsyncStream<Never>.makeStream()
    for await _ in stream {}
    withExtendedLifetime(continuation) {}
}
