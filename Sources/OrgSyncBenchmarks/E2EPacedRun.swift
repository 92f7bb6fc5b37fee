import Foundation
import OrgSyncCore
import OrgSyncLog
import Synchronization

/// `e2e --paced`: the apply capacity of the link and its target, then a producer at fixed
/// shares of it. The I/O of the measurement; what the numbers mean is decided in
/// ``PacingSchedule`` and ``PacedAnalysis``.
extension E2EBenchmark {
    /// Entries applied before a paced run's clock starts, so that the target's tables exist and
    /// its connections are open when the first timed entry arrives.
    static let paceWarmUpEntryCount = 1_000
    /// Entries per append while the capacity measurement writes its backlog.
    static let backlogAppendBatch = 1_000
    /// What the producer offers while the loaded capacity is measured, as a share of the idle
    /// capacity: more than the link can apply, so that it falls behind and reads full batches.
    static let loadedCapacityOfferedShare = 1.2
    /// The share of the loaded measurement (as long as a pace) left out before its rate is taken:
    /// its first half, where the link is not yet behind by full batches and the target is small.
    /// A target that slows as its tables grow (SQLite: ~27 000 entries/s on a fresh file, ~20 000
    /// after a million entries, 2026-11-29) is held to the rate it sustains at the size a pace
    /// reaches, not to its first seconds' rate, which a 90 % pace would outrun by its end.
    static let loadedCapacitySettleShare = 0.5
    /// Longest wait for the link to apply what a paced run appended after the producer stopped, s.
    static let paceDrainBoundSeconds = 300.0
    /// Longest wait for the warm-up entries to be applied, s.
    static let paceWarmUpBoundSeconds = 60.0

    /// The link catching up a backlog: entries/s from its first commit to its last.
    struct Capacity: Sendable {
        var appliedCount: Int
        var seconds: Double
        var entriesPerSecond: Double
        /// The loaded measurement's rate over the part left out (its first half), for the report.
        var settlingEntriesPerSecond: Double?
    }

    func measurePaced(_ workload: [[UInt8]], target: E2ETarget, directory: String) async throws -> PacedReport {
        let percents = try pacePercents()
        let idle = try await measureCapacity(workload, target: target, directory: directory + "/capacity")
        // The loaded measurement and the fastest pace both draw on one prepared workload.
        let loadedOffered = idle.entriesPerSecond * Self.loadedCapacityOfferedShare
        let offeredMax = max(loadedOffered * paceSeconds, (percents.max() ?? 100) / 100 * idle.entriesPerSecond * paceSeconds)
        let neededDouble = offeredMax.rounded(.up) + Double(Self.paceWarmUpEntryCount)
        guard neededDouble <= Double(PacingSchedule.entryCountMax) else {
            throw ValidationErrorText("the paced runs need more than \(PacingSchedule.entryCountMax) entries: lower --pace-seconds")
        }
        let entries = try pacedEntries(workload, count: Int(neededDouble))
        var loaded: Capacity?
        if capacityBasis == .loaded {
            loaded = try await measureLoadedCapacity(
                entries, offeredEntriesPerSecond: loadedOffered, target: target, directory: directory + "/capacity-loaded")
        }
        let basis = loaded ?? idle
        var runs: [PacedRunSummary] = []
        for (index, percent) in percents.enumerated() {
            runs.append(try await measurePace(
                entries, percent: percent, capacity: basis, target: target, phase: "pace\(index + 1)",
                directory: directory + "/pace\(index + 1)"))
        }
        return PacedReport(
            capacity: basis, idleCapacity: idle, loadedCapacity: loaded, loadedOfferedEntriesPerSecond: loadedOffered, runs: runs,
            target: target.label, targetName: target.name)
    }

    /// The workload, long enough for the fastest pace: every pace applies the same entries into a
    /// fresh target, so no insert meets its own key from an earlier pass. A generated workload is
    /// extended with the same seed; a file must be long enough.
    private func pacedEntries(_ workload: [[UInt8]], count: Int) throws -> [[UInt8]] {
        guard count > workload.count else { return workload }
        guard self.workload.input == nil else {
            throw ValidationErrorText(
                "--paced needs \(count) entries for the fastest pace and --input holds \(workload.count): give a longer file, or lower --pace-seconds or --pace-percent")
        }
        var generator = WorkloadGenerator(seed: self.workload.seed)
        return (0..<count).map { _ in generator.next() }
    }

