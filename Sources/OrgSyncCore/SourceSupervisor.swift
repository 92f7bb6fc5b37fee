#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import OrgSyncLog
import OrgSyncPluginAPI
import Synchronization

/// Supervises one capture source: runs its capture rounds into the stream, and — with the same
/// ``LinkStateMachine`` as a link — suspends it when its database fails, probes it with backoff
/// and resumes only after `probeThreshold` answered probes (or an operator's forced resume).
///
/// Exactly once into the stream: the source's position is recorded inside the entries it
/// appends (``ChangeSource/position(of:)``), so it is durable exactly when they are. On start
/// the supervisor reads the stream's tail (from a hint, ``CaptureStream/loadHint(source:)``) to
/// find the last position; the source then skips every change at or before it and acknowledges
/// changes to its database only after their append returned. A crash anywhere — between the
/// append and the acknowledgement included — re-reads at most what was not acknowledged, and
/// appends none of it twice.
public actor SourceSupervisor {
    public nonisolated let name: String
    public nonisolated let configuration: LinkSupervisorConfiguration
    public nonisolated let syncLog: SyncLog
    public nonisolated let streamName: String

    private let source: any ChangeSource
    private let stream: any CaptureStream
    private let clock: any LinkClock
    private let wallClockMs: @Sendable () -> UInt64
    private var logger: Logger
    /// The state machine and the flags its actions set.
    private var driver: SupervisorDriver

    private var running = false
    private var sourceOpen = false
    /// Ends the loop's wait when something changed (see ``LoopWakeUp``).
    private let wake = LoopWakeUp()

    /// The last change in the stream (nil: none yet).
    private var position: SourcePosition?
    /// The stored bytes of the source's last entry in the stream (parsed when a round starts).
    private var lastEntryBytes: [UInt8]?
    private var hintStored: Offset?
    /// While the stream (kept elsewhere: a cluster's NATS) cannot answer: the wait before asking again.
    private var storeRetry = StoreRetryBackoff()
    private var appendedEntries: UInt64 = 0
    /// Appends the stream refused because another writer appended for this source first.
    private var fencedAppends: UInt64 = 0
    private var skippedChanges: UInt64 = 0
    private var transactions: UInt64 = 0
    private var rounds: UInt64 = 0
    private var lastError: String?
    private var lastAppendWallMs: UInt64?
    /// Wall-clock time (ms since 1970) up to which every commit of the source is known to be in
    /// the stream: the start of the last round that read everything the source had, or the
    /// commit time of the newest transaction read, whichever is later. The lag in time counts
    /// from it.
    private var completeThroughWallMs: UInt64?

    /// Entries read per page while looking for the position in the stream's tail.
    static let tailReadEntriesMax = 1_000

    /// - Parameters:
    ///   - startPaused: start in `paused` (an operator paused the source before a restart).
    /// - Throws: ``LinkConfigurationError`` naming the invalid field.
    public init(
        name: String, source: any ChangeSource, stream: any CaptureStream,
        configuration: LinkSupervisorConfiguration = LinkSupervisorConfiguration(),
        clock: any LinkClock = SystemLinkClock(), syncLog: SyncLog? = nil,
        logger: Logger = Logger(label: "orgsync.source"), randomSeed: UInt64 = UInt64.random(in: UInt64.min...UInt64.max),
        startPaused: Bool = false,
        wallClockMs: @escaping @Sendable () -> UInt64 = { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) }
    ) throws(LinkConfigurationError) {
        try configuration.validate()
        self.name = name
        self.source = source
        self.stream = stream
        self.streamName = stream.streamName
        self.configuration = configuration
        self.clock = clock
        self.syncLog = syncLog ?? SyncLog.inMemory(recordsMax: configuration.syncLogRecordsMax)
        self.logger = logger
        self.logger[metadataKey: "source"] = .string(name)
        self.driver = SupervisorDriver(configuration: configuration, nowMs: clock.nowMs(), startPaused: startPaused, randomSeed: randomSeed)
        self.wallClockMs = wallClockMs
    }

    // MARK: - Running

    /// Captures and supervises until cancelled. Throws only when capture cannot go on safely:
    /// the stream cannot be read or refuses an append (skipping would lose changes). A stream
    /// kept elsewhere that cannot answer now (``LinkStoreUnavailable``) is waited out, and
    /// another writer's append for the source (``CaptureFenced``) is read back.
    public func run() async throws {
        guard running == false else { throw SourceSupervisorError.alreadyRunning(source: name) }
        running = true
        var failure: (any Error)?
        do {
            try await recoverPositionWhenTheStoreAnswers()
            logger.info("capture starts after \(position.map { "\($0)" } ?? "nothing (no entry of this source in the stream)")")
            take(driver.start())
            while !Task.isCancelled { try await step() }
        } catch where !(error is CancellationError) {
            failure = error
            lastError = "\(error)"
            logger.error("source stopped: \(error)")
        } catch {}
        driver.consuming = false
        wake.cancel()
        if sourceOpen || driver.closeRequested { await closeSource() }
        running = false
        if let failure { throw failure }
    }

    /// The last position recorded in the stream by this source — the largest one in the entries
    /// from the hint (or the stream's start) to the end — and the last entry that records it.
    /// A stream that keeps the source's appends apart names the last one at once
    /// (``CaptureStream/lastAppend(source:)``, which also fences the next append on it).
    func recoverPosition() async throws -> (SourcePosition?, [UInt8]?) {
        var found: (position: SourcePosition, entry: [UInt8])?
        if let lastAppend = try await stream.lastAppend(source: name) {
            latest(in: lastAppend, after: &found)
            return (found?.position, found?.entry)
        }
        let (start, end) = try await stream.bounds()
        var offset = max(try await stream.loadHint(source: name) ?? start, start)
        while offset < end {
            let entries = try await stream.read(from: offset, maxCount: Self.tailReadEntriesMax)
            guard let last = entries.last else { break }
            latest(in: entries, after: &found)
            offset = Offset(last.offset.rawValue + 1)
        }
        return (found?.position, found?.entry)
    }

    /// Reads the position (``recoverPosition()``), asking again with backoff while a stream kept
    /// elsewhere cannot answer (``LinkStoreUnavailable``: NATS away, a stream electing its
    /// leader): the source appends nothing until it knows where it stands, and does not stop.
    private func recoverPositionWhenTheStoreAnswers() async throws {
        while true {
            do {
                (position, lastEntryBytes) = try await recoverPosition()
                if storeRetry.answered() { lastError = nil }
                return
            } catch let error as LinkStoreUnavailable {
                try await clock.sleep(untilMs: clock.nowMs() &+ storeCannotAnswer(error, "cannot read the source's position in the stream yet; asking again"))
            }
        }
    }

    /// The stream could not answer: says why (log and `lastError`); the wait before asking again, ms.
    private func storeCannotAnswer(_ error: LinkStoreUnavailable, _ message: Logger.Message) -> UInt64 {
        let delayMs = storeRetry.failed()
        lastError = "\(error)"
        logger.warning(message, metadata: ["error": "\(error)", "retry_ms": "\(delayMs)"])
        return delayMs
    }

    /// Moves `found` to the latest position recorded in `entries` (the last entry recording it).
    private func latest(in entries: [Entry], after found: inout (position: SourcePosition, entry: [UInt8])?) {
        for entry in entries {
            if let position = source.position(of: entry), found.map({ position >= $0.position }) ?? true {
                found = (position, entry.raw)
            }
        }
    }

    private func step() async throws {
        wake.reset()  // this step looks at everything afresh
        if driver.closeRequested { return await closeSource() }
        if let probeID = driver.pendingProbeID {
            driver.pendingProbeID = nil
            return await probe(probeID)
        }
        if driver.consuming {
            guard let round = try await captureRound() else { return }
            if round.caughtUp { await waitForWakeUp(untilMs: clock.nowMs().saturatingAdd(source.pollIntervalMs)) }
            return
        }
        if fireTimerIfDue() { return }
        await waitForWakeUp(untilMs: driver.machine.timerDueMs)
        _ = fireTimerIfDue()
    }

    /// One round; nil when it failed (the source is then suspended). Rethrows what the stream
    /// threw: that stops the supervisor.
    private func captureRound() async throws -> CaptureRound? {
        let sink = SupervisedSink(stream: stream)
        let startedWallMs = wallClockMs()
        let outcome: Result<CaptureRound, any Error>
        do {
            try await source.open()
            sourceOpen = true
            let lastEntry = lastEntryBytes.flatMap { try? Entry.parse($0) }
            outcome = .success(try await source.capture(after: position, lastEntry: lastEntry, into: sink))
        } catch {
            outcome = .failure(error)
        }
        // What the sink made durable counts whatever the round's outcome. Every figure of the
        // round is taken before the next await, so a status read meanwhile sees all or none.
        let appended = sink.appended()
        if let last = appended.last {
            position = last.through
            lastEntryBytes = last.lastEntry
            appendedEntries &+= appended.reduce(0) { $0 &+ UInt64($1.count) }
            lastAppendWallMs = wallClockMs()
        }
        if case .success(let round) = outcome {
            rounds &+= 1
            skippedChanges &+= UInt64(round.skippedChanges)
            transactions &+= UInt64(round.transactions)
            let through = round.caughtUp ? max(round.newestCommitTimeMs ?? 0, startedWallMs) : round.newestCommitTimeMs
            if let through { completeThroughWallMs = max(completeThroughWallMs ?? 0, through) }
        }
        if let fenced = sink.failure() as? CaptureFenced {
            // Another writer (the member the source moved to, or the one it moved from) appended
            // first: nothing of the refused append is stored.
            fencedAppends &+= 1
            lastError = "\(fenced)"
            logger.warning("append fenced; reading the source's position in the stream again", metadata: ["reason": "\(fenced.problem)"])
            return try await readThePositionAgain()
        }
        if let unavailable = sink.failure() as? LinkStoreUnavailable {
            // NATS failed during an append (stored or not: unknown) or before it: wait first.
            try await clock.sleep(untilMs: clock.nowMs() &+ storeCannotAnswer(unavailable, "cannot append now; reading the position again"))
            return try await readThePositionAgain()
        }
        if let failure = sink.failure() {
            if failure is CancellationError, Task.isCancelled { return nil }  // stopping, not failing
            throw SourceSupervisorError.streamFailed(source: name, reason: "\(failure)")
        }
        if let first = appended.last?.firstOffset, first != hintStored {
            do {
                try await stream.storeHint(source: name, offset: first)
                hintStored = first
            } catch let error as LinkStoreUnavailable {
                // Only a hint (an older one is also right, only slower): stored after a later round.
                logger.warning("cannot store the position hint now", metadata: ["error": "\(error)"])
            }
        }
        switch outcome {
        case .success(let round):
            lastError = nil
            handle(.applySucceeded)
            return round
        case .failure(let error):
            if error is CancellationError, Task.isCancelled { return nil }
            driver.closeRequested = true
            lastError = Self.describe(error)
            handle(.applyFailed(reason: Self.describe(error)))
            return nil
        }
    }

    /// After an append that stored nothing (fenced) or whose outcome is unknown: reads the
    /// position again — it tells what is stored — and makes the next round start afresh from what
    /// the database has not had acknowledged. The round counts as not done (nil).
    private func readThePositionAgain() async throws -> CaptureRound? {
        try await recoverPositionWhenTheStoreAnswers()
        hintStored = nil
        driver.closeRequested = true
        return nil
    }

    private func probe(_ probeID: UInt64) async {
        do {
            try await source.probe()
            sourceOpen = true
            handle(.probeAnswered(probeID: probeID))
        } catch {
            if Task.isCancelled { return }
            driver.closeRequested = true
            lastError = Self.describe(error)
            handle(.probeFailed(probeID: probeID, reason: Self.describe(error)))
        }
    }

    private func closeSource() async {
        driver.closeRequested = false
        sourceOpen = false
        await source.close()
    }

    static func describe(_ error: any Error) -> String { Link.describe(error) }

    // MARK: - Timers and waiting

    private func fireTimerIfDue() -> Bool {
        driver.timerIsDue(nowMs: clock.nowMs()) && handle(.timerFired)
    }

    /// Sleeps until `untilMs` (nil: until woken) or a kick.
    private func waitForWakeUp(untilMs: UInt64?) async {
        let clock = self.clock
        await wake.wait {
            if let untilMs { try? await clock.sleep(untilMs: untilMs) } else { await waitUntilCancelled() }
        }
    }

    // MARK: - The state machine

    /// Feeds an event to the machine; records its transitions and wakes the loop if it acted.
    @discardableResult
    private func handle(_ event: LinkEvent) -> Bool {
        take(driver.handle(event, nowMs: clock.nowMs()))
    }

    @discardableResult
    private func take(_ outcome: SupervisorDriver.Outcome) -> Bool {
        for transition in outcome.transitions { record(transition) }
        if outcome.acted { wake.kick() }
        return outcome.acted
    }

    private func record(_ transition: LinkTransition) {
        syncLog.record(transition, state: driver.machine.state, timeMs: wallClockMs(), logger: logger)
    }
}

