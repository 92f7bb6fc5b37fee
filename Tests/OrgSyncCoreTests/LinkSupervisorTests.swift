import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestSupport
import Synchronization
import Testing

/// One link on a manual clock, an in-memory stream and a recording adapter, with its
/// transitions collected so tests can wait on them (bounded, no sleeps).
final class LinkHarness: Sendable {
    let clock: ManualClock
    let source: InMemoryEntrySource
    let adapter: RecordingAdapter
    let cursors: InMemoryCursorStore
    let supervisor: LinkSupervisor
    let transitions = Observed<[LinkTransition]>([])
    let observer = CountingLinkObserver()

    init(
        name: String = "demo", configuration: LinkSupervisorConfiguration = LinkHarness.configuration,
        clock: ManualClock = ManualClock(), source: InMemoryEntrySource = InMemoryEntrySource(),
        adapter: RecordingAdapter = RecordingAdapter(), cursors: InMemoryCursorStore = InMemoryCursorStore(),
        deadLetters: DeadLetters? = nil, ownerEpoch: UInt64 = 0
    ) throws {
        self.adapter = adapter
        self.clock = clock
        self.source = source
        self.cursors = cursors
        self.supervisor = try LinkSupervisor(
            name: name, source: source, adapter: adapter, cursorStore: cursors, configuration: configuration,
            clock: clock, deadLetters: deadLetters, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, randomSeed: 42,
            wallClockMs: { clock.nowMs() }, observer: observer, ownerEpoch: ownerEpoch)
    }

    static var configuration: LinkSupervisorConfiguration {
        var c = LinkSupervisorConfiguration()
        c.probeThreshold = 3
        c.verifyIntervalMs = 1_000
        c.verifyWindowMs = 10_000
        c.backoffBaseMs = 500
        c.jitterRatio = 0
        c.retryableAttemptsMax = 3
        c.retryableBackoffBaseMs = 100
        c.idleMemoryReleaseAfterMs = nil  // its timer would be one more sleeper on the clock
        return c
    }

    /// Starts collecting transitions, then the link.
    func start() async -> Task<Void, any Error> {
        let stream = await supervisor.transitions()
        let transitions = self.transitions
        Task { for await transition in stream { transitions.update { $0.append(transition) } } }
        let supervisor = self.supervisor
        return Task { try await supervisor.run() }
    }

    func waitForTransition(_ event: SyncLogEvent, count: Int = 1) async throws {
        try await withTimeout("\(count) × \(event.rawValue)") { [transitions] in
            _ = try await transitions.wait { list in list.count { $0.event == event } >= count }
        }
    }

    func waitForCursor(_ offset: Offset) async throws {
        try await withTimeout("cursor \(offset)") { [cursors, supervisor] in
            try await cursors.waitForCursor(link: supervisor.name, atLeast: offset)
        }
    }

    func advanceToNextDeadline() async throws {
        try await withTimeout("a sleeper on the clock") { [clock] in _ = try await clock.advanceToNextDeadline() }
    }

    func retry(_ offset: Offset) async throws -> DeadLetter {
        try await withTimeout("retry of dead letter \(offset)") { [supervisor] in try await supervisor.retryDeadLetter(offset) }
    }

    func appliedOffsets() -> [UInt64] { adapter.appliedOffsets.map(\.rawValue) }
}

/// Counts what a supervisor reports to its ``LinkObserver`` (what `/metrics` is made of).
final class CountingLinkObserver: LinkObserver {
    struct Counts: Sendable {
        var appliedEntries = 0
        var applies = 0
        var rejected = 0
        var probesAnswered = 0
        var probesFailed = 0
    }

    private let state = Mutex(Counts())
    var counts: Counts { state.withLock { $0 } }

    func didApply(link: String, stream: String, entryCount: Int, duration: Duration) {
        state.withLock { $0.appliedEntries += entryCount; $0.applies += 1 }
    }

    func didReject(link: String, stream: String) { state.withLock { $0.rejected += 1 } }

    func didProbe(link: String, stream: String, answered: Bool) {
        state.withLock { if answered { $0.probesAnswered += 1 } else { $0.probesFailed += 1 } }
    }
}