    // MARK: - Capacity

    /// Appends the workload as a backlog, then lets a link catch it up for at most
    /// --capacity-seconds; the rate is taken between its first and last commit.
    func measureCapacity(_ workload: [[UInt8]], target: E2ETarget, directory: String) async throws -> Capacity {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let log = try StreamLog.open(dataDirectory: directory, name: "bench")
        var index = 0
        while index < workload.count {
            let end = min(workload.count, index + Self.backlogAppendBatch)
            _ = try await log.append(Array(workload[index..<end]))
            index = end
        }
        let link = try startLink(on: log, target: target, phase: "capacity", directory: directory)
        defer { link.task.cancel() }
        let deadlineNs = nowNs() + UInt64(capacitySeconds * 1e9)
        while link.cursors.latest < UInt64(workload.count), nowNs() < deadlineNs {
            // A benchmark's wait: the rate comes from the commits' own times.
            try await Task.sleep(for: .milliseconds(1))
        }
        let status = await link.stop()
        let commits = link.cursors.stores().map { CursorCommit(ns: $0.ns, offset: $0.offset) }
        guard let rate = PacedAnalysis.catchUpRate(commits), let first = commits.first, let last = commits.last else {
            throw ValidationErrorText(
                "capacity: the link committed fewer than two batches in \(fmt(capacitySeconds, 0)) s (link \(status.state), last error: \(status.lastError ?? "none"))")
        }
        return Capacity(
            appliedCount: Int(last.offset - first.offset), seconds: Double(last.ns - first.ns) / 1e9, entriesPerSecond: rate)
    }

    /// The link's apply rate while an open-loop producer on the paced cadence (an append at most
    /// every --pace-append-interval-ms, fsync always) offers more than it can apply for as long
    /// as a pace: the rate the link and its target sustain with the producer's appends and fsyncs
    /// on the same cores and disk, and the target as large as a pace makes it. Taken from the
    /// link's commits between ``loadedCapacitySettleShare`` of the run and the producer's end,
    /// when the link is behind and reads full batches.
    func measureLoadedCapacity(
        _ entries: [[UInt8]], offeredEntriesPerSecond: Double, target: E2ETarget, directory: String
    ) async throws -> Capacity {
        let run = try await startPacedLink(entries, target: target, phase: "capacity_loaded", directory: directory)
        defer { run.task.cancel() }
        guard let schedule = PacingSchedule(
            startNs: nowNs(), entriesPerSecond: offeredEntriesPerSecond, durationSeconds: paceSeconds,
            appendBatchMax: appendBatch, appendIntervalMinNs: UInt64(paceAppendIntervalMs * 1e6))
        else { throw ValidationErrorText("loaded capacity: no timetable for \(fmt(offeredEntriesPerSecond, 1)) entries/s") }
        guard run.warmUp + schedule.entryCount <= entries.count else {
            throw ValidationErrorText("loaded capacity: \(schedule.entryCount) entries needed, \(entries.count - run.warmUp) prepared")
        }
        let production = try await Self.produce(
            Array(entries[run.warmUp..<(run.warmUp + schedule.entryCount)]), schedule: schedule, log: run.log)
        let status = await run.stop()
        let settleNs = schedule.startNs + UInt64(paceSeconds * Self.loadedCapacitySettleShare * 1e9)
        let commits = run.cursors.stores().map { CursorCommit(ns: $0.ns, offset: $0.offset) }
        let window = commits.filter { $0.ns >= settleNs && $0.ns <= production.lastAppendEndNs }
        guard let rate = PacedAnalysis.catchUpRate(window), let first = window.first, let last = window.last else {
            throw ValidationErrorText(
                "loaded capacity: the link committed fewer than two batches while the producer ran (link \(status.state), last error: \(status.lastError ?? "none"))")
        }
        return Capacity(
            appliedCount: Int(last.offset - first.offset), seconds: Double(last.ns - first.ns) / 1e9, entriesPerSecond: rate,
            settlingEntriesPerSecond: PacedAnalysis.catchUpRate(commits.filter { $0.ns < settleNs }))
    }