// MARK: - Operator requests and status

extension SourceSupervisor {
    /// Pauses capture: nothing is read, the connection is closed, the slot keeps the position.
    @discardableResult
    public func suspend(reason: String = "paused by operator") -> LinkState {
        handle(.operatorSuspend(reason: reason))
        return driver.machine.state
    }

    /// Resumes through verification (K probes), or at once with `force`.
    @discardableResult
    public func resume(force: Bool = false) -> LinkState {
        handle(.operatorResume(force: force))
        return driver.machine.state
    }

    public func status() async -> SourceStatus {
        let nowWallMs = wallClockMs()
        return SourceStatus(
            source: name, stream: streamName, state: driver.machine.state, heldDown: driver.machine.heldDownUntilMs != nil,
            position: position.map(SourceStatus.Position.init), lagBytes: await source.lagBytes(),
            lagMs: completeThroughWallMs.map { nowWallMs >= $0 ? nowWallMs - $0 : 0 },
            lastAppendTimeMs: lastAppendWallMs, lastError: lastError,
            probeSuccessCount: driver.machine.probeSuccessCount, probeThreshold: configuration.probeThreshold,
            timeInStateMs: driver.machine.timeInStateMs(nowMs: clock.nowMs()), suspensionCount: driver.machine.suspensionCount,
            appendedEntries: appendedEntries, skippedChanges: skippedChanges, fencedAppends: fencedAppends, transactions: transactions,
            rounds: rounds, isRunning: running)
    }
}