@Suite struct LinkSupervisorTests {
    @Test func suspendsOnFailureAndResumesOnlyAfterThresholdProbes() async throws {
        let link = try LinkHarness()
        link.source.append(count: 10)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(10)

        link.adapter.setDown(true)
        link.source.append(count: 5)
        try await link.waitForTransition(.suspended)
        link.source.append(count: 5)  // producers keep appending during the outage
        var status = await link.supervisor.status()
        #expect(status.state == .suspended)
        #expect(status.cursor == 10)
        #expect(status.lagCount == 10)
        #expect(status.lastError?.contains("target down") == true)

        try await link.advanceToNextDeadline()  // probe 1 fails: target still down
        // Only once probe 1 was answered (failed) and the next one is scheduled may the target
        // come back: otherwise probe 1 could find it up (the flake of 2 runs in 100).
        try await withTimeout("probe 1 handled and probe 2 scheduled") { [clock = link.clock] in try await clock.waitForSleepers() }
        #expect(await link.supervisor.status().state == .suspended, "probe 1 failed: still suspended")
        link.adapter.setDown(false)
        try await link.advanceToNextDeadline()  // probe answered: verifying 1/3
        try await link.waitForTransition(.verifying)
        try await link.advanceToNextDeadline()  // 2/3
        // Once the link sleeps again, the second answer is handled and the third probe is due.
        try await withTimeout("the timer of probe 3") { [clock = link.clock] in try await clock.waitForSleepers() }
        status = await link.supervisor.status()
        #expect(status.state == .verifying)
        #expect(status.probeSuccessCount == 2)
        #expect(status.cursor == 10)  // not consuming before K answers
        try await link.advanceToNextDeadline()  // 3/3
        try await link.waitForTransition(.resumed)
        try await link.waitForCursor(20)
        #expect(link.appliedOffsets() == Array(0..<20))
        status = await link.supervisor.status()
        #expect(status.state == .active)
        #expect(status.lagCount == 0)
        #expect(status.suspensionCount == 1)
        let events = link.supervisor.syncLog.page().reversed().map(\.event)
        #expect(events == [.suspended, .verifying, .resumed])
        #expect(link.supervisor.syncLog.page().first?.reason == "target answered 3 consecutive probes in 2000 ms")
        let seen = link.observer.counts
        #expect(seen.probesFailed == 1 && seen.probesAnswered == 3, "what the metrics see: \(seen)")
        #expect(seen.appliedEntries == 20 && seen.rejected == 0)
    }

    @Test func fanOutOneTargetDownDoesNotSlowTheOther() async throws {
        let clock = ManualClock()
        let source = InMemoryEntrySource()
        let cursors = InMemoryCursorStore()
        let down = try LinkHarness(name: "down", clock: clock, source: source, cursors: cursors)
        let up = try LinkHarness(name: "up", clock: clock, source: source, cursors: cursors)
        down.adapter.setDown(true)
        let runs = [await down.start(), await up.start()]
        defer { runs.forEach { $0.cancel() } }
        source.append(count: 50)
        try await down.waitForTransition(.suspended)
        try await up.waitForCursor(50)
        source.append(count: 50)
        try await up.waitForCursor(100)
        let upStatus = await up.supervisor.status()
        let downStatus = await down.supervisor.status()
        #expect(upStatus.lagCount == 0)
        #expect(upStatus.state == .active)
        #expect(downStatus.state == .suspended)
        #expect(downStatus.cursor == 0)
        #expect(downStatus.lagCount == 100)
        #expect(up.appliedOffsets() == Array(0..<100))
        #expect(down.appliedOffsets().isEmpty)
    }

