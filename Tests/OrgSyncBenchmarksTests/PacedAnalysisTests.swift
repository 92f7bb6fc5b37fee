import Testing

@testable import OrgSyncBenchmarks

@Suite struct PacedAnalysisTests {
    @Test func eachEntryWaitsFromItsDueTimeToTheFirstCommitCoveringIt() {
        // Entries 0…4 at offsets 10…14, due every 10 ns from 100; commits cover 10…11 at 125,
        // 12…13 at 160; entry 4 is never covered.
        let commits = [CursorCommit(ns: 125, offset: 12), CursorCommit(ns: 160, offset: 14)]
        let (latencies, unapplied) = PacedAnalysis.entryLatenciesNs(
            entryCount: 5, firstOffset: 10, dueNs: { 100 + UInt64($0) * 10 }, commits: commits, endNs: 500)
        #expect(latencies == [25, 15, 40, 30, 360])
        #expect(unapplied == 1)
    }

    @Test func aCommitBeforeTheDueTimeCountsAsZero() {
        let (latencies, unapplied) = PacedAnalysis.entryLatenciesNs(
            entryCount: 1, firstOffset: 0, dueNs: { _ in 100 }, commits: [CursorCommit(ns: 90, offset: 1)], endNs: 200)
        #expect(latencies == [0])
        #expect(unapplied == 0)
    }

    @Test func slopeOfALineIsItsSlope() throws {
        let points = (0..<10).map { (x: Double($0), y: 3 * Double($0) + 7) }
        let slope = try #require(PacedAnalysis.leastSquaresSlope(points))
        #expect(abs(slope - 3) < 1e-9)
        #expect(PacedAnalysis.leastSquaresSlope([(1, 1)]) == nil)
        #expect(PacedAnalysis.leastSquaresSlope([(1, 1), (1, 5)]) == nil)
        let flat = try #require(PacedAnalysis.leastSquaresSlope([(0, 5), (1, 9), (2, 5), (3, 9)]))
        #expect(abs(flat - 0.8) < 1e-9)
    }

    @Test func lagTrendLooksAtTheLastHalfOnly() throws {
        // Grows by 100/s in the first half, flat in the second.
        let samples = (0...60).map { LagSample(seconds: Double($0), lag: UInt64(min($0, 30) * 100)) }
        let slope = try #require(PacedAnalysis.lagSlopeOverLastHalf(samples, durationSeconds: 60))
        #expect(abs(slope) < 1e-9)
        let growing = (0...60).map { LagSample(seconds: Double($0), lag: UInt64($0 * 50)) }
        let growth = try #require(PacedAnalysis.lagSlopeOverLastHalf(growing, durationSeconds: 60))
        #expect(abs(growth - 50) < 1e-9)
        #expect(PacedAnalysis.lagSlopeOverLastHalf([LagSample(seconds: 59, lag: 3)], durationSeconds: 60) == nil)
    }

    @Test func lagMilestonesAreFirstNearestTheMiddleAndLast() throws {
        let samples = [0.0, 1, 2.9, 3.2, 5, 6, 7].map { LagSample(seconds: $0, lag: UInt64($0 * 10)) }
        let milestones = try #require(PacedAnalysis.lagMilestones(samples, durationSeconds: 6))
        #expect(milestones.start == 0)
        #expect(milestones.middle == 29)
        #expect(milestones.end == 60)  // the sample at 7 s is after the run
        #expect(PacedAnalysis.lagMilestones([], durationSeconds: 6) == nil)
    }

    @Test func ratesFromCommits() throws {
        let commits = [CursorCommit(ns: 1_000_000_000, offset: 500), CursorCommit(ns: 2_000_000_000, offset: 2_500),
                       CursorCommit(ns: 3_000_000_000, offset: 4_000)]
        let catchUp = try #require(PacedAnalysis.catchUpRate(commits))
        #expect(abs(catchUp - 1_750) < 1e-9)
        #expect(PacedAnalysis.catchUpRate(Array(commits.prefix(1))) == nil)
        // Within 2 s of a start at 0.5 s: the commit at 3 s is outside the window.
        let applied = PacedAnalysis.appliedRate(commits: commits, firstOffset: 100, startNs: 500_000_000, durationSeconds: 2)
        #expect(abs(applied - 1_200) < 1e-9)
        // Commits before the run's first entry and after its last do not count as its batches.
        let batches = PacedAnalysis.batches(
            commits: [CursorCommit(ns: 1, offset: 100)] + commits + [CursorCommit(ns: 9_000_000_000, offset: 4_500)],
            firstOffset: 100, endOffset: 4_000)
        #expect(batches.count == 3)
        #expect(abs(batches.intervalMeanMs - 1_000) < 1e-9)
        #expect(PacedAnalysis.batches(commits: [], firstOffset: 0, endOffset: 10) == (0, 0))
    }

    @Test func percentileIsTheNearestRank() {
        let sorted = (1...100).map { UInt64($0) * 1_000_000 }
        #expect(percentileMs(sorted, 50) == 50)
        #expect(percentileMs(sorted, 99) == 99)
        #expect(percentileMs(sorted, 100) == 100)
        #expect(percentileMs([], 99) == 0)
    }
}
