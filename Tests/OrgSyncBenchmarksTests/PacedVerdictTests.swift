import Testing

@testable import OrgSyncBenchmarks

@Suite struct PacedVerdictTests {
    let targets = PacedTargets()

    @Test func atHalfCapacityTheP99MustBeWithin100Ms() {
        #expect(PacedVerdict(pacePercent: 50, offeredEntriesPerSecond: 10_000, p99Ms: 99.9, lagSlope: 0, targets: targets).passed)
        let slow = PacedVerdict(pacePercent: 50, offeredEntriesPerSecond: 10_000, p99Ms: 100.1, lagSlope: 0, targets: targets)
        #expect(!slow.passed)
        #expect(slow.summary.hasPrefix("FAIL: p99 100.1 > 100 ms"))
    }

    @Test func at90PercentOnlyTheLagTrendCounts() {
        // A high p99 is no failure at 90 %; a lag growing by more than 1 % of the offered rate is.
        #expect(PacedVerdict(pacePercent: 90, offeredEntriesPerSecond: 10_000, p99Ms: 900, lagSlope: 99, targets: targets).passed)
        #expect(!PacedVerdict(pacePercent: 90, offeredEntriesPerSecond: 10_000, p99Ms: 1, lagSlope: 101, targets: targets).passed)
        #expect(PacedVerdict(pacePercent: 90, offeredEntriesPerSecond: 10_000, p99Ms: 1, lagSlope: -500, targets: targets).passed)
        #expect(!PacedVerdict(pacePercent: 90, offeredEntriesPerSecond: 10_000, p99Ms: 1, lagSlope: nil, targets: targets).passed)
    }

    @Test func unappliedEntriesFailTheRun() throws {
        let schedule = try #require(PacingSchedule(
            startNs: 0, entriesPerSecond: 100, durationSeconds: 10, appendBatchMax: 10, appendIntervalMinNs: 0))
        let samples = (0...10).map { LagSample(seconds: Double($0), lag: 2) }
        func summary(unapplied: Int) -> PacedRunSummary {
            PacedRunSummary(
                pacePercent: 50, schedule: schedule, durationSeconds: 10, appendedCount: 1_000, lastAppendEndNs: 10_000_000_000,
                appliedEntriesPerSecond: 100, sortedLatenciesNs: Array(repeating: 5_000_000, count: 1_000), unappliedCount: unapplied,
                lagSamples: samples, producerLateMaxNs: 0, rejectedCount: 0, batches: (100, 100), targets: targets)
        }
        let clean = summary(unapplied: 0)
        #expect(clean.verdict.passed)
        #expect(clean.appendedEntriesPerSecond == 100)
        #expect(clean.p99Ms == 5)
        #expect(clean.lagSlope == 0)
        #expect(!summary(unapplied: 3).verdict.passed)
    }
}
