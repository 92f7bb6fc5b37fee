@testable import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
@testable import OrgSyncBroker
@testable import OrgSyncServer
import Testing

@Suite struct SampleRingTests {
    @Test func keepsTheNewestCapacityValuesOldestFirst() {
        var ring = SampleRing<Int>(capacity: 4)
        #expect(ring.elements.isEmpty)
        #expect(ring.newest == nil)
        for i in 1...3 { ring.append(i) }
        #expect(ring.elements == [1, 2, 3])
        for i in 4...10 { ring.append(i) }
        #expect(ring.count == 4, "bounded: never more than its capacity")
        #expect(ring.elements == [7, 8, 9, 10], "the oldest are dropped, order kept")
        #expect(ring.newest == 10)
    }

    @Test func staysBoundedOverManyWraps() {
        var ring = SampleRing<Int>(capacity: RecentSamples.samplesMax)
        for i in 0..<(RecentSamples.samplesMax * 7 + 13) { ring.append(i) }
        let values = ring.elements
        #expect(values.count == RecentSamples.samplesMax)
        #expect(values.first == RecentSamples.samplesMax * 6 + 13)
        #expect(zip(values, values.dropFirst()).allSatisfy { $0 + 1 == $1 }, "ordered, none missing")
    }

    @Test func aCapacityBelowOneIsOne() {
        var ring = SampleRing<Int>(capacity: 0)
        ring.append(1)
        ring.append(2)
        #expect(ring.elements == [2])
    }

    @Test func ratesComeFromCumulativeCounts() {
        let rates = CounterRate.perSecond([(1_000, 10), (2_000, 30), (4_000, 30), (4_500, 80)])
        #expect(rates == [nil, 20, 0, 100])
    }

    /// A count below the one before restarted from zero in between: its increase is the count.
    @Test func aCounterThatGoesBackwardsRestartedFromZero() {
        #expect(CounterRate.perSecond(from: (1_000, 500), to: (2_000, 7)) == 7)
        #expect(CounterRate.perSecond(from: (1_000, 500), to: (3_000, 0)) == 0)
    }

    /// Time that does not move forward (the same reading time, a wall clock set back) has no rate.
    @Test func noRateWithoutElapsedTime() {
        #expect(CounterRate.perSecond(from: (2_000, 5), to: (2_000, 9)) == nil)
        #expect(CounterRate.perSecond(from: (2_000, 5), to: (1_000, 9)) == nil)
        #expect(CounterRate.perSecond([]) == [])
        #expect(CounterRate.perSecond(from: (0, UInt64.max), to: (1, UInt64.max)) == 0, "no overflow at the top")
    }

    static func status(_ link: String, state: LinkState = .active, applied: UInt64, lag: UInt64 = 0) -> LinkStatus {
        LinkStatus(link: link, stream: "events", state: state, heldDown: false, heldDownUntilMs: nil, cursor: Offset(rawValue: 5),
                   endOffset: Offset(rawValue: 5 + lag), lagCount: lag, lastError: nil, probeSuccessCount: 0, probeThreshold: 3,
                   timeInStateMs: 0, suspensionCount: 0, flapCount: 0, holdDownCount: 0, rejectedCount: 0, appliedCount: applied,
                   deadLetterFailedCount: 0, isRunning: true, streamID: "id", epoch: 1)
    }

    @Test func recentSamplesKeepConfiguredNamesOnlyAndAWindow() throws {
        let samples = RecentSamples(links: ["demo"], streams: ["events"])
        for second in UInt64(1)...UInt64(RecentSamples.samplesMax + 100) {
            samples.record(links: [Self.status("demo", applied: second * 3), Self.status("unknown", applied: 1)],
                           streamEnds: ["events": second * 10, "unknown": 1], timeMs: second * 1_000)
        }
        let nowMs = UInt64(RecentSamples.samplesMax + 100) * 1_000
        let all = try #require(samples.link("demo", windowMs: RecentSamples.windowMsMax, nowMs: nowMs))
        #expect(all.count == RecentSamples.samplesMax, "bounded at samplesMax")
        #expect(all.first?.appliedPerSecond == nil, "the oldest reading kept has none before it")
        #expect(all.dropFirst().allSatisfy { $0.appliedPerSecond == 3 })
        #expect(all.last?.sample.timeMs == nowMs)
        let recent = try #require(samples.link("demo", windowMs: 10_000, nowMs: nowMs))
        #expect(recent.map(\.sample.timeMs) == (0...10).map { nowMs - 10_000 + UInt64($0) * 1_000 })
        #expect(recent.allSatisfy { $0.appliedPerSecond == 3 }, "the first reading of a window has its rate from the one before it")
        let stream = try #require(samples.stream("events", windowMs: 5_000, nowMs: nowMs))
        #expect(stream.count == 6)
        #expect(stream.allSatisfy { $0.appendedPerSecond == 10 })
        #expect(samples.link("unknown", windowMs: 1_000, nowMs: nowMs) == nil, "no ring for a link not configured")
        #expect(samples.stream("unknown", windowMs: 1_000, nowMs: nowMs) == nil)
    }

    @Test func theFirstReadingEverHasNoRate() throws {
        let samples = RecentSamples(links: ["demo"], streams: [])
        samples.record(links: [Self.status("demo", applied: 40)], streamEnds: [:], timeMs: 1_000)
        samples.record(links: [Self.status("demo", applied: 50)], streamEnds: [:], timeMs: 3_000)
        let readings = try #require(samples.link("demo", windowMs: 60_000, nowMs: 3_000))
        #expect(readings.map(\.appliedPerSecond) == [nil, 5])
    }
}
