import OrgSyncCore
import OrgSyncPluginAPI
import Synchronization

/// A flaky target on a seeded schedule: outages (some of them flapping: down, briefly up, down
/// again), rejected entries, retryable conflicts and lost acknowledgements. Outcomes depend only
/// on the seed, the clock and the order of calls, so a run replays exactly from its seed.
/// After ``upForeverFromMs`` the target stays up (rejections and retryables go on).
public final class ScriptedTarget: TargetScript {
    public let seed: UInt64
    /// Down intervals, sorted and disjoint.
    public let outagesMs: [Range<UInt64>]
    public let rejectedOffsets: Set<Offset>
    public let retryableRatio: Double
    public let ackLossRatio: Double
    private let clock: any LinkClock
    private let random: Mutex<SplitMix64>

    /// A schedule for `entryCount` entries appended over `horizonMs`. Without `losesAcknowledgements`
    /// (for targets that keep no applied offset, where a lost acknowledgement must duplicate) every
    /// committed batch is acknowledged.
    public init(seed: UInt64, clock: any LinkClock, entryCount: Int, horizonMs: UInt64, losesAcknowledgements: Bool = true) {
        var generator = SplitMix64(seed: seed ^ 0x5EED_7A26_E7)
        self.seed = seed
        self.clock = clock
        self.outagesMs = Self.makeOutages(&generator, horizonMs: horizonMs)
        var rejected: Set<Offset> = []
        let rejectionRatio = Double(generator.next() % 4) / 100  // 0 to 3 %
        for offset in 0..<entryCount where generator.nextUnit() < rejectionRatio { rejected.insert(Offset(UInt64(offset))) }
        self.rejectedOffsets = rejected
        self.retryableRatio = Double(generator.next() % 11) / 100  // 0 to 10 %
        self.ackLossRatio = losesAcknowledgements ? Double(generator.next() % 6) / 100 : 0  // 0 to 5 %
        self.random = Mutex(generator)
    }

    private static func makeOutages(_ generator: inout SplitMix64, horizonMs: UInt64) -> [Range<UInt64>] {
        var outages: [Range<UInt64>] = []
        for _ in 0..<Int(generator.next() % 5) {
            var startMs = generator.next() % max(1, horizonMs)
            // A flapping outage is several down spells separated by short recoveries.
            for _ in 0..<Int(1 + generator.next() % 4) {
                let endMs = startMs + 50 + generator.next() % 5_000
                outages.append(startMs..<endMs)
                startMs = endMs + 1 + generator.next() % 600
            }
        }
        return merge(outages)
    }

    private static func merge(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
        var merged: [Range<UInt64>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, range.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        return merged
    }

    /// From this time on the target is never down.
    public var upForeverFromMs: UInt64 { outagesMs.last?.upperBound ?? 0 }

    public func isDown(atMs ms: UInt64) -> Bool {
        outagesMs.contains { $0.contains(ms) }
    }

    public func outcome(for call: AdapterCall) -> ScriptedOutcome {
        if isDown(atMs: clock.nowMs()) { return .fail(.connection("scripted outage", targetCode: "08006")) }
        guard case .apply(let batch) = call else { return .proceed }
        if let first = batch.entries.first(where: { rejectedOffsets.contains($0.offset) }) {
            return .fail(.rejected(offset: first.offset, "scripted constraint violation", targetCode: "23505"))
        }
        let draw = random.withLock { $0.nextUnit() }
        if draw < retryableRatio { return .fail(.retryable("scripted serialization failure", targetCode: "40001")) }
        if draw < retryableRatio + ackLossRatio { return .commitThenFail(.connection("scripted lost acknowledgement")) }
        return .proceed
    }

    public var description: String {
        "outages \(outagesMs.map { "\($0.lowerBound)..<\($0.upperBound)" }), rejected \(rejectedOffsets.sorted()), retryable \(retryableRatio), ack loss \(ackLossRatio)"
    }
}