    /// `rejected_entries` is derived from the persisted dead letters: a restart keeps it.
    @Test func rejectedCountSurvivesARestart() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let source = InMemoryEntrySource()
        source.append(count: 6)
        let cursors = InMemoryCursorStore()
        do {
            let link = try LinkHarness(
                source: source, cursors: cursors,
                deadLetters: try DeadLetters.open(directory: directory.path, link: "demo", lettersMax: 100))
            link.adapter.reject([1, 4])
            let run = await link.start()
            try await link.waitForCursor(6)
            #expect(await link.supervisor.status().rejectedCount == 2)
            run.cancel()
            _ = await run.result
        }
        let restarted = try LinkHarness(
            source: source, cursors: cursors,
            deadLetters: try DeadLetters.open(directory: directory.path, link: "demo", lettersMax: 100))
        let status = await restarted.supervisor.status()
        #expect(status.rejectedCount == 2, "rejected_entries must survive a restart")
        #expect(status.deadLetterFailedCount == 2)
    }

    @Test func rejectedEntryIsDeadLetteredAndTheLinkGoesOn() async throws {
        let link = try LinkHarness()
        link.adapter.reject([3])
        link.source.append(count: 6)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(6)
        #expect(link.appliedOffsets() == [0, 1, 2, 4, 5])
        let letters = link.supervisor.deadLetters.page()
        #expect(letters.map(\.offset) == [3])
        #expect(letters.first?.status == .failed)
        #expect(letters.first?.targetCode == "23514")
        let record = try #require(link.supervisor.syncLog.page().first { $0.event == .entryFailed })
        #expect(record.offset == 3)
        #expect(record.status == .failed)
        #expect(record.targetCode == "23514")
        let status = await link.supervisor.status()
        #expect(status.rejectedCount == 1)
        #expect(status.deadLetterFailedCount == 1)
        #expect(status.state == .active)

        // Still rejected: the retry fails and the letter stays failed, with one more attempt.
        await #expect(throws: LinkSupervisorError.self) { _ = try await link.retry(3) }
        #expect(link.supervisor.deadLetters.letter(at: 3)?.attemptCount == 2)

        link.adapter.accept([3])
        let resolved = try await link.retry(3)
        #expect(resolved.status == .resolved)
        #expect(link.appliedOffsets() == [0, 1, 2, 4, 5, 3])
        let seen = link.observer.counts
        #expect(seen.rejected == 1, "one rejection (the failed retry is the same entry, not another): \(seen)")
        #expect(seen.appliedEntries == 6, "five, then the retried dead letter")
        #expect(link.supervisor.deadLetters.letter(at: 3)?.status == .resolved)
        #expect(link.supervisor.syncLog.page().first?.event == .entryResolved)
        #expect(link.supervisor.syncLog.page().first?.status == .resolved)
        await #expect(throws: LinkSupervisorError.deadLetterAlreadyResolved(link: "demo", offset: 3)) {
            _ = try await link.retry(3)
        }
        await #expect(throws: LinkSupervisorError.deadLetterNotFound(link: "demo", offset: 99)) {
            _ = try await link.retry(99)
        }
    }

    @Test func stopOnRejectPausesWithoutSkipping() async throws {
        var configuration = LinkHarness.configuration
        configuration.stopOnReject = true
        let link = try LinkHarness(configuration: configuration)
        link.adapter.reject([2])
        link.source.append(count: 5)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForTransition(.paused)
        var status = await link.supervisor.status()
        #expect(status.state == .paused)
        #expect(status.cursor == 2)
        #expect(link.appliedOffsets() == [0, 1])
        #expect(link.supervisor.deadLetters.count == 0)
        #expect(link.supervisor.syncLog.page().contains { $0.event == .entryFailed && $0.offset == 2 })
        link.adapter.accept([2])
        await link.supervisor.resume(force: true)
        try await link.waitForCursor(5)
        #expect(link.appliedOffsets() == [0, 1, 2, 3, 4])
        status = await link.supervisor.status()
        #expect(status.state == .active)
    }

    @Test func retryableErrorsAreRetriedThenTreatedAsConnection() async throws {
        let link = try LinkHarness()
        link.adapter.failNextApplies([.retryable("deadlock", targetCode: "40P01"), .retryable("deadlock")])
        link.source.append(count: 3)
        let run = await link.start()
        defer { run.cancel() }
        try await link.advanceToNextDeadline()  // retry 2 after 100 ms
        try await link.advanceToNextDeadline()  // retry 3 after 200 ms
        try await link.waitForCursor(3)
        var status = await link.supervisor.status()
        #expect(status.suspensionCount == 0)
        #expect(link.adapter.target.value.applyCallCount == 3)

        link.adapter.failNextApplies(Array(repeating: .retryable("serialization"), count: 3))
        link.source.append(count: 1)
        try await link.advanceToNextDeadline()
        try await link.advanceToNextDeadline()
        try await link.waitForTransition(.suspended)
        status = await link.supervisor.status()
        #expect(status.cursor == 3)
        #expect(status.lastError?.hasPrefix("gave up after 3 attempts") == true)
    }

    @Test func aCaughtUpLinkLetsItsAdapterGiveBackMemoryOncePerQuietSpell() async throws {
        var configuration = LinkHarness.configuration
        configuration.idleMemoryReleaseAfterMs = 1_000
        let link = try LinkHarness(configuration: configuration)
        let run = await link.start()
        defer { run.cancel() }
        // Nothing applied yet: nothing to give back, and no timer for it.
        try await withTimeout("the link waiting for entries") { [adapter = link.adapter] in
            _ = try await adapter.target.wait { $0.isOpen }
        }
        #expect(link.clock.sleeperCount == 0)

        link.source.append(count: 5)
        try await link.waitForCursor(5)
        try await withTimeout("the release timer") { [clock = link.clock] in try await clock.waitForSleepers(count: 1) }
        #expect(link.adapter.target.value.releaseMemoryCount == 0)
        link.clock.advance(byMs: 999)
        link.source.append(count: 1)  // entries before the deadline: no release, the timer starts again
        try await link.waitForCursor(6)
        try await link.advanceToNextDeadline()
        try await withTimeout("a release") { [adapter = link.adapter] in
            _ = try await adapter.target.wait { $0.releaseMemoryCount == 1 }
        }
        // Once per quiet spell: standing still longer gives nothing more, and sets no timer.
        try await withTimeout("no sleepers") { [clock = link.clock] in try await clock.waitUntilNoSleepers() }
        link.clock.advance(byMs: 60_000)
        #expect(link.adapter.target.value.releaseMemoryCount == 1)
        // Work again, then stand still again: released again.
        link.source.append(count: 2)
        try await link.waitForCursor(8)
        try await link.advanceToNextDeadline()
        try await withTimeout("a second release") { [adapter = link.adapter] in
            _ = try await adapter.target.wait { $0.releaseMemoryCount == 2 }
        }
        #expect(link.appliedOffsets() == Array(0..<8))
    }

    @Test func pausedLinkNeverProbesAndResumesThroughVerification() async throws {
        let link = try LinkHarness()
        link.source.append(count: 2)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(2)
        #expect(await link.supervisor.suspend(reason: "maintenance") == .paused)
        link.source.append(count: 3)
        link.clock.advance(byMs: 3_600_000)
        try await link.waitForTransition(.paused)
        var status = await link.supervisor.status()
        #expect(status.state == .paused)
        #expect(status.cursor == 2)
        #expect(link.adapter.target.value.probeCount == 0)
        #expect(link.clock.sleeperCount == 0)  // no timer while paused

        #expect(await link.supervisor.resume() == .verifying)
        // The first probe is due at once; the next two at the verify interval.
        try await link.advanceToNextDeadline()
        try await link.advanceToNextDeadline()
        try await link.waitForCursor(5)
        status = await link.supervisor.status()
        #expect(status.state == .active)
        #expect(link.adapter.target.value.probeCount == 3)
        #expect(link.appliedOffsets() == [0, 1, 2, 3, 4])
        #expect(link.supervisor.syncLog.page().map(\.event).reversed() == [.paused, .verifying, .resumed])
    }

    @Test func startTakesTheLargerOfCursorAndAppliedOffset() async throws {
        let link = try LinkHarness(cursors: InMemoryCursorStore(initial: ["demo": 5]))
        let lineage = await link.source.lineage()
        // The target committed 5...7, the cursor write was lost.
        link.adapter.storePosition(AppliedPosition(identity: StreamIdentity(streamID: lineage.streamID, epoch: lineage.currentEpoch), offset: 7))
        link.source.append(count: 10)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(10)
        #expect(link.appliedOffsets() == [8, 9])
    }

    @Test func lostAcknowledgementIsNotAppliedTwice() async throws {
        let link = try LinkHarness()
        link.source.append(count: 4)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(4)
        // The next batch commits in the target but the answer is lost.
        link.adapter.loseNextAcknowledgements(1)
        link.source.append(count: 2)
        try await link.waitForTransition(.suspended)
        #expect(await link.supervisor.status().cursor == 4)
        for _ in 0..<3 { try await link.advanceToNextDeadline() }  // K probes
        try await link.waitForTransition(.resumed)
        link.source.append(count: 1)
        try await link.waitForCursor(7)
        #expect(link.appliedOffsets() == Array(0..<7))
    }

    @Test func cursorBeyondTheStreamEndRefusesToStart() async throws {
        let link = try LinkHarness(cursors: InMemoryCursorStore(initial: ["demo": 50]))
        link.source.append(count: 10)
        let run = await link.start()
        await #expect(throws: LinkSupervisorError.cursorBeyondEnd(link: "demo", cursor: 50, endOffset: 10)) {
            try await run.value
        }
        #expect(link.appliedOffsets().isEmpty)
    }

    @Test func flappingLinkIsHeldDownAndSaysSo() async throws {
        var configuration = LinkHarness.configuration
        configuration.probeThreshold = 1
        configuration.flapLimit = 0
        configuration.holdDownMs = 60_000
        let link = try LinkHarness(configuration: configuration)
        let run = await link.start()
        defer { run.cancel() }
        link.adapter.failNextApplies([.connection("reset")])
        link.source.append(count: 1)
        try await link.waitForTransition(.suspended)
        try await link.advanceToNextDeadline()  // probe answered: resumed (K = 1)
        try await link.waitForCursor(1)
        link.adapter.failNextApplies([.connection("reset again")])
        link.source.append(count: 1)
        try await link.waitForTransition(.heldDown)
        let status = await link.supervisor.status()
        #expect(status.heldDown)
        #expect(status.heldDownUntilMs == link.clock.nowMs() + 60_000)
        #expect(status.flapCount == 1)
        #expect(link.supervisor.syncLog.page().first?.event == .heldDown)
        try await link.advanceToNextDeadline()
        #expect(link.clock.nowMs() == 500 + 60_000)
        try await link.waitForCursor(2)
    }

    @Test func cursorCanBeSetOnlyWhilePaused() async throws {
        let link = try LinkHarness()
        link.source.append(count: 6)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(6)
        await #expect(throws: LinkSupervisorError.self) { try await link.supervisor.setCursor(2) }
        await link.supervisor.suspend()
        await #expect(throws: LinkSupervisorError.self) { try await link.supervisor.setCursor(7) }  // past the end
        try await link.supervisor.setCursor(4)
        #expect(await link.supervisor.status().cursor == 4)
        #expect(link.supervisor.syncLog.page().first?.event == .positionReset)
        #expect(await link.supervisor.status().state == .paused, "a reset while paused stays paused")
        // The target's position was rewritten to 3: resuming really replays 4 and 5.
        #expect(link.adapter.target.value.appliedOffset == 3)
        await link.supervisor.resume(force: true)
        link.source.append(count: 1)
        try await link.waitForCursor(7)
        #expect(link.appliedOffsets() == Array(0..<6) + [4, 5, 6])
    }

    /// The identity the harness's in-memory stream has now.
    private func identity(_ link: LinkHarness) async -> StreamIdentity {
        let lineage = await link.source.lineage()
        return StreamIdentity(streamID: lineage.streamID, epoch: lineage.currentEpoch)
    }

    @Test func aTargetPositionFromAnotherStreamDivergesAndAppliesNothing() async throws {
        let link = try LinkHarness()
        // A target written by another broker's stream up to 399 (issue: a new data directory
        // pointed at an existing target, or a second broker with the same link name).
        link.adapter.storePosition(AppliedPosition(identity: StreamIdentity(streamID: "another", epoch: 1), offset: 399))
        link.source.append(count: 100)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForTransition(.diverged)
        let status = await link.supervisor.status()
        #expect(status.state == .diverged)
        #expect(status.lagCount == 100, "a diverged link never reports lag 0 with entries missing")
        #expect(status.lastError?.contains("another") == true)
        #expect(link.appliedOffsets().isEmpty)
        #expect(await link.supervisor.resume(force: true) == .diverged, "resume does not end divergence")
        // The operator replays from 0: the target's position is removed, everything applies.
        let result = try await link.supervisor.changePosition(.reset(from: 0))
        #expect(result.state == .active)
        try await link.waitForCursor(100)
        #expect(link.appliedOffsets() == Array(0..<100))
        #expect(link.adapter.target.value.appliedPosition == AppliedPosition(identity: await identity(link), offset: 99))
        #expect(link.supervisor.syncLog.page().map(\.event).contains(.positionReset))
    }

    @Test func aStoreThatCannotAnswerYetIsAskedAgainNotTakenForAnEmptyStream() async throws {
        let link = try LinkHarness()
        link.source.append(count: 10)
        try await link.cursors.store(link: "demo", offset: 5)
        link.source.unavailableEndCount.withLock { $0 = 2 }
        let run = await link.start()
        defer { run.cancel() }
        try await link.clock.waitForSleepers(count: 1)
        #expect(await link.supervisor.status().lastError?.contains("no responders") == true)
        link.clock.advance(byMs: 100)
        try await link.clock.waitForSleepers(count: 1)
        link.clock.advance(byMs: 200)
        try await link.waitForCursor(10)
        #expect(link.appliedOffsets() == Array(5..<10), "from the stored cursor, not stopped nor from 0")
        #expect(await link.supervisor.status().lastError == nil)
    }

    @Test func aStreamThatCannotBeReadForAWhileIsReadAgainAndTheLinkGoesOn() async throws {
        let link = try LinkHarness()
        link.source.append(count: 10)
        link.source.unavailableReadCount.withLock { $0 = 2 }
        let run = await link.start()
        defer { run.cancel() }
        try await link.clock.waitForSleepers(count: 1)
        var status = await link.supervisor.status()
        #expect(status.state == .active && status.lastError?.contains("timed out") == true, "\(status)")
        link.clock.advance(byMs: 100)
        try await link.clock.waitForSleepers(count: 1)
        link.clock.advance(byMs: 200)  // the wait doubled
        try await link.waitForCursor(10)
        #expect(link.appliedOffsets() == Array(0..<10), "the link went on where it was")
        status = await link.supervisor.status()
        #expect(status.state == .active && status.lastError == nil)
        #expect(!link.supervisor.syncLog.page().map(\.event).contains(.suspended), "the target is fine: not suspended")
    }

    @Test func batchesCarryTheOwnerEpochAndALaterOwnersPositionStopsTheLink() async throws {
        let adapter = RecordingAdapter()
        let link = try LinkHarness(adapter: adapter, ownerEpoch: 4)
        link.source.append(count: 10)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(10)
        #expect(adapter.target.value.appliedPosition == AppliedPosition(identity: await identity(link), offset: 9, ownerEpoch: 4))
        run.cancel()
        _ = await run.result
        // Another member took the link over (owner epoch 6) and applied on; this one, still
        // believing it owns the link, starts again and must apply nothing.
        adapter.storePosition(AppliedPosition(identity: await identity(link), offset: 14, ownerEpoch: 6))
        link.source.append(count: 10)
        let stale = try LinkHarness(source: link.source, adapter: adapter, cursors: link.cursors, ownerEpoch: 4)
        let staleRun = await stale.start()
        defer { staleRun.cancel() }
        try await stale.waitForTransition(.diverged)
        let status = await stale.supervisor.status()
        #expect(status.lastError?.hasPrefix("fenced: ") == true, "\(status.lastError ?? "")")
        #expect(link.appliedOffsets() == Array(0..<10), "nothing applied after the later owner's position")
        #expect(adapter.target.value.appliedPosition?.ownerEpoch == 6)
    }

    @Test func aTargetThatLostAcknowledgedEntriesDivergesAndAdoptAppliesThemAgain() async throws {
        let link = try LinkHarness()
        link.source.append(count: 10)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(10)
        run.cancel()
        _ = await run.result
        // The target is restored from a backup taken after offset 5: 6...9 were acknowledged
        // (the cursor is at 10) but the target no longer has them.
        link.adapter.storePosition(AppliedPosition(identity: await identity(link), offset: 5))
        let link2 = try LinkHarness(source: link.source, adapter: link.adapter, cursors: link.cursors)
        let run2 = await link2.start()
        defer { run2.cancel() }
        try await link2.waitForTransition(.diverged)
        let status = await link2.supervisor.status()
        #expect(status.lastError?.contains("4 of the entries 6..<10") == true, "\(status.lastError ?? "")")
        #expect(link2.appliedOffsets() == Array(0..<10), "nothing applied, nothing skipped")
        let result = try await link2.supervisor.changePosition(.adopt)
        #expect(result.cursor == 6)
        try await link2.waitForCursor(10)
        #expect(link2.appliedOffsets() == Array(0..<10) + Array(6..<10), "the lost entries are applied again, once")
    }

    @Test func aCursorAheadOfTheTargetOnlyByDeadLettersStartsAtTheCursor() async throws {
        let link = try LinkHarness()
        link.adapter.reject([8, 9])
        link.source.append(count: 10)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(10)
        #expect(link.adapter.target.value.appliedOffset == 7, "the rejected entries moved the cursor, not the target")
        run.cancel()
        _ = await run.result
        let link2 = try LinkHarness(source: link.source, adapter: link.adapter, cursors: link.cursors,
                                    deadLetters: link.supervisor.deadLetters)
        let run2 = await link2.start()
        defer { run2.cancel() }
        link.source.append(count: 1)
        try await link2.waitForCursor(11)
        #expect(await link2.supervisor.status().state == .active)
        #expect(link2.appliedOffsets() == Array(0..<8) + [10], "8 and 9 stay dead letters; nothing applied twice")
    }

    @Test func aPositionCutByARepairDivergesThenResetReplaysTheNewEntries() async throws {
        let link = try LinkHarness()
        link.source.append(count: 400)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(400)
        run.cancel()
        _ = await run.result
        // A repair cut the stream back to 70 (a new epoch), then 100 new entries came.
        link.source.cut(to: 70)
        link.source.append(count: 100)
        let link2 = try LinkHarness(source: link.source, adapter: link.adapter, cursors: InMemoryCursorStore(initial: ["demo": 70]))
        let run2 = await link2.start()
        defer { run2.cancel() }
        try await link2.waitForTransition(.diverged)
        #expect(await link2.supervisor.status().lagCount == 100)
        #expect(link.appliedOffsets().count == 400, "nothing of the new epoch applied while diverged")
        _ = try await link2.supervisor.changePosition(.reset(from: 70))
        try await link2.waitForCursor(170)
        #expect(Array(link.appliedOffsets().dropFirst(400)) == Array(70..<170))
    }

    @Test func aPositionPastTheEndDivergesAndAdoptIsRefused() async throws {
        let link = try LinkHarness()
        link.adapter.storePosition(AppliedPosition(identity: nil, offset: 399))  // a target from before identities
        link.source.append(count: 10)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForTransition(.diverged)
        await #expect(throws: LinkSupervisorError.self) { _ = try await link.supervisor.changePosition(.adopt) }
        #expect(await link.supervisor.status().state == .diverged)
    }

    @Test func aLegacyPositionBelowTheEndIsTakenAndUpgradedOnTheNextBatch() async throws {
        let link = try LinkHarness()
        link.adapter.storePosition(AppliedPosition(identity: nil, offset: 4))
        link.source.append(count: 10)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(10)
        #expect(link.appliedOffsets() == Array(5..<10))
        #expect(link.adapter.target.value.appliedPosition == AppliedPosition(identity: await identity(link), offset: 9))
    }

    @Test func adoptTakesTheTargetsOffsetForThisStream() async throws {
        let link = try LinkHarness()
        link.adapter.storePosition(AppliedPosition(identity: StreamIdentity(streamID: "restored", epoch: 3), offset: 4))
        link.source.append(count: 10)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForTransition(.diverged)
        let result = try await link.supervisor.changePosition(.adopt)
        #expect(result.cursor == 5)
        try await link.waitForCursor(10)
        #expect(link.appliedOffsets() == Array(5..<10))
    }

    @Test func anApplyThatMeetsAnotherStreamsPositionDiverges() async throws {
        let link = try LinkHarness()
        link.source.append(count: 3)
        let run = await link.start()
        defer { run.cancel() }
        try await link.waitForCursor(3)
        // Another broker wrote this link's row meanwhile: the adapter refuses the next batch.
        link.adapter.storePosition(AppliedPosition(identity: StreamIdentity(streamID: "intruder", epoch: 1), offset: 2))
        link.source.append(count: 1)
        try await link.waitForTransition(.diverged)
        #expect(link.appliedOffsets() == Array(0..<3))
        #expect(await link.supervisor.status().cursor == 3)
    }

    @Test func pauseInterruptsRetryableBackoff() async throws {
        let link = try LinkHarness()
        link.adapter.failNextApplies([.retryable("lock timeout")])
        link.source.append(count: 2)
        let run = await link.start()
        defer { run.cancel() }
        try await withTimeout("the retry backoff") { [clock = link.clock] in try await clock.waitForSleepers() }
        await link.supervisor.suspend()
        try await link.waitForTransition(.paused)
        // The backoff sleeper goes away without time moving.
        try await withTimeout("the backoff sleeper to leave") { [clock = link.clock] in try await clock.waitUntilNoSleepers() }
        #expect(await link.supervisor.status().cursor == 0)
        #expect(link.adapter.target.value.applyCallCount == 1)
    }

    @Test func invalidConfigurationIsRefused() {
        var configuration = LinkSupervisorConfiguration()
        configuration.probeThreshold = 0
        #expect(throws: LinkConfigurationError.self) { _ = try LinkHarness(configuration: configuration) }
    }
}