/// The sink a round appends through: records what became durable, and a failure of the stream
/// (which must stop the supervisor, not suspend the source).
final class SupervisedSink: CaptureSink {
    struct Appended {
        var firstOffset: Offset
        var through: SourcePosition
        var count: Int
        var lastEntry: [UInt8]?
    }

    private let stream: any CaptureStream
    private let state = Mutex<(appended: [Appended], failure: (any Error)?)>(([], nil))

    init(stream: any CaptureStream) { self.stream = stream }

    func append(_ entries: [[UInt8]], through: SourcePosition) async throws {
        do {
            let result = try await stream.append(entries)
            state.withLock {
                $0.appended.append(Appended(firstOffset: Offset(result.firstOffset), through: through, count: entries.count,
                                            lastEntry: entries.last))
            }
        } catch {
            state.withLock { $0.failure = error }
            throw error
        }
    }

    /// The appends made durable, in order (one per call; `count` entries each).
    func appended() -> [Appended] { state.withLock { $0.appended } }
    func failure() -> (any Error)? { state.withLock { $0.failure } }
}

/// A snapshot of one capture source, for status, metrics and the API.
public struct SourceStatus: Sendable, Hashable, Codable {
    public var source: String
    public var stream: String
    public var state: LinkState
    public var heldDown: Bool
    /// The last change in the stream.
    public var position: Position?
    /// WAL between the database's current position and the slot's confirmed one, as last read.
    public var lagBytes: UInt64?
    /// How far behind the source the stream may be, in time: ms since the moment up to which
    /// every commit is known to be in the stream (the start of the last round that read
    /// everything, or the newest commit read). Grows while the source is suspended or behind;
    /// stays under the poll interval plus a round while it keeps up. Nil before the first round.
    public var lagMs: UInt64?
    /// Wall-clock time of the last append, ms since 1970.
    public var lastAppendTimeMs: UInt64?
    public var lastError: String?
    public var probeSuccessCount: Int
    public var probeThreshold: Int
    public var timeInStateMs: UInt64
    public var suspensionCount: Int
    /// Entries appended since the supervisor started (a change that moved a row's key is two).
    public var appendedEntries: UInt64
    /// Changes read again that the stream already held (after a restart).
    public var skippedChanges: UInt64
    /// Appends the stream refused because another writer appended for this source first
    /// (``CaptureFenced``): each was read again, none stored twice.
    public var fencedAppends: UInt64
    public var transactions: UInt64
    public var rounds: UInt64
    public var isRunning: Bool

