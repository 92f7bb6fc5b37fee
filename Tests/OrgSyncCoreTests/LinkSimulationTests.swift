#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import OrgSyncCore
import OrgSyncPluginAPI
import OrgSyncTestSupport
import Testing

/// Deterministic simulation: a link against a seeded flaky target on a virtual clock.
///
/// Each run draws a configuration, an append schedule and a target schedule (outages, flaps,
/// rejections, retryable conflicts, lost acknowledgements) from its seed, runs the real
/// `LinkSupervisor` until the link has drained the stream, and checks that every entry was
/// applied exactly once and in order (or dead-lettered, if the target rejects it), and that
/// the link ends active with lag 0. Time is virtual (an auto-advancing `ManualClock`) and the
/// link's tasks take turns on one thread in a fixed order (`SingleThreadTaskExecutor`), so a run
/// replays exactly from its seed:
///
///     ORGSYNC_SIM_SEED=1234 swift test --filter LinkSimulationTests
///
/// `ORGSYNC_SIM_RUNS` changes the number of runs (default 10 000).
@Suite struct LinkSimulationTests {
    static let firstSeed: UInt64 = 0x0516_0000

    struct Outcome: Equatable {
        var problems: [String]
        /// The whole observable history, to compare replays.
        var applied: [Offset]
        var history: [String]
        var virtualEndMs: UInt64
    }

    static func configuration(_ random: inout SplitMix64) -> LinkSupervisorConfiguration {
        var c = LinkSupervisorConfiguration()
        c.probeThreshold = Int(1 + random.next() % 4)
        c.verifyIntervalMs = 20 + random.next() % 500
        c.verifyWindowMs = c.verifyIntervalMs * UInt64(c.probeThreshold - 1) + random.next() % 2_000
        c.backoffBaseMs = 10 + random.next() % 300
        c.backoffCapMs = c.backoffBaseMs + random.next() % 5_000
        c.jitterRatio = random.nextUnit() * 0.5
        c.flapLimit = Int(random.next() % 4)
        c.flapWindowMs = 1_000 + random.next() % 60_000
        c.holdDownMs = 100 + random.next() % 20_000
        c.retryableAttemptsMax = Int(1 + random.next() % 4)
        c.retryableBackoffBaseMs = 1 + random.next() % 100
        c.batchEntriesMax = Int(1 + random.next() % 16)
        return c
    }

    /// Virtual time a link may take past the schedule's horizon to drain.
    static let drainMarginMs: UInt64 = 3_600_000
    /// Real time after which a run that neither drained nor moved virtual time is a deadlock.
    static let deadlockBoundMs: UInt64 = 120_000

    static let quietLogger = Logger(label: "orgsync.simulation") { _ in SwiftLogNoOpLogHandler() }

    /// Runs one seed on a thread of its own (``SingleThreadTaskExecutor``): the link's tasks take
    /// turns in the same order on every run, so the seed replays exactly.
    static func simulate(seed: UInt64) async throws -> Outcome {
        let executor = SingleThreadTaskExecutor(name: "simulation")
        defer { executor.shutdown() }
        return try await withTaskExecutorPreference(executor) { try await simulate(seed: seed, on: executor) }
    }

    static func simulate(seed: UInt64, on executor: SingleThreadTaskExecutor) async throws -> Outcome {
        var random = SplitMix64(seed: seed)
        let clock = ManualClock(startMs: 0, autoAdvance: true)
        let entryCount = Int(1 + random.next() % 120)
        let horizonMs = 1_000 + random.next() % 30_000
        // Producers append in bursts, at up to 12 moments of the horizon.
        let burstTimesMs = (0..<(1 + random.next() % 12)).map { _ in random.next() % horizonMs }
        let appendTimesMs = (0..<entryCount).map { _ in burstTimesMs[Int(random.next() % UInt64(burstTimesMs.count))] }
        let source = ScheduledEntrySource(appendAtMs: appendTimesMs, clock: clock)
        // A quarter of the runs use a target that keeps no applied offset (like the webhook
        // adapter): exactly-once then rests on the cursor alone, so acknowledgements are not lost.
        let keepsAppliedOffset = random.next() % 4 != 0
        let target = ScriptedTarget(seed: seed, clock: clock, entryCount: entryCount, horizonMs: horizonMs,
                                    losesAcknowledgements: keepsAppliedOffset)
        let adapter = RecordingAdapter(keepsAppliedOffset: keepsAppliedOffset, script: target)
        let cursors = InMemoryCursorStore()
        let supervisor = try LinkSupervisor(
            name: "sim", source: source, adapter: adapter, cursorStore: cursors,
            configuration: configuration(&random), clock: clock, logger: quietLogger,
            randomSeed: random.next(), wallClockMs: { clock.nowMs() })
        let run = Task(executorPreference: executor) { try await supervisor.run() }
        var problems: [String] = []
        // The link must drain within a bound of virtual time: the schedule's horizon plus an hour
        // of its own timers (backoff, hold-down, verification are all far shorter). A link that
        // livelocks moves virtual time past it; the bound depends on the seed alone, never on how
        // busy the machine is (a 20 s wall-clock bound failed a replay that had drained, on a
        // loaded CI run). The wall-clock bound only ends a deadlock, which moves no time.
        let drainBoundMs = horizonMs + Self.drainMarginMs
        do {
            try await withTimeout(ms: Self.deadlockBoundMs, "the link to drain or virtual time to pass \(drainBoundMs) ms") {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { _ = try await source.drained.wait { $0 } }
                    group.addTask { try await clock.waitForTime(atLeastMs: drainBoundMs) }
                    defer { group.cancelAll() }
                    try await group.next()
                }
            }
            if !source.drained.value { problems.append("not drained after \(clock.nowMs()) ms of virtual time (bound \(drainBoundMs) ms)") }
        } catch {
            problems.append("\(error)")
        }
        let status = await supervisor.status()
        run.cancel()
        if case .failure(let error) = await run.result { problems.append("run() threw \(error)") }

