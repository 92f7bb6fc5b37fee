/// What `e2e --paced` reports: one summary per pace (built from the raw measurement by a pure
/// initializer), as a Markdown table or RESULT lines.

/// One pace's figures and verdict.
struct PacedRunSummary: Sendable, Equatable {
    var pacePercent: Double
    var offeredEntriesPerSecond: Double
    /// Entries appended over the time from the timetable's start to the last append's end.
    var appendedEntriesPerSecond: Double
    /// Entries the link committed within the run's duration, per second.
    var appliedEntriesPerSecond: Double
    var entryCount: Int
    var durationSeconds: Double
    var p50Ms: Double
    var p99Ms: Double
    var maxMs: Double
    var lagStart: UInt64
    var lagMiddle: UInt64
    var lagEnd: UInt64
    /// Least-squares slope of the lag over the run's last half, entries/s; nil with too few samples.
    var lagSlope: Double?
    var lagSeries: [UInt64]
    var producerLateMaxMs: Double
    /// Entries no commit covered within the drain bound (their latency is a lower bound).
    var unappliedCount: Int
    var rejectedCount: Int
    /// The link's commits that covered the run's entries, and the time between them.
    var batchCount: Int
    var batchIntervalMeanMs: Double
    var verdict: PacedVerdict

    init(
        pacePercent: Double, schedule: PacingSchedule, durationSeconds: Double, appendedCount: Int, lastAppendEndNs: UInt64,
        appliedEntriesPerSecond: Double, sortedLatenciesNs: [UInt64], unappliedCount: Int, lagSamples: [LagSample],
        producerLateMaxNs: UInt64, rejectedCount: Int, batches: (count: Int, intervalMeanMs: Double), targets: PacedTargets
    ) {
        self.pacePercent = pacePercent
        offeredEntriesPerSecond = schedule.entriesPerSecond
        let appendSeconds = lastAppendEndNs > schedule.startNs ? Double(lastAppendEndNs - schedule.startNs) / 1e9 : 0
        appendedEntriesPerSecond = appendSeconds > 0 ? Double(appendedCount) / appendSeconds : 0
        self.appliedEntriesPerSecond = appliedEntriesPerSecond
        entryCount = appendedCount
        self.durationSeconds = durationSeconds
        p50Ms = percentileMs(sortedLatenciesNs, 50)
        p99Ms = percentileMs(sortedLatenciesNs, 99)
        maxMs = Double(sortedLatenciesNs.last ?? 0) / 1e6
        let milestones = PacedAnalysis.lagMilestones(lagSamples, durationSeconds: durationSeconds)
        lagStart = milestones?.start ?? 0
        lagMiddle = milestones?.middle ?? 0
        lagEnd = milestones?.end ?? 0
        lagSlope = PacedAnalysis.lagSlopeOverLastHalf(lagSamples, durationSeconds: durationSeconds)
        lagSeries = lagSamples.map(\.lag)
        producerLateMaxMs = Double(producerLateMaxNs) / 1e6
        self.unappliedCount = unappliedCount
        self.rejectedCount = rejectedCount
        batchCount = batches.count
        batchIntervalMeanMs = batches.intervalMeanMs
        // Entries never applied make the run fail whatever the percentiles say.
        var verdict = PacedVerdict(
            pacePercent: pacePercent, offeredEntriesPerSecond: schedule.entriesPerSecond, p99Ms: p99Ms, lagSlope: lagSlope,
            targets: targets)
        if unappliedCount > 0 {
            verdict.checks.append(.init(passed: false, text: "\(unappliedCount) entries not applied after the drain bound"))
        }
        self.verdict = verdict
    }
}

struct PacedReport: Sendable {
    /// What the paces are shares of: `loadedCapacity` when it was measured, else `idleCapacity`.
    var capacity: E2EBenchmark.Capacity
    var idleCapacity: E2EBenchmark.Capacity
    var loadedCapacity: E2EBenchmark.Capacity?
    var loadedOfferedEntriesPerSecond: Double
    var runs: [PacedRunSummary]
    /// The target as the table names it, and its short name for RESULT lines.
    var target: String
    var targetName: E2ETarget.Name

