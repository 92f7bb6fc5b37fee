import Testing

@testable import OrgSyncBenchmarks

@Suite struct MemoryTrendTests {
    func samples(minutes: Int, every seconds: Double = 10, kib: (Double) -> Double) -> [MemorySample] {
        stride(from: 0.0, through: Double(minutes) * 60, by: seconds).map { MemorySample(seconds: $0, residentKiB: Int(kib($0))) }
    }

    @Test func aFlatRunUnderTheCeilingPasses() throws {
        // 80 MiB with ±1 MiB of noise.
        let flat = samples(minutes: 30) { 80 * 1024 + (Int($0) % 20 == 0 ? 1024 : -1024) }
        let trend = try #require(MemoryTrend(flat, durationSeconds: 1800, targets: MemoryTargets()))
        #expect(trend.maxMiB == 81)
        #expect(abs(trend.trendMiBPer10Minutes ?? 99) < 0.1)
        #expect(trend.passed)
    }

    @Test func aSlowClimbFailsEvenUnderTheCeiling() throws {
        // 70 MiB growing 3 MiB per 10 minutes: never above 100 MiB, still a leak.
        let climbing = samples(minutes: 30) { 70 * 1024 + $0 / 600 * 3 * 1024 }
        let trend = try #require(MemoryTrend(climbing, durationSeconds: 1800, targets: MemoryTargets()))
        #expect(trend.maxPassed)
        #expect(abs((trend.trendMiBPer10Minutes ?? 0) - 3) < 0.01)
        #expect(!trend.trendPassed && !trend.passed)
    }

    @Test func growthEarlyOnlyCountsAgainstTheCeiling() throws {
        // Caches filling in the first half, flat afterwards: the trend is judged on the last half.
        let settling = samples(minutes: 30) { 60 * 1024 + min($0, 600) / 600 * 30 * 1024 }
        let trend = try #require(MemoryTrend(settling, durationSeconds: 1800, targets: MemoryTargets()))
        #expect(trend.maxMiB == 90 && trend.passed)
        let over = try #require(MemoryTrend(settling, durationSeconds: 1800, targets: MemoryTargets(residentMiBMax: 85)))
        #expect(!over.maxPassed && over.trendPassed)
    }

    @Test func tooFewSamplesShowNothingAndFail() throws {
        #expect(MemoryTrend([], durationSeconds: 60, targets: MemoryTargets()) == nil)
        let one = try #require(MemoryTrend([MemorySample(seconds: 50, residentKiB: 1024)], durationSeconds: 60, targets: MemoryTargets()))
        #expect(one.trendMiBPer10Minutes == nil && !one.passed)
    }

    @Test func milestonesPickTheNearestSampleToEvenlySpacedTimes() {
        let all = samples(minutes: 30, every: 7) { $0 }
        let rows = MemoryTrend.milestones(all, durationSeconds: 1800, count: 6)
        #expect(rows.count == 7)
        #expect(rows.first?.seconds == 0)
        #expect(zip(rows, [0.0, 300, 600, 900, 1200, 1500, 1800]).allSatisfy { abs($0.seconds - $1) <= 3.5 })
        #expect(MemoryTrend.milestones([], durationSeconds: 10, count: 3).isEmpty)
    }
}
