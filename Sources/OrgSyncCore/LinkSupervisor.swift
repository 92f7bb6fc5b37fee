#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import OrgSyncLog
import OrgSyncPluginAPI

/// Supervises one link: drives its ``LinkStateMachine`` with an injected clock and performs the
/// machine's actions in the order returned, while its ``Link`` does the work (read, apply,
/// commit, dead-letter, retry a dead letter, rewrite a position) and reports what happened.
///
/// One task — the one in ``run()`` — makes every call to the adapter, so calls never overlap
/// (as ``OrgAdapter`` promises adapters). Operator requests (``suspend(reason:)``,
/// ``resume(force:)``, ``retryDeadLetter(_:)``) are handled on the actor at once and wake that
/// task; a batch already in flight when the operator pauses finishes and is committed, because
/// the cursor must always say what the target holds.
///
/// Guarantees: entries are applied in offset order; the cursor is stored only after the
/// adapter applied every entry below it; every time consuming (re)starts, the target's stored
/// position is checked against the stream's identity (``LinkStartPosition``): the link starts
/// after it when it belongs to this stream as it is now, and otherwise goes to `diverged` and
/// applies nothing until an operator resets or adopts; a rejected entry is skipped only after
/// it is stored in the dead letters.
public actor LinkSupervisor {
    public nonisolated let name: String
    public nonisolated let configuration: LinkSupervisorConfiguration
    public nonisolated let syncLog: SyncLog
    public nonisolated let deadLetters: DeadLetters

    /// The link's work: its stream, adapter, cursor and dead letters.
    private let link: Link
    private let clock: any LinkClock
    private let wallClockMs: @Sendable () -> UInt64
    private var logger: Logger

    /// The state machine and the flags its actions set.
    private var driver: SupervisorDriver
    private var running = false
    /// A batch went to the adapter since it last gave back its caches (``OrgAdapter/releaseMemory()``).
    private var appliedSinceMemoryRelease = false
    /// After every (re)start of consuming, the adapter's applied offset is consulted once.
    private var cursorSyncNeeded = false
    private var pendingRetries: [PendingRetry] = []
    private var pendingPositionChanges: [PendingPositionChange] = []
    /// Ends the loop's wait when something changed (see ``LoopWakeUp``).
    private let wake = LoopWakeUp()
    /// True while `run()` applies a batch: its commit may still move the cursor.
    private var batchInFlight = false
    private var observers: [Int: AsyncStream<LinkTransition>.Continuation] = [:]
    private var nextObserverID = 0

    private var lastError: String?
    /// While a store kept elsewhere cannot answer (``storeCannotAnswer(_:_:)``): the wait before
    /// asking it again.
    private var storeRetry = StoreRetryBackoff()
    /// Rejections that paused the link (`stopOnReject`) since it started: those entries are not
    /// dead-lettered. Every other rejection is counted by the dead letters, which persist.
    private var stoppedOnRejectCount = 0

    private struct PendingRetry {
        var offset: Offset
        var continuation: CheckedContinuation<DeadLetter, any Error>
    }

    /// An operator's change of where the link stands, performed on the link's task because it
    /// talks to the adapter.
    private struct PendingPositionChange {
        var change: PositionChange
        var continuation: CheckedContinuation<PositionChangeResult, any Error>
    }

    /// - Parameters:
    ///   - name: the link's name (also its cursor key, and its sync log and dead letters file name).
    ///   - randomSeed: seeds the backoff jitter; fix it to replay a run exactly.
    ///   - startPaused: start in `paused` (an operator paused the link before a restart).
    ///   - wallClockMs: milliseconds since 1970, for the sync log's timestamps.
    ///   - observer: told of every apply, rejection and probe (metrics).
    ///   - ownerEpoch: carried by every batch and position this link stores, so that the target
    ///     refuses it once a later owner stored its own (``EntryBatch/ownerEpoch``); 0 on a
    ///     standalone broker.
    /// - Throws: ``LinkConfigurationError`` naming the invalid field.
    public init(
        name: String,
        source: any LinkEntrySource,
        adapter: any OrgAdapter,
        cursorStore: any LinkCursorStore,
        configuration: LinkSupervisorConfiguration = LinkSupervisorConfiguration(),
        clock: any LinkClock = SystemLinkClock(),
        syncLog: SyncLog? = nil,
        deadLetters: DeadLetters? = nil,
        logger: Logger = Logger(label: "orgsync.link"),
        randomSeed: UInt64 = UInt64.random(in: UInt64.min...UInt64.max),
        startPaused: Bool = false,
        wallClockMs: @escaping @Sendable () -> UInt64 = { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) },
        observer: (any LinkObserver)? = nil,
        ownerEpoch: UInt64 = 0
    ) throws(LinkConfigurationError) {
        try configuration.validate()
        self.name = name
        self.configuration = configuration
        self.clock = clock
        self.syncLog = syncLog ?? SyncLog.inMemory(recordsMax: configuration.syncLogRecordsMax)
        let deadLetters = deadLetters ?? DeadLetters.inMemory(lettersMax: configuration.deadLettersMax)
        self.deadLetters = deadLetters
        self.link = Link(
            name: name, source: source, adapter: adapter, cursorStore: cursorStore, deadLetters: deadLetters,
            observer: observer, wallClockMs: wallClockMs, ownerEpoch: ownerEpoch)
        self.wallClockMs = wallClockMs
        self.logger = logger
        self.logger[metadataKey: "link"] = .string(name)
        self.driver = SupervisorDriver(configuration: configuration, nowMs: clock.nowMs(), startPaused: startPaused, randomSeed: randomSeed)
    }

    // MARK: - Running

    /// Consumes and supervises until cancelled. Throws only when the link cannot go on safely:
    /// the cursor cannot be stored or is beyond the stream's end, the stream cannot be read, or a
    /// dead letter cannot be stored (skipping the entry would lose it).
    public func run() async throws {
        guard !running else { throw LinkSupervisorError.alreadyRunning(link: name) }
        running = true
        var failure: (any Error)?
        do {
            try await loadCursorWhenTheStoreAnswers()
            take(driver.start())
            while !Task.isCancelled { try await step() }
        } catch where !(error is CancellationError) {
            failure = error
            logger.error("link stopped: \(error)")
        } catch {}
        await finish()
        if let failure { throw failure }
    }


    /// Loads the cursor, asking again (with backoff, on the link's clock) while a store kept
    /// elsewhere cannot answer (NATS electing a stream's leader): a link must neither stop for
    /// that nor take an unknown end for 0.
    private func loadCursorWhenTheStoreAnswers() async throws {
        while true {
            do {
                try await link.loadCursor()
                storeAnswered()
                return
            } catch let error as LinkStoreUnavailable {
                try await clock.sleep(untilMs: clock.nowMs() &+ storeCannotAnswer(error, "cannot load the cursor yet; asking again"))
            }
        }
    }

    /// A stream kept elsewhere could not be read (NATS electing the stream's leader, a server
    /// restarting): the link stays where it is and reads again after the backoff, showing why
    /// meanwhile. It used to stop the link — a pinned link stayed stopped after a nats-server
    /// restart.
    private func waitForTheStore(_ error: LinkStoreUnavailable) async {
        let delayMs = storeCannotAnswer(error, "cannot read the stream now; reading again")
        await waitForWakeUp(entriesAfter: nil, timerDueMs: clock.nowMs() &+ delayMs)
    }

    /// A store kept elsewhere could not answer: says why (log and `lastError`) and returns how
    /// long to wait before asking again, ms (``StoreRetryBackoff``).
    private func storeCannotAnswer(_ error: LinkStoreUnavailable, _ message: Logger.Message) -> UInt64 {
        let delayMs = storeRetry.failed()
        lastError = "\(error)"
        logger.warning(message, metadata: ["error": "\(error)", "retry_ms": "\(delayMs)"])
        return delayMs
    }

    /// The store answered: the backoff starts over, and the error it showed is gone.
    private func storeAnswered() {
        guard storeRetry.answered() else { return }
        lastError = nil
    }

    /// One unit of work: close, retry a dead letter, probe, apply a batch, or wait for a reason
    /// to do one of those.
    private func step() async throws {
        wake.reset()  // this step looks at everything afresh
        if driver.closeRequested { return await closeAdapter() }
        if !pendingRetries.isEmpty { return await performNextRetry() }
        if !pendingPositionChanges.isEmpty { return await performNextPositionChange() }
        if let probeID = driver.pendingProbeID {
            driver.pendingProbeID = nil
            return await probe(probeID)
        }
        if driver.consuming {
            if try await consumeOnce() { return }
            guard appliedSinceMemoryRelease, let releaseAfterMs = configuration.idleMemoryReleaseAfterMs else {
                return await waitForWakeUp(entriesAfter: link.cursor, timerDueMs: nil)
            }
            // Caught up after working: wait for entries, and once the link has stood still for a
            // while let the adapter give back its caches (a backlog caught up leaves them full).
            let releaseDueMs = clock.nowMs().saturatingAdd(releaseAfterMs)
            await waitForWakeUp(entriesAfter: link.cursor, timerDueMs: releaseDueMs)
            if driver.consuming, !driver.closeRequested, clock.nowMs() >= releaseDueMs {
                appliedSinceMemoryRelease = false
                await link.releaseMemory()
            }
            return
        }
        if fireTimerIfDue() { return }
        await waitForWakeUp(entriesAfter: nil, timerDueMs: driver.machine.timerDueMs)
        _ = fireTimerIfDue()
    }

    private func finish() async {
        driver.consuming = false
        _ = storeRetry.answered()  // a later run() starts its backoff over
        wake.cancel()
        if link.adapterOpen || driver.closeRequested { await closeAdapter() }
        for request in pendingRetries { request.continuation.resume(throwing: LinkSupervisorError.notRunning(link: name)) }
        pendingRetries = []
        for request in pendingPositionChanges { request.continuation.resume(throwing: LinkSupervisorError.notRunning(link: name)) }
        pendingPositionChanges = []
        running = false
    }

    // MARK: - Consuming

    /// Applies one batch; false when there was nothing to read.
    private func consumeOnce() async throws -> Bool {
        // From here until the commit, the cursor belongs to this batch (see `changePosition`).
        batchInFlight = true
        defer { batchInFlight = false }
        guard try await prepareAdapterForConsuming() else { return true }
        let entries: [Entry]
        do {
            entries = try await link.readBatch(maxCount: configuration.batchEntriesMax)
        } catch let error as LinkStoreUnavailable {
            await waitForTheStore(error)
            return true
        }
        storeAnswered()
        guard !entries.isEmpty else { return false }
        guard driver.consuming else { return true }  // paused or stopped while reading: apply nothing
        let outcome = try await link.applyAndCommit(entries) { reason in await self.retryAfterRetryable(reason) }
        switch outcome {
        case .committed:
            handle(.applySucceeded)
        case .rejected(let entry, let error, let committedBefore):
            if committedBefore > 0 { handle(.applySucceeded) }
            try await reject(entry, error)
        case .failed(let reason):
            connectionFailed(reason)
        case .diverged(let reason):
            diverged(reason)
        case .fenced(let reason):
            // Another member owns the link now: apply nothing more. The member's lease keeper
            // gives the link up; until then it stays stopped like a diverged one.
            diverged("fenced: \(reason)")
        case .abandoned:
            break
        }
        appliedSinceMemoryRelease = true
        return true
    }

    /// Opens the adapter if needed and checks the target's position after a (re)start; false if
    /// the target failed (the link is then suspended) or its position diverged.
    private func prepareAdapterForConsuming() async throws -> Bool {
        let stored: AppliedPosition?
        do {
            try await link.openAdapter()
            guard cursorSyncNeeded else { return true }
            stored = try await link.storedPosition()
        } catch {
            adapterFailed(error)
            return false
        }
        cursorSyncNeeded = false
        switch try await link.decideStart(stored: stored) {
        case .startAt(let offset, let note):
            if let note { logger.notice("starting at \(offset): \(note)") }
            return true
        case .diverged(let reason):
            diverged(reason)
            return false
        }
    }

    private func diverged(_ reason: String) {
        driver.closeRequested = true
        lastError = reason
        handle(.positionDiverged(reason: reason))
    }

    /// A retryable failure of the batch in flight, as the machine decides it: wait for its
    /// ``LinkAction/retryApply(atMs:)`` and try again (true), or stop (it gave up and suspended
    /// the link, or the link stopped consuming meanwhile).
    private func retryAfterRetryable(_ reason: String) async -> Bool {
        lastError = reason
        handle(.applyRetryable(reason: reason))
        guard driver.consuming, let dueMs = driver.machine.applyRetryDueMs else {
            if let failure = driver.machine.lastFailureReason, driver.machine.state == .suspended { lastError = failure }
            return false
        }
        while clock.nowMs() < dueMs, driver.consuming, !Task.isCancelled {
            await waitForWakeUp(entriesAfter: nil, timerDueMs: dueMs)
        }
        return driver.consuming && !Task.isCancelled
    }

    /// A rejected entry: dead-lettered and skipped, or — with `stopOnReject` — the link pauses
    /// on it (the cursor stays at it).
    private func reject(_ entry: Entry, _ error: AdapterError) async throws {
        link.observer?.didReject(link: name, stream: link.streamName)
        if configuration.stopOnReject {
            stoppedOnRejectCount += 1
            writeSyncLog(.entryFailed, reason: "rejected, link stopped (stopOnReject): \(error.message)",
                         offset: entry.offset, status: .failed, targetCode: error.targetCode)
            handle(.operatorSuspend(reason: "stopped on rejected entry \(entry.offset)"))
            return
        }
        try await link.deadLetter(entry, error) {
            writeSyncLog(.entryFailed, reason: error.message, offset: entry.offset, status: .failed, targetCode: error.targetCode)
        }
        logger.warning("entry \(entry.offset) rejected and dead-lettered: \(error)")
    }

    private func adapterFailed(_ error: any Error) {
        if error is CancellationError, Task.isCancelled { return }
        connectionFailed(Link.describe(error))
    }

    private func connectionFailed(_ reason: String) {
        driver.closeRequested = true
        lastError = reason
        handle(.applyFailed(reason: reason))
    }

    // MARK: - Probing, timers, waiting

    private func probe(_ probeID: UInt64) async {
        do {
            try await link.probe()
            handle(.probeAnswered(probeID: probeID))
        } catch {
            if Task.isCancelled { return }
            driver.closeRequested = true
            lastError = Link.describe(error)
            handle(.probeFailed(probeID: probeID, reason: Link.describe(error)))
        }
    }

    private func closeAdapter() async {
        driver.closeRequested = false
        await link.closeAdapter()
    }

    /// True if the timer was due and the machine acted on it.
    private func fireTimerIfDue() -> Bool {
        driver.timerIsDue(nowMs: clock.nowMs()) && handle(.timerFired)
    }

    /// Sleeps until entries arrive after `entriesAfter`, the timer is due, or ``kick()``.
    /// Consuming links wait for entries and have no timer; the others wait for their timer (or
    /// for nothing, when paused): one condition at a time, so one child task suffices.
    private func waitForWakeUp(entriesAfter offset: Offset?, timerDueMs: UInt64?) async {
        let source = link.source
        let clock = self.clock
        await wake.wait {
            if let offset, let timerDueMs {
                // Whichever comes first.
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { try? await source.waitForEntries(after: offset) }
                    group.addTask { try? await clock.sleep(untilMs: timerDueMs) }
                    await group.next()
                    group.cancelAll()
                }
            } else if let offset {
                try? await source.waitForEntries(after: offset)
            } else if let timerDueMs {
                try? await clock.sleep(untilMs: timerDueMs)
            } else {
                await waitUntilCancelled()
            }
        }
    }

    /// Ends the current wait so that `run()` looks at the state again.
    private func kick() { wake.kick() }

    // MARK: - The state machine

    /// Feeds an event to the machine; records its transitions and wakes the loop if it acted.
    @discardableResult
    private func handle(_ event: LinkEvent) -> Bool {
        take(driver.handle(event, nowMs: clock.nowMs()))
    }

    @discardableResult
    private func take(_ outcome: SupervisorDriver.Outcome) -> Bool {
        if outcome.startedConsuming { cursorSyncNeeded = true }
        for transition in outcome.transitions { record(transition) }
        if outcome.acted { kick() }
        return outcome.acted
    }

    private func record(_ transition: LinkTransition) {
        syncLog.record(transition, state: driver.machine.state, timeMs: wallClockMs(), logger: logger)
        for continuation in observers.values { continuation.yield(transition) }
    }

    private func writeSyncLog(
        _ event: SyncLogEvent, reason: String, offset: Offset? = nil, status: EntryStatus? = nil, targetCode: String? = nil
    ) {
        do {
            try syncLog.append(event: event, state: driver.machine.state, reason: reason, timeMs: wallClockMs(),
                               linkClockMs: clock.nowMs(), offset: offset, status: status, targetCode: targetCode)
        } catch {
            logger.error("cannot write the sync log: \(error)")
        }
    }
}