    func markdown(header: String, options: E2EBenchmark) -> String {
        var lines = ["<!-- \(header) -->"]
        lines.append(
            "Apply capacity into \(target), link batch \(options.linkBatch): idle (catching up a backlog, nothing else running) "
                + "\(fmt(idleCapacity.entriesPerSecond, 0)) entries/s (\(idleCapacity.appliedCount) entries in \(fmt(idleCapacity.seconds, 1)) s, first batch excluded)"
                + (loadedCapacity.map {
                    "; loaded (behind a producer offering \(fmt(loadedOfferedEntriesPerSecond, 0))/s on the paced cadence for \(fmt(options.paceSeconds, 0)) s) "
                        + "\(fmt($0.entriesPerSecond, 0)) entries/s over its last half (\(fmt($0.entriesPerSecond / idleCapacity.entriesPerSecond * 100, 0)) % of idle; \($0.appliedCount) entries in \(fmt($0.seconds, 1)) s; "
                        + "first half \($0.settlingEntriesPerSecond.map { fmt($0, 0) } ?? "–")/s)"
                } ?? "")
                + ". The paces are shares of the \(loadedCapacity == nil ? "idle" : "loaded") capacity.")
        lines.append("")
        lines.append(
            "Paced: an open-loop producer, fsync always, \(fmt(options.paceSeconds, 0)) s per pace, an append at most every "
                + "\(fmt(options.paceAppendIntervalMs, 1)) ms of at most \(options.appendBatch) entries; latency from each entry's due time to the link's commit that covers it; lag sampled every \(options.paceLagSampleMs) ms.")
        lines.append("")
        lines.append("| pace | offered entries/s | appended entries/s | applied entries/s | append→applied p50 ms | p99 ms | max ms | lag start | lag middle | lag end | lag slope, last half (entries/s) | verdict |")
        lines.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for run in runs {
            let slope = run.lagSlope.map { fmt($0, 1) } ?? "–"
            lines.append(
                "| \(fmt(run.pacePercent, 0)) % | \(fmt(run.offeredEntriesPerSecond, 0)) | \(fmt(run.appendedEntriesPerSecond, 0)) | \(fmt(run.appliedEntriesPerSecond, 0)) | \(fmt(run.p50Ms, 1)) | \(fmt(run.p99Ms, 1)) | \(fmt(run.maxMs, 1)) | \(run.lagStart) | \(run.lagMiddle) | \(run.lagEnd) | \(slope) | \(run.verdict.summary) |")
        }
        lines.append("")
        for run in runs {
            lines.append(
                "- \(fmt(run.pacePercent, 0)) %: \(run.entryCount) entries; producer behind its timetable at most \(fmt(run.producerLateMaxMs, 1)) ms; rejected \(run.rejectedCount); \(run.batchCount) batches (mean \(fmt(run.batchCount > 0 ? Double(run.entryCount) / Double(run.batchCount) : 0, 1)) entries, one every \(fmt(run.batchIntervalMeanMs, 1)) ms); lag every \(options.paceLagSampleMs) ms: "
                    + run.lagSeries.map(String.init).joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }

    func resultLines(options: E2EBenchmark) -> String {
        runs.map { resultLine(PacedResultRow($0, report: self, options: options)) }.joined(separator: "\n")
    }
}

/// One pace as a RESULT line: entries_per_s is the applied rate; p50/p99 the append→applied
/// latency from each entry's due time.
struct PacedResultRow: Encodable {
    var system = "orgsync"
    var mode: String
    var batch: Int
    var durable = true
    var entries_per_s: Double
    var p50_ms: Double
    var p99_ms: Double
    var max_ms: Double
    var producers = 1
    var pace_percent: Double
    var capacity_entries_per_s: Double
    var capacity_basis: String
    var idle_capacity_entries_per_s: Double
    var offered_entries_per_s: Double
    var appended_entries_per_s: Double
    var seconds: Double
    var entries: Int
    var lag_start: UInt64
    var lag_middle: UInt64
    var lag_end: UInt64
    var lag_slope_entries_per_s: Double?
    var lag_samples: [UInt64]
    var lag_sample_ms: Int
    var producer_late_max_ms: Double
    var unapplied: Int
    var rejected: Int
    var batches: Int
    var batch_interval_mean_ms: Double
    var link_batch: Int
    var passed: Bool
    var verdict: String

    init(_ run: PacedRunSummary, report: PacedReport, options: E2EBenchmark) {
        let capacity = report.capacity
        let target = report.targetName
        mode = "e2e paced \(target.rawValue)"
        batch = options.appendBatch
        entries_per_s = run.appliedEntriesPerSecond
        p50_ms = run.p50Ms
        p99_ms = run.p99Ms
        max_ms = run.maxMs
        pace_percent = run.pacePercent
        capacity_entries_per_s = capacity.entriesPerSecond
        capacity_basis = report.loadedCapacity == nil ? "idle" : "loaded"
        idle_capacity_entries_per_s = report.idleCapacity.entriesPerSecond
        offered_entries_per_s = run.offeredEntriesPerSecond
        appended_entries_per_s = run.appendedEntriesPerSecond
        seconds = run.durationSeconds
        entries = run.entryCount
        lag_start = run.lagStart
        lag_middle = run.lagMiddle
        lag_end = run.lagEnd
        lag_slope_entries_per_s = run.lagSlope
        lag_samples = run.lagSeries
        lag_sample_ms = options.paceLagSampleMs
        producer_late_max_ms = run.producerLateMaxMs
        unapplied = run.unappliedCount
        rejected = run.rejectedCount
        batches = run.batchCount
        batch_interval_mean_ms = run.batchIntervalMeanMs
        link_batch = options.linkBatch
        passed = run.verdict.passed
        verdict = run.verdict.summary
    }
}