    public struct Position: Sendable, Hashable, Codable {
        public var commit: UInt64
        public var change: UInt32
        public init(_ position: SourcePosition) {
            commit = position.commit
            change = position.change
        }
    }

    public init(
        source: String, stream: String, state: LinkState, heldDown: Bool = false, position: Position? = nil,
        lagBytes: UInt64? = nil, lagMs: UInt64? = nil, lastAppendTimeMs: UInt64? = nil, lastError: String? = nil, probeSuccessCount: Int = 0,
        probeThreshold: Int = 3, timeInStateMs: UInt64 = 0, suspensionCount: Int = 0, appendedEntries: UInt64 = 0,
        skippedChanges: UInt64 = 0, fencedAppends: UInt64 = 0, transactions: UInt64 = 0, rounds: UInt64 = 0, isRunning: Bool = true
    ) {
        self.source = source
        self.stream = stream
        self.state = state
        self.heldDown = heldDown
        self.position = position
        self.lagBytes = lagBytes
        self.lagMs = lagMs
        self.lastAppendTimeMs = lastAppendTimeMs
        self.lastError = lastError
        self.probeSuccessCount = probeSuccessCount
        self.probeThreshold = probeThreshold
        self.timeInStateMs = timeInStateMs
        self.suspensionCount = suspensionCount
        self.appendedEntries = appendedEntries
        self.skippedChanges = skippedChanges
        self.fencedAppends = fencedAppends
        self.transactions = transactions
        self.rounds = rounds
        self.isRunning = isRunning
    }
}

/// Why a source supervisor stopped or refused.
public enum SourceSupervisorError: Error, Sendable, Hashable, CustomStringConvertible {
    case alreadyRunning(source: String)
    /// The stream refused an append or could not be read: capture stops rather than skip.
    case streamFailed(source: String, reason: String)

    public var description: String {
        switch self {
        case .alreadyRunning(let source): "source \(source) is already running"
        case .streamFailed(let source, let reason): "source \(source): the stream failed: \(reason)"
        }
    }
}