// MARK: - Operator requests and status

extension LinkSupervisor {
    /// Pauses the link (from any state): cursor frozen, no probing, adapter closed.
    @discardableResult
    public func suspend(reason: String = "paused by operator") -> LinkState {
        handle(.operatorSuspend(reason: reason))
        return driver.machine.state
    }

    /// Resumes a paused or suspended link through verification (K probes), or at once with
    /// `force`.
    @discardableResult
    public func resume(force: Bool = false) -> LinkState {
        handle(.operatorResume(force: force))
        return driver.machine.state
    }

    public func status() async -> LinkStatus {
        let end = await link.source.endOffset()
        let lineage = await link.source.lineage()
        let now = clock.nowMs()
        let cursor = link.cursor
        return LinkStatus(
            link: name, stream: link.streamName, state: driver.machine.state,
            heldDown: driver.machine.heldDownUntilMs != nil, heldDownUntilMs: driver.machine.heldDownUntilMs,
            cursor: cursor, endOffset: end, lagCount: end > cursor ? end.rawValue - cursor.rawValue : 0,
            lastError: lastError, probeSuccessCount: driver.machine.probeSuccessCount,
            probeThreshold: configuration.probeThreshold, timeInStateMs: driver.machine.timeInStateMs(nowMs: now),
            suspensionCount: driver.machine.suspensionCount, flapCount: driver.machine.flapCount,
            holdDownCount: driver.machine.holdDownCount, rejectedCount: deadLetters.count + stoppedOnRejectCount, appliedCount: link.appliedCount,
            deadLetterFailedCount: deadLetters.failedCount, isRunning: running,
            streamID: lineage.streamID, epoch: lineage.currentEpoch)
    }

