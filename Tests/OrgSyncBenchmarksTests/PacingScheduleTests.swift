import Testing

@testable import OrgSyncBenchmarks
import OrgSyncCore

@Suite struct PacingScheduleTests {
    private func schedule(
        rate: Double = 1_000, seconds: Double = 2, batch: Int = 100, intervalNs: UInt64 = 0, startNs: UInt64 = 5_000_000_000
    ) throws -> PacingSchedule {
        try #require(PacingSchedule(
            startNs: startNs, entriesPerSecond: rate, durationSeconds: seconds, appendBatchMax: batch, appendIntervalMinNs: intervalNs))
    }

    @Test func entriesAreDueOnAFixedTimetable() throws {
        let s = try schedule(rate: 1_000, seconds: 2)
        #expect(s.entryCount == 2_000)
        #expect(s.dueNs(0) == 5_000_000_000)
        #expect(s.dueNs(1) == 5_001_000_000)
        #expect(s.dueNs(1_999) == 6_999_000_000)
    }

    @Test func refusesRatesDurationsAndBatchesThatMakeNoTimetable() {
        let cases: [(rate: Double, seconds: Double, batch: Int)] = [
            (0, 1, 1), (-5, 1, 1), (.infinity, 1, 1), (.nan, 1, 1), (10, 0, 1), (10, 1, 0), (0.5, 1, 1), (1e9, 1e9, 1),
        ]
        for (rate, seconds, batch) in cases {
            #expect(PacingSchedule(startNs: 0, entriesPerSecond: rate, durationSeconds: seconds, appendBatchMax: batch, appendIntervalMinNs: 0) == nil)
        }
    }

    @Test func dueCountAgreesWithDueTimes() throws {
        // A rate whose period is not a whole number of nanoseconds.
        let s = try schedule(rate: 29_345.7, seconds: 1)
        var random = SplitMix64(seed: 7)
        for _ in 0..<2_000 {
            let now = s.startNs + UInt64(random.int(in: 0..<1_100_000_000))
            let due = s.dueCount(atNs: now)
            #expect(due >= 1 && due <= s.entryCount)
            #expect(s.dueNs(due - 1) <= now)
            if due < s.entryCount { #expect(s.dueNs(due) > now) }
        }
        #expect(s.dueCount(atNs: s.startNs - 1) == 0)
        #expect(s.dueCount(atNs: s.startNs) == 1)
        #expect(s.dueCount(atNs: .max) == s.entryCount)
    }

    @Test func appendsEverythingDueUpToTheBatchAndNeverWaitsForTheLastAppend() throws {
        let s = try schedule(rate: 1_000, seconds: 2, batch: 100)
        // 250 ms in: entries 0…250 are due; the producer is behind (a slow append), so it sends
        // the oldest 100 at once rather than one per period.
        #expect(s.nextStep(appendedCount: 0, lastAppendStartNs: nil, nowNs: s.startNs + 250_000_000) == .append(0..<100))
        #expect(s.nextStep(appendedCount: 200, lastAppendStartNs: s.startNs + 249_000_000, nowNs: s.startNs + 250_000_000) == .append(200..<251))
        // Caught up: wait for the next entry's due time.
        #expect(s.nextStep(appendedCount: 251, lastAppendStartNs: s.startNs + 250_000_000, nowNs: s.startNs + 250_100_000)
            == .wait(untilNs: s.dueNs(251)))
        #expect(s.nextStep(appendedCount: 2_000, lastAppendStartNs: s.startNs, nowNs: s.startNs) == .finished)
    }

    @Test func keepsTheShortestIntervalBetweenAppends() throws {
        let s = try schedule(rate: 10_000, seconds: 1, batch: 1_000, intervalNs: 1_000_000)
        let last = s.startNs + 10_000_000
        // An entry is due every 0.1 ms, but the last append started 0.5 ms ago: wait 0.5 ms more.
        #expect(s.nextStep(appendedCount: 101, lastAppendStartNs: last, nowNs: last + 500_000) == .wait(untilNs: last + 1_000_000))
        // Then everything due meanwhile goes in one append.
        #expect(s.nextStep(appendedCount: 101, lastAppendStartNs: last, nowNs: last + 1_000_000) == .append(101..<111))
    }
}
