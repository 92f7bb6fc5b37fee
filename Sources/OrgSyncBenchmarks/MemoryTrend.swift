/// Resident memory over a long paced run and its verdict against issue #15's target: 10 links
/// at a paced load for 30 minutes stay at most 100 MiB with no upward trend. Pure: the memory
/// benchmark samples `/proc/self/status` and hands the samples here.
struct MemorySample: Sendable, Equatable {
    /// Seconds since the paced run started.
    var seconds: Double
    var residentKiB: Int
}

struct MemoryTargets: Sendable, Equatable {
    var residentMiBMax = 100.0
    /// "No upward trend": over the last half of the run, the least-squares slope of the
    /// resident memory is at most this many MiB per 10 minutes (2: 3 MiB over the last half of
    /// 30 minutes, the size of the swings as freed pages go back to the system; the growth this
    /// mode found, malloc arenas keeping freed memory, was 13 MiB per 10 minutes).
    var trendMiBPer10MinutesMax = 2.0
}

struct MemoryTrend: Sendable, Equatable {
    var maxMiB: Double
    /// MiB per 10 minutes over the last half of the run; nil with fewer than two samples there.
    var trendMiBPer10Minutes: Double?
    var maxPassed: Bool
    var trendPassed: Bool
    var passed: Bool { maxPassed && trendPassed }

    init?(_ samples: [MemorySample], durationSeconds: Double, targets: MemoryTargets) {
        guard let maxKiB = samples.map(\.residentKiB).max() else { return nil }
        maxMiB = Double(maxKiB) / 1024
        let half = durationSeconds / 2
        let lastHalf = samples.filter { $0.seconds >= half }.map { (x: $0.seconds, y: Double($0.residentKiB) / 1024) }
        trendMiBPer10Minutes = PacedAnalysis.leastSquaresSlope(lastHalf).map { $0 * 600 }
        maxPassed = maxMiB <= targets.residentMiBMax
        // Too few samples show nothing: that fails, as in the paced e2e verdict.
        trendPassed = trendMiBPer10Minutes.map { $0 <= targets.trendMiBPer10MinutesMax } ?? false
    }

    /// The samples nearest each of `count` + 1 evenly spaced times from 0 to `durationSeconds`
    /// (the table's rows), in time order, without repeats.
    static func milestones(_ samples: [MemorySample], durationSeconds: Double, count: Int) -> [MemorySample] {
        guard !samples.isEmpty, count >= 1 else { return [] }
        var picked: [MemorySample] = []
        for step in 0...count {
            let at = durationSeconds * Double(step) / Double(count)
            guard let nearest = samples.min(by: { abs($0.seconds - at) < abs($1.seconds - at) }) else { continue }
            if picked.last != nearest { picked.append(nearest) }
        }
        return picked
    }
}