    /// Every transition from now on, as it happens (for tests, server-sent events, metrics).
    public func transitions() -> AsyncStream<LinkTransition> {
        let (stream, continuation) = AsyncStream<LinkTransition>.makeStream(bufferingPolicy: .bufferingNewest(1_000))
        let id = nextObserverID
        nextObserverID += 1
        observers[id] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.removeObserver(id) }
        }
        return stream
    }

    private func removeObserver(_ id: Int) { observers[id] = nil }

    /// Applies a dead-lettered entry again, alone; on success its status becomes `resolved`
    /// (in the dead letters and the sync log). The retry runs on the link's task, between
    /// batches. Note it applies an old entry after newer ones: that is the operator's call.
    public func retryDeadLetter(_ offset: Offset) async throws -> DeadLetter {
        guard running else { throw LinkSupervisorError.notRunning(link: name) }
        guard let letter = deadLetters.letter(at: offset) else { throw LinkSupervisorError.deadLetterNotFound(link: name, offset: offset) }
        guard letter.status == .failed else { throw LinkSupervisorError.deadLetterAlreadyResolved(link: name, offset: offset) }
        return try await withCheckedThrowingContinuation { continuation in
            pendingRetries.append(PendingRetry(offset: offset, continuation: continuation))
            kick()
        }
    }

    fileprivate func performNextRetry() async {
        let request = pendingRetries.removeFirst()
        do {
            let letter = try await link.retryDeadLetter(request.offset) { event, reason, status, targetCode in
                writeSyncLog(event, reason: reason, offset: request.offset, status: status, targetCode: targetCode)
            }
            request.continuation.resume(returning: letter)
        } catch {
            // A target that could not be reached (not one that answered "no") is closed.
            if case LinkSupervisorError.retryFailed(_, _, let adapterError) = error {
                if case .rejected = adapterError.kind {} else { driver.closeRequested = true }
            }
            request.continuation.resume(throwing: error)
        }
        // A paused or suspended link keeps no connection open for a one-off retry.
        if !driver.consuming, link.adapterOpen { driver.closeRequested = true }
    }

    /// Sets the cursor, for an operator who wants to replay or skip entries (`orgsync cursor
    /// set`): a ``PositionChange/reset(from:)``, so a target that stores its position really
    /// replays from `offset`. Only while paused (or diverged), never past the stream's end.
    public func setCursor(_ offset: Offset) async throws {
        _ = try await changePosition(.reset(from: offset))
    }

    /// Rewrites where the link stands, in the target (its stored position, in its own
    /// transaction) and in the cursor, for an operator: replay from an offset, or adopt the
    /// target's position as this stream's. Only while paused or diverged; a diverged link then
    /// consumes again, a paused one stays paused. Runs on the link's task, between batches.
    public func changePosition(_ change: PositionChange) async throws -> PositionChangeResult {
        guard running else { throw LinkSupervisorError.notRunning(link: name) }
        guard driver.machine.state == .paused || driver.machine.state == .diverged else {
            throw LinkSupervisorError.cursorChangeRefused(link: name, reason: "the link must be paused or diverged (it is \(driver.machine.state.rawValue))")
        }
        return try await withCheckedThrowingContinuation { continuation in
            pendingPositionChanges.append(PendingPositionChange(change: change, continuation: continuation))
            kick()
        }
    }

    fileprivate func performNextPositionChange() async {
        let request = pendingPositionChanges.removeFirst()
        do {
            request.continuation.resume(returning: try await perform(request.change))
        } catch {
            request.continuation.resume(throwing: error)
        }
        if !driver.consuming, link.adapterOpen { driver.closeRequested = true }
    }

    private func perform(_ change: PositionChange) async throws -> PositionChangeResult {
        guard driver.machine.state == .paused || driver.machine.state == .diverged, !batchInFlight else {
            throw LinkSupervisorError.cursorChangeRefused(link: name, reason: "the link must be paused or diverged (it is \(driver.machine.state.rawValue))")
        }
        let rewritten: (cursor: Offset, position: AppliedPosition?, reason: String)
        do {
            rewritten = try await link.rewritePosition(change)
        } catch {
            if case LinkSupervisorError.targetFailed = error { driver.closeRequested = true }
            throw error
        }
        let (next, position, reason) = rewritten
        lastError = nil
        handle(.positionResolved(reason: reason))
        return PositionChangeResult(cursor: next, targetPosition: position, state: driver.machine.state)
    }
}