    /// A running link of a measurement, on a stream of its own.
    struct MeasuredLink {
        var log: StreamLog
        var cursors: TimedCursorStore
        var supervisor: LinkSupervisor
        var task: Task<Void, any Error>
        /// Entries appended and applied before the timed ones (the first of `entries`; paced runs).
        var warmUp = 0

        /// Stops the link and closes its stream; the link's status just before.
        func stop() async -> LinkStatus {
            let status = await supervisor.status()
            task.cancel()
            _ = try? await task.value
            await log.close()
            return status
        }
    }

    /// A link from the start of `log` into a fresh target, running.
    private func startLink(on log: StreamLog, target: E2ETarget, phase: String, directory: String) throws -> MeasuredLink {
        let cursors = TimedCursorStore(log: log)
        var configuration = LinkSupervisorConfiguration()
        configuration.batchEntriesMax = linkBatch
        let supervisor = try LinkSupervisor(
            name: "e2e", source: StreamLogLinkSource(log: log), adapter: try target.makeAdapter(phase: phase, directory: directory),
            cursorStore: cursors, configuration: configuration, logger: Self.quietLogger)
        return MeasuredLink(log: log, cursors: cursors, supervisor: supervisor, task: Task { try await supervisor.run() })
    }

    /// A fresh stream and a link on it into a fresh target, the warm-up entries applied (the
    /// target's tables exist and its connections are open).
    private func startPacedLink(_ entries: [[UInt8]], target: E2ETarget, phase: String, directory: String) async throws -> MeasuredLink {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var link = try startLink(
            on: try StreamLog.open(dataDirectory: directory, name: "bench"), target: target, phase: phase, directory: directory)
        link.warmUp = min(Self.paceWarmUpEntryCount, entries.count)
        do {
            _ = try await link.log.append(Array(entries[0..<link.warmUp]))
            try await link.cursors.waitForCursor(UInt64(link.warmUp), boundSeconds: Self.paceWarmUpBoundSeconds)
        } catch {
            link.task.cancel()
            throw error
        }
        return link
    }

    // MARK: - One pace

    func measurePace(
        _ entries: [[UInt8]], percent: Double, capacity: Capacity, target: E2ETarget, phase: String, directory: String
    ) async throws -> PacedRunSummary {
        let run = try await startPacedLink(entries, target: target, phase: phase, directory: directory)
        let (log, cursors, supervisor, warmUp) = (run.log, run.cursors, run.supervisor, run.warmUp)
        defer { run.task.cancel() }

        guard let schedule = PacingSchedule(
            startNs: nowNs(), entriesPerSecond: capacity.entriesPerSecond * percent / 100, durationSeconds: paceSeconds,
            appendBatchMax: appendBatch, appendIntervalMinNs: UInt64(paceAppendIntervalMs * 1e6))
        else { throw ValidationErrorText("pace \(fmt(percent, 0)) %: no timetable for \(fmt(capacity.entriesPerSecond * percent / 100, 1)) entries/s") }
        guard warmUp + schedule.entryCount <= entries.count else {
            throw ValidationErrorText("pace \(fmt(percent, 0)) %: \(schedule.entryCount) entries needed, \(entries.count - warmUp) prepared")
        }
        let timed = Array(entries[warmUp..<(warmUp + schedule.entryCount)])
        let sampling = Task { await Self.sampleLag(supervisor, schedule: schedule, intervalMs: paceLagSampleMs, durationSeconds: paceSeconds) }
        let production: ProducerRecord
        do {
            production = try await Self.produce(timed, schedule: schedule, log: log)
        } catch {
            sampling.cancel()
            throw error
        }
        let lagSamples = await sampling.value

        // Every appended entry's latency needs the commit that covers it: wait for the drain.
        let endOffset = production.firstOffset + UInt64(production.appendedCount)
        let drainDeadlineNs = nowNs() + UInt64(Self.paceDrainBoundSeconds * 1e9)
        while cursors.latest < endOffset, nowNs() < drainDeadlineNs {
            try await Task.sleep(for: .milliseconds(1))
        }
        let endNs = nowNs()
        let status = await run.stop()

        let commits = cursors.stores().map { CursorCommit(ns: $0.ns, offset: $0.offset) }
        let (latencies, unapplied) = PacedAnalysis.entryLatenciesNs(
            entryCount: production.appendedCount, firstOffset: production.firstOffset, dueNs: schedule.dueNs, commits: commits,
            endNs: endNs)
        return PacedRunSummary(
            pacePercent: percent, schedule: schedule, durationSeconds: paceSeconds, appendedCount: production.appendedCount,
            lastAppendEndNs: production.lastAppendEndNs,
            appliedEntriesPerSecond: PacedAnalysis.appliedRate(
                commits: commits, firstOffset: production.firstOffset, startNs: schedule.startNs, durationSeconds: paceSeconds),
            sortedLatenciesNs: latencies.sorted(), unappliedCount: unapplied, lagSamples: lagSamples,
            producerLateMaxNs: production.lateMaxNs, rejectedCount: status.rejectedCount,
            batches: PacedAnalysis.batches(commits: commits, firstOffset: production.firstOffset, endOffset: endOffset),
            targets: PacedTargets())
    }

