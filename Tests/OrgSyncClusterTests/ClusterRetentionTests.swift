@testable import OrgSyncCluster
import Testing

/// Where retention cuts a cluster stream, without a server.
@Suite struct ClusterRetentionTests {
    /// Messages 11...20, 100 bytes each.
    static let state = ClusterRetention.State(firstSequence: 11, lastSequence: 20, messages: 10, bytes: 1_000)

    @Test func bytesOverTheLimitGoAtTheMeanMessageSizeButNeverTheLastMessage() {
        let retention = ClusterRetention(bytesMax: 750)
        #expect(retention.firstKept(Self.state, firstYoungEnough: nil, firstUnconsumed: nil) == 14, "250 over: 3 messages")
        #expect(ClusterRetention(bytesMax: 1_000).firstKept(Self.state, firstYoungEnough: nil, firstUnconsumed: nil) == 11, "at the limit")
        #expect(ClusterRetention(bytesMax: 0).firstKept(Self.state, firstYoungEnough: nil, firstUnconsumed: nil) == 20, "the last stays")
        #expect(ClusterRetention(bytesMax: 1).firstKept(
            .init(firstSequence: 5, lastSequence: 5, messages: 1, bytes: 9_999), firstYoungEnough: nil, firstUnconsumed: nil) == 5)
    }

    @Test func ageAndBytesTakeTheFurtherCutAndACursorHoldsItUnlessDroppingIsAllowed() {
        let retention = ClusterRetention(bytesMax: 750, ageMsMax: 1_000)
        #expect(retention.firstKept(Self.state, firstYoungEnough: 17, firstUnconsumed: nil) == 17)
        #expect(retention.firstKept(Self.state, firstYoungEnough: 12, firstUnconsumed: nil) == 14)
        #expect(retention.firstKept(Self.state, firstYoungEnough: 21, firstUnconsumed: nil) == 20, "none young: the last stays")
        #expect(retention.firstKept(Self.state, firstYoungEnough: 17, firstUnconsumed: 13) == 13, "a cursor in message 13")
        #expect(retention.firstKept(Self.state, firstYoungEnough: 17, firstUnconsumed: 19) == 17)
        var dropping = retention
        dropping.dropsUnconsumed = true
        #expect(dropping.firstKept(Self.state, firstYoungEnough: 17, firstUnconsumed: 13) == 17)
    }

    @Test func theAgeCutoffDoesNotOverflow() {
        #expect(ClusterRetention(ageMsMax: 60_000).ageCutoffMs(nowMs: 100_000) == 40_000)
        #expect(ClusterRetention(ageMsMax: Int64.max).ageCutoffMs(nowMs: -10) == Int64.min)
        #expect(ClusterRetention(bytesMax: 1).ageCutoffMs(nowMs: 5) == nil)
    }
}
