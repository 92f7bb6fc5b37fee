import ArgumentParser
import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncBroker
import OrgSyncServer
import Synchronization

/// `OrgSyncBenchmarks e2e`: the whole path — durable append to the segment log, a link
/// (``LinkSupervisor``) reading it, the `sqlite` or `postgres` adapter applying it — and the
/// link's recovery time after a target outage; or (`--paced`) append→applied latency and lag
/// with a producer at fixed shares of the measured apply capacity (E2EPacedRun.swift).
struct E2EBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "Append + apply through a link into SQLite or PostgreSQL: entries/s end to end, lag; recovery time after an outage; --paced: latency and lag at 50 % and 90 % of capacity.",
        discussion: """
            Target: --target sqlite (a fresh file per measurement) or postgres (the server of \
            ORGSYNC_TEST_PG_HOST/PORT/USER/PASSWORD/DB, `source .ci/postgres.sh`; a fresh schema per \
            measurement, all dropped at the end); both with `primary_key: org_key`. \
            Throughput: one producer appends the workload (fsync policy always) while a link applies \
            it into the target; entries/s from the first append to \
            lag 0, append-to-applied latency of each append, and the link's lag sampled every \
            --lag-sample-ms. Recovery: with a steady stream going, the target fails (a wrapper \
            adapter whose calls fail while a flag is set), stays down --outage-ms, comes back; \
            measured from the target coming back to the first applied batch, split into the wait for \
            the next probe (the backoff in progress), the verification (K probes --verify-interval-ms \
            apart) and the apply. Target: K × verify interval + 100 ms. \
            Paced (--paced, instead of the two above): first the apply capacity — idle: the link \
            catches up a backlog of --count entries, at most --capacity-seconds, nothing else running; \
            loaded (the default basis): the link's rate over the last half of a run as long as a pace \
            (--pace-seconds) in which a producer on the paced cadence offers 1.2 × the idle capacity, \
            so that the producer's appends and fsyncs share the cores and the disk as they do during \
            a pace and the target is as large as a pace makes it; then for each --pace-percent \
            an open-loop producer appends at that share of it for --pace-seconds (entries due on a \
            fixed timetable, appended together when they fall due during an append); every entry's \
            latency from its due time to the link's commit covering it, and the lag every second. \
            Targets: p99 ≤ 100 ms at 50 %; at every pace the lag's least-squares slope over the last \
            half ≤ 1 % of the offered rate (no growth trend).
            """
    )

    @OptionGroup var workload: WorkloadOptions
    @Option(help: "Where the link applies: sqlite or postgres (ORGSYNC_TEST_PG_* from .ci/postgres.sh).")
    var target: E2ETarget.Name = .sqlite
    @Option(help: "Scratch directory (default: a new temp dir, removed at the end).") var dataDir: String?
    @Option(help: "Entries per append call of the producer.") var appendBatch: Int = 100
    @Option(help: "Most entries the link applies in one batch (one transaction in the target).") var linkBatch: Int = 500
    @Option(help: "Lag sampling interval, ms.") var lagSampleMs: Int = 10
    @Option(help: "Outages in the recovery measurement (0 skips it).") var outages: Int = 5
    @Option(help: "How long each outage lasts, ms.") var outageMs: Int = 500
    @Option(help: "K: probes needed to resume.") var probeThreshold: Int = 3
    @Option(help: "Time between the probes of a verification, ms.") var verifyIntervalMs: UInt64 = 200
    @Option(help: "First backoff between failed probes, ms.") var backoffBaseMs: UInt64 = 50
    @Option(help: "Longest backoff between failed probes, ms (jitter included).") var backoffCapMs: UInt64 = 100
    @Option(help: "Entries per append during the recovery measurement (every --recovery-append-interval-ms).")
    var recoveryAppendBatch: Int = 20
    @Option(help: "Pace of the producer during the recovery measurement, ms between appends.")
    var recoveryAppendIntervalMs: Int = 5
    @Flag(help: "Measure the apply capacity, then latency and lag with a producer paced at --pace-percent of it (instead of throughput and recovery).")
    var paced = false
    @Option(help: "Paced: shares of the measured capacity to run at, percent, comma-separated.")
    var pacePercent = "50,90"
    @Option(help: "Paced: how long each pace runs, s.") var paceSeconds: Double = 60
    @Option(help: "Paced: the capacity the paces are shares of: loaded (applying while a producer appends) or idle (catching up a backlog alone).")
    var capacityBasis: CapacityBasis = .loaded
    @Option(help: "Paced: longest the idle capacity measurement may run (catching up --count entries), s.")
    var capacitySeconds: Double = 15
    @Option(help: "Paced: shortest time between two appends, ms; the entries due meanwhile go in one append (at most --append-batch).")
    var paceAppendIntervalMs: Double = 1
    @Option(help: "Paced: lag sampling interval, ms.") var paceLagSampleMs: Int = 1_000
    @Flag(help: "Print RESULT lines instead of the Markdown tables.") var json = false

    func validate() throws {
        guard appendBatch >= 1, linkBatch >= 1, lagSampleMs >= 1, outages >= 0, outageMs >= 0, probeThreshold >= 1,
            verifyIntervalMs >= 1, backoffBaseMs >= 1, backoffCapMs >= backoffBaseMs, recoveryAppendBatch >= 1,
            recoveryAppendIntervalMs >= 0
        else { throw ValidationError("counts and intervals must be positive, and the backoff cap at least its base") }
        guard paceSeconds.isFinite, paceSeconds >= 1, paceSeconds <= 86_400, capacitySeconds.isFinite, capacitySeconds >= 1,
            capacitySeconds <= 86_400, paceAppendIntervalMs.isFinite, paceAppendIntervalMs >= 0, paceAppendIntervalMs <= 60_000,
            paceLagSampleMs >= 1, paceLagSampleMs <= 3_600_000
        else { throw ValidationError("--pace-seconds and --capacity-seconds must be 1…86400, --pace-append-interval-ms 0…60000, --pace-lag-sample-ms 1…3600000") }
        _ = try pacePercents()
    }

    /// What `--pace-percent` is a share of.
    enum CapacityBasis: String, ExpressibleByArgument, CaseIterable, Sendable {
        case loaded, idle
    }

    /// `--pace-percent` as numbers: each above 0 and at most 1000.
    func pacePercents() throws -> [Double] {
        let parts = pacePercent.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        var percents: [Double] = []
        for part in parts {
            guard let value = Double(part), value.isFinite, value > 0, value <= 1_000 else {
                throw ValidationError("--pace-percent: '\(part)' is not a share of capacity in percent (above 0, at most 1000)")
            }
            percents.append(value)
        }
        guard !percents.isEmpty else { throw ValidationError("--pace-percent: give at least one share, e.g. 50,90") }
        return percents
    }

    func run() async throws {
        FreedMemory.limitArenas()  // as `orgsync serve` does
        bootstrapBenchmarkLogging()
        let (workload, source) = try self.workload.entries()
        let scratch = try dataDir ?? makeTempDir()
        defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: scratch) } }
        let header = "workload: \(workload.count) entries (\(source)); target \(self.target.rawValue); \(ProcessInfo.processInfo.activeProcessorCount) cores; load \(loadAverage())"
        let target = try E2ETarget(self.target)
        do {
            try await measure(workload, header: header, target: target, scratch: scratch)
        } catch {
            try? await target.cleanUp()
            throw error
        }
        try await target.cleanUp()
    }

    private func measure(_ workload: [[UInt8]], header: String, target: E2ETarget, scratch: String) async throws {
        if paced {
            let report = try await measurePaced(workload, target: target, directory: scratch + "/paced")
            print(json ? report.resultLines(options: self) : report.markdown(header: header, options: self))
            return
        }
        let throughput = try await measureThroughput(workload, target: target, directory: scratch + "/throughput")
        var recovery: [Recovery] = []
        if outages > 0 {
            recovery = try await measureRecovery(workload, target: target, directory: scratch + "/recovery")
        }
        if json {
            print(resultLine(throughput.row))
            if !recovery.isEmpty { print(resultLine(RecoveryRow(recovery, targetMs: targetMs, target: target, options: self))) }
        } else {
            print(markdown(header: header, target: target, throughput: throughput, recovery: recovery))
        }
    }

    /// Rejected entries (the workload has inserts of existing keys) are counted, not logged.
    static var quietLogger: Logger { Logger(label: "orgsync.link") { _ in SwiftLogNoOpLogHandler() } }

    var targetMs: Double { Double(UInt64(probeThreshold) * verifyIntervalMs + 100) }

    // MARK: - Throughput

    struct Throughput {
        var entryCount: Int
        var appendSeconds: Double
        var endToEndSeconds: Double
        var latenciesNs: [UInt64]
        var lagMax: UInt64
        var lagMean: Double
        var rejectedCount: Int
        var bytes: Int
        var appendBatch: Int
        var linkBatch: Int
        var target: E2ETarget.Name

        var row: E2EResultRow {
            E2EResultRow(
                mode: "e2e \(target.rawValue)", batch: appendBatch, durable: true, entries_per_s: Double(entryCount) / endToEndSeconds,
                p50_ms: percentileMs(latenciesNs, 50), p99_ms: percentileMs(latenciesNs, 99), producers: 1,
                mb_per_s: Double(bytes) / endToEndSeconds / 1e6, append_entries_per_s: Double(entryCount) / appendSeconds,
                link_batch: linkBatch, lag_max: lagMax, lag_mean: lagMean, rejected: rejectedCount, entries: entryCount)
        }
    }

    func measureThroughput(_ workload: [[UInt8]], target: E2ETarget, directory: String) async throws -> Throughput {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let log = try StreamLog.open(dataDirectory: directory, name: "bench")
        let cursors = TimedCursorStore(log: log)
        var configuration = LinkSupervisorConfiguration()
        configuration.batchEntriesMax = linkBatch
        let adapter = try target.makeAdapter(phase: "throughput", directory: directory)
        let supervisor = try LinkSupervisor(
            name: "e2e", source: StreamLogLinkSource(log: log), adapter: adapter, cursorStore: cursors, configuration: configuration,
            logger: Self.quietLogger)
        let link = Task { try await supervisor.run() }
        defer { link.cancel() }

        let total = workload.count
        let sampling = LagSampler(supervisor: supervisor, intervalMs: lagSampleMs)
        let sampler = Task { await sampling.run() }
        let start = nowNs()
        var acknowledgements: [(ns: UInt64, lastOffset: UInt64)] = []
        acknowledgements.reserveCapacity(total / appendBatch + 1)
        var index = 0
        while index < total {
            let slice = Array(workload[index..<min(total, index + appendBatch)])
            let result = try await log.append(slice)
            acknowledgements.append((nowNs(), result.lastOffset))
            index += slice.count
        }
        let appendEnd = nowNs()
        try await cursors.waitForCursor(UInt64(total), boundSeconds: 600)
        sampling.stop()
        let lag = await sampler.value
        let stores = cursors.stores()
        guard let done = stores.first(where: { $0.offset >= UInt64(total) }) else {
            throw ValidationErrorText("the link never stored cursor \(total)")
        }
        let status = await supervisor.status()
        link.cancel()
        _ = try? await link.value
        await log.close()
        return Throughput(
            entryCount: total, appendSeconds: Double(appendEnd - start) / 1e9, endToEndSeconds: Double(done.ns - start) / 1e9,
            latenciesNs: Self.latencies(acknowledgements, stores), lagMax: lag.max, lagMean: lag.mean,
            rejectedCount: status.rejectedCount, bytes: workload.reduce(0) { $0 + $1.count }, appendBatch: appendBatch,
            linkBatch: linkBatch, target: target.name)
    }

    /// For each append: from its acknowledgement to the first cursor store that covers its last
    /// entry (the entry is then in the target). Both lists are in time order.
    static func latencies(_ acks: [(ns: UInt64, lastOffset: UInt64)], _ stores: [(ns: UInt64, offset: UInt64)]) -> [UInt64] {
        var result: [UInt64] = []
        result.reserveCapacity(acks.count)
        var storeIndex = 0
        for ack in acks {
            while storeIndex < stores.count, stores[storeIndex].offset <= ack.lastOffset { storeIndex += 1 }
            guard storeIndex < stores.count else { break }
            let applied = stores[storeIndex].ns
            result.append(applied > ack.ns ? applied - ack.ns : 0)
        }
        return result.sorted()
    }

    // MARK: - Recovery

    struct Recovery {
        /// From the target coming back to the probe that started verification.
        var backoffWaitMs: Double
        /// From that first answered probe to the resume (K answers).
        var verificationMs: Double
        /// From the resume to the first batch committed in the target.
        var applyMs: Double
        var totalMs: Double { backoffWaitMs + verificationMs + applyMs }
        var lagAtRecovery: UInt64
    }

    func measureRecovery(_ workload: [[UInt8]], target: E2ETarget, directory: String) async throws -> [Recovery] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let log = try StreamLog.open(dataDirectory: directory, name: "bench")
        let clock = SystemLinkClock()
        var configuration = LinkSupervisorConfiguration()
        configuration.batchEntriesMax = linkBatch
        configuration.probeThreshold = probeThreshold
        configuration.verifyIntervalMs = verifyIntervalMs
        configuration.verifyWindowMs = verifyIntervalMs * UInt64(probeThreshold) * 2
        configuration.backoffBaseMs = backoffBaseMs
        configuration.backoffCapMs = backoffCapMs
        configuration.flapLimit = outages + 1  // these outages are the benchmark, not a flapping link
        let faulty = FaultInjectingAdapter(try target.makeAdapter(phase: "recovery", directory: directory), clock: clock)
        let supervisor = try LinkSupervisor(
            name: "e2e", source: StreamLogLinkSource(log: log), adapter: faulty, cursorStore: StreamLogCursorStore(log: log),
            configuration: configuration, clock: clock, logger: Self.quietLogger)
        let transitions = TransitionLog()
        let stream = await supervisor.transitions()
        let recording = Task { for await transition in stream { transitions.append(transition) } }
        let link = Task { try await supervisor.run() }
        let producer = PacedProducer(log: log, workload: workload, batch: recoveryAppendBatch, intervalMs: recoveryAppendIntervalMs)
        let producing = Task { try await producer.run() }
        defer {
            producer.stop()
            producing.cancel()
            link.cancel()
            recording.cancel()
        }

        var results: [Recovery] = []
        for outage in 1...outages {
            // Steady state first: the link has caught up with the stream.
            try await waitUntil("lag below \(recoveryAppendBatch * 4) before outage \(outage)", boundSeconds: 30) {
                await supervisor.status().lagCount <= UInt64(recoveryAppendBatch * 4)
            }
            faulty.startOutage()
            try await waitUntil("suspension \(outage)", boundSeconds: 10) { transitions.count(.suspended) >= outage }
            // The outage itself: a scenario length, not a wait for an event.
            try await Task.sleep(for: .milliseconds(outageMs))
            let backMs = faulty.endOutage()
            let lagAtRecovery = await supervisor.status().lagCount
            try await waitUntil("resume \(outage) and its first batch", boundSeconds: 30) {
                transitions.count(.resumed) >= outage && faulty.firstApplyAfterOutageMs != nil
            }
            guard let verifying = transitions.nth(.verifying, outage), let resumed = transitions.nth(.resumed, outage),
                let applied = faulty.firstApplyAfterOutageMs
            else { throw ValidationErrorText("outage \(outage): transitions missing") }
            results.append(Recovery(
                backoffWaitMs: Double(Int64(verifying.atMs) - Int64(backMs)), verificationMs: Double(resumed.atMs - verifying.atMs),
                applyMs: Double(Int64(applied) - Int64(resumed.atMs)), lagAtRecovery: lagAtRecovery))
        }
        producer.stop()
        try await producing.value
        link.cancel()
        _ = try? await link.value
        await log.close()
        return results
    }

    /// Polls `condition` every millisecond for at most `boundSeconds`. (A benchmark's wait: the
    /// times it reports are taken where the events happen, not here.)
    func waitUntil(_ what: String, boundSeconds: Double, _ condition: () async -> Bool) async throws {
        let deadline = nowNs() + UInt64(boundSeconds * 1e9)
        while !(await condition()) {
            guard nowNs() < deadline else { throw ValidationErrorText("timed out after \(boundSeconds) s waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    // MARK: - Report

    func markdown(header: String, target: E2ETarget, throughput t: Throughput, recovery: [Recovery]) -> String {
        var lines = ["<!-- \(header) -->"]
        lines.append("| e2e: append → log → link → \(target.name.rawValue) | entries | append batch | link batch | append-only entries/s | end-to-end entries/s | append→applied p50 ms | p99 ms | lag max | lag mean | rejected |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        let row = t.row
        lines.append("| \(target.label), fsync always | \(t.entryCount) | \(t.appendBatch) | \(t.linkBatch) | \(fmt(row.append_entries_per_s, 0)) | \(fmt(row.entries_per_s, 0)) | \(fmt(row.p50_ms, 1)) | \(fmt(row.p99_ms, 1)) | \(t.lagMax) | \(fmt(t.lagMean, 0)) | \(t.rejectedCount) |")
        guard !recovery.isEmpty else { return lines.joined(separator: "\n") }
        lines.append("")
        lines.append("Recovery: K = \(probeThreshold), verify interval \(verifyIntervalMs) ms, backoff \(backoffBaseMs)…\(backoffCapMs) ms, outage \(outageMs) ms, stream \(recoveryAppendBatch) entries every \(recoveryAppendIntervalMs) ms; target ≤ K × interval + 100 ms = \(fmt(targetMs, 0)) ms")
        lines.append("")
        lines.append("| outage | lag when the target came back | wait for next probe (backoff) ms | verification (K probes) ms | resume → first batch applied ms | target back → first batch ms | within target |")
        lines.append("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for (index, r) in recovery.enumerated() {
            lines.append("| \(index + 1) | \(r.lagAtRecovery) | \(fmt(r.backoffWaitMs, 0)) | \(fmt(r.verificationMs, 0)) | \(fmt(r.applyMs, 0)) | \(fmt(r.totalMs, 0)) | \(r.totalMs <= targetMs ? "yes" : "no") |")
        }
        let totals = recovery.map(\.totalMs).sorted()
        let verifications = recovery.map(\.verificationMs).sorted()
        lines.append("")
        lines.append("target back → first batch: median \(fmt(median(totals), 0)) ms, max \(fmt(totals.last ?? 0, 0)) ms; verification part alone: median \(fmt(median(verifications), 0)) ms (floor (K − 1) × interval = \(UInt64(probeThreshold - 1) * verifyIntervalMs) ms)")
        return lines.joined(separator: "\n")
    }
}

func median(_ sorted: [Double]) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

struct E2EResultRow: Encodable {
    var system = "orgsync"
    var mode: String
    var batch: Int
    var durable: Bool
    var entries_per_s: Double
    var p50_ms: Double
    var p99_ms: Double
    var producers: Int
    var mb_per_s: Double
    var append_entries_per_s: Double
    var link_batch: Int
    var lag_max: UInt64
    var lag_mean: Double
    var rejected: Int
    var entries: Int
}

/// The recovery measurement as one RESULT line: p50/p99 are the median and the worst time
/// from the target coming back to the first applied batch (entries_per_s is not measured: 0).
struct RecoveryRow: Encodable {
    var system = "orgsync"
    var mode: String
    var batch: Int
    var durable = true
    var entries_per_s = 0.0
    var p50_ms: Double
    var p99_ms: Double
    var producers = 1
    var target_ms: Double
    var backoff_wait_ms_median: Double
    var verification_ms_median: Double
    var apply_ms_median: Double
    var probe_threshold: Int
    var verify_interval_ms: UInt64
    var backoff_cap_ms: UInt64
    var outages: Int

    init(_ recovery: [E2EBenchmark.Recovery], targetMs: Double, target: E2ETarget, options: E2EBenchmark) {
        let totals = recovery.map(\.totalMs).sorted()
        mode = "e2e recovery \(target.name.rawValue)"
        batch = options.recoveryAppendBatch
        p50_ms = median(totals)
        p99_ms = totals.last ?? 0
        target_ms = targetMs
        backoff_wait_ms_median = median(recovery.map(\.backoffWaitMs).sorted())
        verification_ms_median = median(recovery.map(\.verificationMs).sorted())
        apply_ms_median = median(recovery.map(\.applyMs).sorted())
        probe_threshold = options.probeThreshold
        verify_interval_ms = options.verifyIntervalMs
        backoff_cap_ms = options.backoffCapMs
        outages = recovery.count
    }
}

// MARK: - Parts

/// Fault injection through the ``OrgAdapter`` protocol: while an outage is on, every call fails
/// as a lost connection would, before reaching the real adapter. Records when the first batch
/// after an outage was committed.
final class FaultInjectingAdapter: OrgAdapter {
    private let inner: any OrgAdapter
    private let clock: any LinkClock
    private let state = Mutex(State())

    private struct State {
        var down = false
        var backAtMs: UInt64?
        var firstApplyAfterOutageMs: UInt64?
    }

    init(_ inner: any OrgAdapter, clock: any LinkClock) {
        self.inner = inner
        self.clock = clock
    }

    func startOutage() {
        state.withLock {
            $0.down = true
            $0.backAtMs = nil
            $0.firstApplyAfterOutageMs = nil
        }
    }

    /// Ends the outage; returns the link-clock time the target came back.
    func endOutage() -> UInt64 {
        let now = clock.nowMs()
        state.withLock {
            $0.down = false
            $0.backAtMs = now
        }
        return now
    }

    var firstApplyAfterOutageMs: UInt64? { state.withLock { $0.firstApplyAfterOutageMs } }

    private func check() throws {
        if state.withLock({ $0.down }) { throw AdapterError.connection("injected outage", targetCode: "08006") }
    }

    func open() async throws {
        try check()
        try await inner.open()
    }

    func apply(_ batch: EntryBatch) async throws {
        try check()
        try await inner.apply(batch)
        let now = clock.nowMs()
        state.withLock { if $0.backAtMs != nil, $0.firstApplyAfterOutageMs == nil { $0.firstApplyAfterOutageMs = now } }
    }

    func probe() async throws {
        try check()
        try await inner.probe()
    }

    func appliedPosition() async throws -> AppliedPosition? {
        try check()
        return try await inner.appliedPosition()
    }

    func setAppliedPosition(_ position: AppliedPosition?) async throws {
        try check()
        try await inner.setAppliedPosition(position)
    }

    func close() async { await inner.close() }
}

/// The log's cursor store, recording when each cursor store happened (monotonic ns).
final class TimedCursorStore: LinkCursorStore {
    private let inner: StreamLogCursorStore
    private let recorded = Mutex<[(ns: UInt64, offset: UInt64)]>([])

    init(log: StreamLog) { self.inner = StreamLogCursorStore(log: log) }

    func load(link: String) async throws -> Offset? { try await inner.load(link: link) }

    func store(link: String, offset: Offset) async throws {
        try await inner.store(link: link, offset: offset)
        let now = nowNs()
        recorded.withLock { $0.append((now, offset.rawValue)) }
    }

    func stores() -> [(ns: UInt64, offset: UInt64)] { recorded.withLock { $0 } }

    var latest: UInt64 { recorded.withLock { $0.last?.offset ?? 0 } }

    /// Waits (polling every millisecond: the times come from the stores themselves) until the
    /// cursor reaches `offset`; fails when the bound passes.
    func waitForCursor(_ offset: UInt64, boundSeconds: Double) async throws {
        let deadline = nowNs() + UInt64(boundSeconds * 1e9)
        while latest < offset {
            guard nowNs() < deadline else { throw ValidationErrorText("the link did not reach offset \(offset) within \(boundSeconds) s") }
            try await Task.sleep(for: .milliseconds(1))
        }
    }
}

/// Samples a link's lag (entries) until stopped.
final class LagSampler: Sendable {
    private let supervisor: LinkSupervisor
    private let intervalMs: Int
    private let stopped = Atomic<Bool>(false)

    init(supervisor: LinkSupervisor, intervalMs: Int) {
        self.supervisor = supervisor
        self.intervalMs = intervalMs
    }

    func stop() { stopped.store(true, ordering: .relaxed) }

    func run() async -> (max: UInt64, mean: Double) {
        var maxLag: UInt64 = 0
        var sum = 0.0
        var count = 0
        while !stopped.load(ordering: .relaxed), !Task.isCancelled {
            let lag = await supervisor.status().lagCount
            maxLag = max(maxLag, lag)
            sum += Double(lag)
            count += 1
            try? await Task.sleep(for: .milliseconds(intervalMs))
        }
        return (maxLag, count > 0 ? sum / Double(count) : 0)
    }
}

/// Appends `batch` workload entries every `intervalMs` until stopped.
final class PacedProducer: Sendable {
    private let log: StreamLog
    private let workload: [[UInt8]]
    private let batch: Int
    private let intervalMs: Int
    private let stopped = Atomic<Bool>(false)

    init(log: StreamLog, workload: [[UInt8]], batch: Int, intervalMs: Int) {
        self.log = log
        self.workload = workload
        self.batch = batch
        self.intervalMs = intervalMs
    }

    func stop() { stopped.store(true, ordering: .relaxed) }

    func run() async throws {
        var index = 0
        while !stopped.load(ordering: .relaxed), !Task.isCancelled {
            let slice = (0..<batch).map { workload[(index + $0) % workload.count] }
            _ = try await log.append(slice)
            index += batch
            if intervalMs > 0 { try await Task.sleep(for: .milliseconds(intervalMs)) }
        }
    }
}

/// A link's transitions, for the benchmark to look up.
final class TransitionLog: Sendable {
    private let list = Mutex<[LinkTransition]>([])

    func append(_ transition: LinkTransition) { list.withLock { $0.append(transition) } }

    func count(_ event: SyncLogEvent) -> Int { list.withLock { $0.count { $0.event == event } } }

    /// The `n`-th (from 1) transition with `event`.
    func nth(_ event: SyncLogEvent, _ n: Int) -> LinkTransition? {
        list.withLock { list in
            let matching = list.filter { $0.event == event }
            return n >= 1 && n <= matching.count ? matching[n - 1] : nil
        }
    }
}