        let expected = (0..<entryCount).map { Offset(UInt64($0)) }.filter { !target.rejectedOffsets.contains($0) }
        let applied = adapter.appliedOffsets
        if applied != expected {
            problems.append("applied \(applied.count) entries, expected \(expected.count): first difference at index \(zip(applied, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(applied.count, expected.count))")
        }
        let dead = supervisor.deadLetters.page(limit: .max).map(\.offset).sorted()
        if dead != target.rejectedOffsets.sorted() { problems.append("dead letters \(dead), rejected \(target.rejectedOffsets.sorted())") }
        if status.state != .active { problems.append("ended \(status.state), not active") }
        if status.lagCount != 0 || status.cursor != Offset(UInt64(entryCount)) {
            problems.append("ended with cursor \(status.cursor), lag \(status.lagCount)")
        }
        if cursors.backwardStoreCount.value != 0 { problems.append("the cursor moved backwards") }
        if adapter.target.value.callsWhileClosedCount != 0 { problems.append("adapter used without open() after a failure") }
        let suspendedRecords = supervisor.syncLog.page(limit: .max).filter { $0.event == .suspended }.count
        if suspendedRecords != status.suspensionCount { problems.append("\(status.suspensionCount) suspensions, \(suspendedRecords) logged") }
        let history = supervisor.syncLog.page(limit: .max).reversed().map { "\($0.linkClockMs) \($0.event.rawValue) \($0.reason)" }
        if !problems.isEmpty { problems.append("target: \(target.description)") }
        return Outcome(problems: problems, applied: applied, history: history, virtualEndMs: clock.nowMs())
    }

    static func environment(_ name: String) -> String? { ProcessInfo.processInfo.environment[name] }

    @Test func tenThousandSeededRuns() async throws {
        if let text = Self.environment("ORGSYNC_SIM_SEED"), let seed = UInt64(text) {
            let outcome = try await Self.simulate(seed: seed)
            print("seed \(seed): \(outcome.applied.count) applied, virtual time \(outcome.virtualEndMs) ms")
            for line in outcome.history { print("  \(line)") }
            #expect(outcome.problems.isEmpty, "seed \(seed): \(outcome.problems)")
            return
        }
        let runCount = Self.environment("ORGSYNC_SIM_RUNS").flatMap(Int.init) ?? 10_000
        let started = ContinuousClock.now
        // Runs are independent (each has its own clock, target and link): two workers share them.
        let workerCount = 2
        let results = try await withThrowingTaskGroup(of: (failures: [(UInt64, [String])], events: [String: Int]).self) { group in
            for worker in 0..<workerCount {
                group.addTask {
                    var failures: [(UInt64, [String])] = []
                    var events: [String: Int] = [:]
                    for index in stride(from: worker, to: runCount, by: workerCount) where failures.count < 5 {
                        // The runs have threads of their own but the workers' loops are on the pool:
                        // let every other test's timers and continuations in between runs.
                        await Task.yield()
                        let seed = Self.firstSeed + UInt64(index)
                        let outcome = try await Self.simulate(seed: seed)
                        for line in outcome.history { events[String(line.split(separator: " ")[1]), default: 0] += 1 }
                        if !outcome.problems.isEmpty { failures.append((seed, outcome.problems)) }
                    }
                    return (failures, events)
                }
            }
            return try await group.reduce(into: [(failures: [(UInt64, [String])], events: [String: Int])]()) { $0.append($1) }
        }
        let failures = results.flatMap(\.failures).sorted { $0.0 < $1.0 }
        let events = results.reduce(into: [String: Int]()) { total, result in total.merge(result.events, uniquingKeysWith: +) }
        let suspensions = events["suspended", default: 0]
        let elapsed = ContinuousClock.now - started
        print("simulation: \(runCount) runs, \(failures.count) failures, \(elapsed); events \(events.sorted { $0.key < $1.key })")
        for (seed, problems) in failures {
            Issue.record("simulation seed \(seed) failed — replay with ORGSYNC_SIM_SEED=\(seed): \(problems.joined(separator: "; "))")
        }
        // The schedules must actually drive links through every kind of event.
        #expect(suspensions > runCount / 4)
        // Operator-only events (and divergence, which needs a target from another stream) are
        // covered by LinkSupervisorTests.
        let operatorOnly: Set<SyncLogEvent> = [.entryResolved, .paused, .forcedResume, .cursorSet, .diverged, .positionReset]
        for event in SyncLogEvent.allCases where !operatorOnly.contains(event) {
            #expect(events[event.rawValue, default: 0] > 0, "no \(event.rawValue) in \(runCount) runs")
        }
    }

    @Test func aSeedReplaysExactly() async throws {
        // +80 and +8 510 ended differently from run to run while a link's tasks shared the pool.
        for seed in [Self.firstSeed + 3, Self.firstSeed + 77, Self.firstSeed + 80, Self.firstSeed + 1_234, Self.firstSeed + 8_510] {
            let first = try await Self.simulate(seed: seed)
            let second = try await Self.simulate(seed: seed)
            #expect(first == second)
        }
    }
}