    /// What the paced producer did.
    struct ProducerRecord: Sendable {
        /// The offset of the first timed entry; the rest follow it without gaps.
        var firstOffset: UInt64
        var appendedCount: Int
        var lastAppendEndNs: UInt64
        /// How far behind its timetable an append started at worst (the producer's own delay,
        /// included in the latencies).
        var lateMaxNs: UInt64
    }

    /// Appends `entries` on `schedule`'s timetable (open loop).
    static func produce(_ entries: [[UInt8]], schedule: PacingSchedule, log: StreamLog) async throws -> ProducerRecord {
        var appended = 0
        var lastAppendStartNs: UInt64?
        var lastAppendEndNs = schedule.startNs
        var firstOffset: UInt64?
        var lateMaxNs: UInt64 = 0
        while true {
            let now = nowNs()
            switch schedule.nextStep(appendedCount: appended, lastAppendStartNs: lastAppendStartNs, nowNs: now) {
            case .finished:
                return ProducerRecord(
                    firstOffset: firstOffset ?? 0, appendedCount: appended, lastAppendEndNs: lastAppendEndNs, lateMaxNs: lateMaxNs)
            case .wait(let untilNs):
                try await Task.sleep(for: .nanoseconds(untilNs > now ? untilNs - now : 0))
            case .append(let range):
                let due = schedule.dueNs(range.lowerBound)
                lateMaxNs = max(lateMaxNs, now > due ? now - due : 0)
                lastAppendStartNs = now
                let result = try await log.append(Array(entries[range]))
                lastAppendEndNs = nowNs()
                // The latencies pair entry i with offset firstOffset + i: nothing else may append.
                let expectedFirst = (firstOffset ?? result.firstOffset) + UInt64(range.lowerBound)
                guard result.firstOffset == expectedFirst, result.count == range.count else {
                    throw ValidationErrorText("paced producer: append of \(range.count) got offsets \(result.firstOffset)…\(result.lastOffset), expected from \(expectedFirst)")
                }
                if firstOffset == nil { firstOffset = result.firstOffset }
                appended = range.upperBound
            }
        }
    }

    /// The link's lag every `intervalMs` after the schedule's start, through `durationSeconds`,
    /// on the clock (a late sample does not delay the next). Each sample carries its tick's
    /// time, so the one at the very end counts as within the run.
    static func sampleLag(_ supervisor: LinkSupervisor, schedule: PacingSchedule, intervalMs: Int, durationSeconds: Double) async -> [LagSample] {
        var samples: [LagSample] = []
        let intervalNs = UInt64(intervalMs) * 1_000_000
        let endNs = schedule.startNs + UInt64(durationSeconds * 1e9)
        var tickNs = schedule.startNs + intervalNs
        while tickNs <= endNs, !Task.isCancelled {
            let now = nowNs()
            if tickNs > now {
                do { try await Task.sleep(for: .nanoseconds(tickNs - now)) } catch { break }
            }
            let lag = await supervisor.status().lagCount
            samples.append(LagSample(seconds: Double(tickNs - schedule.startNs) / 1e9, lag: lag))
            tickNs += intervalNs
        }
        return samples
    }
}
