/// What a paced run's numbers mean: each entry's append→applied latency, the lag's trend, and
/// the verdict against the targets. Pure: the measurement (``E2EBenchmark``'s paced mode)
/// collects times and hands them here.

/// The targets of issue #15: at half the apply capacity an entry is in the target within 100 ms
/// (p99); at 90 % the link keeps up (its lag does not grow).
struct PacedTargets: Sendable, Equatable {
    /// The p99 latency target, and up to which pace (percent of capacity) it applies.
    var latencyP99MsMax = 100.0
    var latencyTargetPacePercentMax = 50.0
    /// "Bounded" lag: over the last half of the run, the least-squares slope of the lag is at
    /// most this share of the offered rate (0.01: the link applies ≥ 99 % of what arrives).
    var lagSlopeShareMax = 0.01
}

/// One lag sample: its tick (seconds since the run's start), and the entries appended but not
/// yet applied then.
struct LagSample: Sendable, Equatable {
    var seconds: Double
    var lag: UInt64
}

/// One commit of the link as the cursor store saw it: at `ns` (monotonic), every offset below
/// `offset` was in the target.
struct CursorCommit: Sendable, Equatable {
    var ns: UInt64
    var offset: UInt64
}

enum PacedAnalysis {
    /// Each entry's time from its due time to the first commit that covers it, ns, in entry
    /// order. Entry `i` has offset `firstOffset + i` and was due at `dueNs(i)`; `commits` are in
    /// time order with growing offsets. An entry no commit covers gets `endNs - due` (a lower
    /// bound: it was still not applied then) and is counted in `unappliedCount`.
    static func entryLatenciesNs(
        entryCount: Int, firstOffset: UInt64, dueNs: (Int) -> UInt64, commits: [CursorCommit], endNs: UInt64
    ) -> (latenciesNs: [UInt64], unappliedCount: Int) {
        var latencies: [UInt64] = []
        latencies.reserveCapacity(max(0, entryCount))
        var commitIndex = 0
        var unapplied = 0
        for index in 0..<max(0, entryCount) {
            let (offset, overflow) = firstOffset.addingReportingOverflow(UInt64(index))
            while commitIndex < commits.count, overflow || commits[commitIndex].offset <= offset { commitIndex += 1 }
            let due = dueNs(index)
            let appliedNs: UInt64
            if commitIndex < commits.count {
                appliedNs = commits[commitIndex].ns
            } else {
                appliedNs = endNs
                unapplied += 1
            }
            latencies.append(appliedNs > due ? appliedNs - due : 0)
        }
        return (latencies, unapplied)
    }

    /// Least-squares slope of `y` over `x`; nil with fewer than two points or all `x` equal.
    static func leastSquaresSlope(_ points: [(x: Double, y: Double)]) -> Double? {
        guard points.count >= 2 else { return nil }
        let n = Double(points.count)
        let meanX = points.reduce(0) { $0 + $1.x } / n
        let meanY = points.reduce(0) { $0 + $1.y } / n
        var covariance = 0.0
        var varianceX = 0.0
        for point in points {
            covariance += (point.x - meanX) * (point.y - meanY)
            varianceX += (point.x - meanX) * (point.x - meanX)
        }
        guard varianceX > 0 else { return nil }
        return covariance / varianceX
    }

    /// The lag's trend over the last half of a run of `durationSeconds`: entries/s (positive:
    /// the lag grows). Nil when fewer than two samples fall in that half.
    static func lagSlopeOverLastHalf(_ samples: [LagSample], durationSeconds: Double) -> Double? {
        let half = durationSeconds / 2
        return leastSquaresSlope(samples.filter { $0.seconds >= half && $0.seconds <= durationSeconds }.map { ($0.seconds, Double($0.lag)) })
    }

    /// The lag at the start (first sample), the middle (the sample nearest half the duration)
    /// and the end (the last sample within the duration); nil without samples.
    static func lagMilestones(_ samples: [LagSample], durationSeconds: Double) -> (start: UInt64, middle: UInt64, end: UInt64)? {
        let within = samples.filter { $0.seconds <= durationSeconds }
        guard let first = within.first, let last = within.last else { return nil }
        let half = durationSeconds / 2
        let middle = within.min { abs($0.seconds - half) < abs($1.seconds - half) } ?? first
        return (first.lag, middle.lag, last.lag)
    }

    /// Applied entries/s over `[startNs, startNs + durationSeconds]`: the offset the last commit
    /// in that window reached, less the first entry's offset.
    static func appliedRate(commits: [CursorCommit], firstOffset: UInt64, startNs: UInt64, durationSeconds: Double) -> Double {
        guard durationSeconds > 0 else { return 0 }
        let endNs = Double(startNs) + durationSeconds * 1e9
        guard let last = commits.last(where: { Double($0.ns) <= endNs }), last.offset > firstOffset else { return 0 }
        return Double(last.offset - firstOffset) / durationSeconds
    }

    /// The commits that covered entries from `firstOffset` on (up to `endOffset`), and the mean
    /// time between consecutive ones, ms (0 with fewer than two).
    static func batches(commits: [CursorCommit], firstOffset: UInt64, endOffset: UInt64) -> (count: Int, intervalMeanMs: Double) {
        var previousOffset = firstOffset
        var times: [UInt64] = []
        for commit in commits where commit.offset > previousOffset && previousOffset < endOffset {
            times.append(commit.ns)
            previousOffset = commit.offset
        }
        guard let first = times.first, let last = times.last, times.count > 1, last > first else { return (times.count, 0) }
        return (times.count, Double(last - first) / 1e6 / Double(times.count - 1))
    }

    /// Entries/s of a backlog catch-up: from the first commit to the last (the first batch, which
    /// also opens the target and creates its tables, is left out). Nil with fewer than two
    /// commits or no time between them.
    static func catchUpRate(_ commits: [CursorCommit]) -> Double? {
        guard let first = commits.first, let last = commits.last, last.ns > first.ns, last.offset > first.offset else { return nil }
        return Double(last.offset - first.offset) / (Double(last.ns - first.ns) / 1e9)
    }
}

/// A paced run against the targets: each check that applies at its pace, passed or not.
struct PacedVerdict: Sendable, Equatable {
    struct Check: Sendable, Equatable {
        var passed: Bool
        var text: String
    }

    var checks: [Check]
    var passed: Bool { checks.allSatisfy(\.passed) }

    /// The p99 check applies up to ``PacedTargets/latencyTargetPacePercentMax``; the lag check
    /// at every pace (below capacity the lag must not grow). A run without a lag trend (too few
    /// samples) fails the lag check: it showed nothing.
    init(pacePercent: Double, offeredEntriesPerSecond: Double, p99Ms: Double, lagSlope: Double?, targets: PacedTargets) {
        checks = []
        if pacePercent <= targets.latencyTargetPacePercentMax {
            let passed = p99Ms <= targets.latencyP99MsMax
            checks.append(Check(passed: passed, text: "p99 \(fmt(p99Ms, 1)) \(passed ? "≤" : ">") \(fmt(targets.latencyP99MsMax, 0)) ms"))
        }
        let slopeMax = targets.lagSlopeShareMax * offeredEntriesPerSecond
        if let lagSlope {
            let passed = lagSlope <= slopeMax
            checks.append(Check(
                passed: passed, text: "lag slope \(fmt(lagSlope, 1))/s \(passed ? "≤" : ">") \(fmt(slopeMax, 1))/s (\(fmt(targets.lagSlopeShareMax * 100, 0)) % of offered)"))
        } else {
            checks.append(Check(passed: false, text: "lag trend unknown (fewer than 2 samples in the last half)"))
        }
    }

    /// "pass: …; …" or "FAIL: …" for the table.
    var summary: String { (passed ? "pass: " : "FAIL: ") + checks.map(\.text).joined(separator: "; ") }
}
