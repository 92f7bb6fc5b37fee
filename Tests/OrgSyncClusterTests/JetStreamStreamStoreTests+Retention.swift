import Foundation
import OrgSyncBroker
import OrgSyncCluster
import OrgSyncCore
import OrgSyncLog
import OrgSyncNATS
import OrgSyncPluginAPI
import OrgSyncTestNATS
import OrgSyncTestSupport
import Testing

/// Retention of cluster streams against a real nats-server: the oldest messages go, never one a
/// cursor has not passed (unless told), never the last; a key whose append went is told so.
extension JetStreamStreamStoreTests {
    /// A member with streams `events` (with `retention`) and `events.x` (whose cursors share the
    /// bucket under `events.x.<link>`).
    static func member(_ server: NATSTestServer, retention: (inout BrokerConfiguration.Stream) -> Void) async throws -> ClusterStreams {
        var configuration = configuration(urls: ["127.0.0.1:\(server.port)"], node: "a", replicas: 1)
        var events = BrokerConfiguration.Stream()
        retention(&events)
        var sibling = BrokerConfiguration.Stream()
        sibling.name = "events.x"
        configuration.streams = [events, sibling]
        // A link of `events` whose cursor key, `events.x.late`, reads like one of `events.x`.
        configuration.links = [BrokerConfiguration.Link(name: "x.late", stream: "events", adapter: "sqlite")]
        return try await ClusterStreams.open(configuration: configuration, cluster: try #require(configuration.cluster), environment: [:], logger: logger)
    }

    /// Appends `count` entries named `<name>-<i>` as one message.
    static func appendMessage(_ store: JetStreamStreamStore, _ name: String, count: Int = 3, key: String? = nil) async throws -> AppendResult {
        try await store.append((0..<count).map { Self.entry("\(name)-\($0)") }, idempotencyKey: key).result
    }

    @Test func retentionRemovesTheOldestMessagesEveryCursorPassedAndNeverTheLast() async throws {
        try await withServer { server in
            let member = try await Self.member(server) { $0.retentionBytesMax = 1 }
            defer { Task { await member.close() } }
            let store = try #require(member.stores["events"])
            let sibling = try #require(member.stores["events.x"])
            for index in 0..<10 { _ = try await Self.appendMessage(store, "e\(index)", key: index == 2 ? "kept-key" : nil) }
            #expect(try await store.currentInfo().endOffset == 30, "10 messages of 3")

            // A link at offset 13 (message 5 holds 12..<15); the other stream's link at 0 holds nothing back here.
            try await store.linkCursorStore().store(link: "crm", offset: 13)
            try await sibling.linkCursorStore().store(link: "crm", offset: 0)
            let first = try await store.applyRetention()
            #expect(first.deletedMessages == 4 && first.newStartOffset == 12 && first.keptForCursors == ["crm"], "\(first)")
            #expect(first.deletedBytes > 0 && first.lostRanges.isEmpty)
            let info = try await store.currentInfo()
            #expect(info.startOffset == 12 && info.endOffset == 30)
            #expect(try await Self.readAll(store, from: 13).map(\.key) == (4..<10).flatMap { i in (0..<3).map { "e\(i)-\($0)" } }.dropFirst(1).map { $0 })
            #expect(try await store.applyRetention().deletedMessages == 0, "the cursor has not moved")

            // The key's append (message 3) is gone: a retry is told so, and nothing is appended.
            await #expect(throws: LogError.idempotencyKeyAppendRemoved(key: "kept-key")) {
                _ = try await Self.appendMessage(store, "e2", key: "kept-key")
            }
            #expect(try await store.currentInfo().endOffset == 30)

            // The link `x.late` of this stream (key `events.x.late`) holds the cut in message 6 (15..<18).
            try await store.linkCursorStore().store(link: "crm", offset: 30)
            try await store.linkCursorStore().store(link: "x.late", offset: 16)
            let held = try await store.applyRetention()
            #expect(held.deletedMessages == 1 && held.newStartOffset == 15 && held.keptForCursors == ["x.late"], "\(held)")

            // Every cursor at the end: all but the last message go, and appends go on after it.
            try await store.linkCursorStore().store(link: "x.late", offset: 30)
            let second = try await store.applyRetention()
            #expect(second.deletedMessages == 4 && second.newStartOffset == 27 && second.keptForCursors.isEmpty, "\(second)")
            #expect(try await Self.appendMessage(store, "after", count: 1).firstOffset == 30)
            #expect(try await Self.readAll(store, from: 27).map(\.key) == ["e9-0", "e9-1", "e9-2", "after-0"])
            // Reading from before the start is out of range, as on the segment log.
            await #expect(throws: LogError.offsetOutOfRange(requested: 5, start: 27, end: 31)) {
                _ = try await store.linkSource().read(from: 5, maxCount: 10)
            }
        }
    }

    @Test func retentionByAgeRemovesWhatIsOlderAndDropsUnconsumedEntriesOnlyWhenToldTo() async throws {
        try await withServer { server in
            let member = try await Self.member(server) {
                $0.retentionAgeMsMax = 60_000
                $0.retentionDropsUnconsumed = true
            }
            defer { Task { await member.close() } }
            let store = try #require(member.stores["events"])
            // Five messages, each appended in a later millisecond than the one before.
            var times: [Int64] = []
            for index in 0..<5 {
                let previous = times.last ?? 0
                try await withTimeout(ms: 1_000, "the clock to pass \(previous)") { while wallClockMs() <= previous { await Task.yield() } }
                _ = try await Self.appendMessage(store, "m\(index)")
                times.append(wallClockMs())
            }
            try await store.linkCursorStore().store(link: "slow", offset: 0)
            #expect(try await store.applyRetention().deletedMessages == 0, "all younger than a minute")

            // As of a minute after the second append finished: the first two are older than the limit.
            let report = try await store.applyRetention(nowMs: times[1] + 60_000)
            #expect(report.deletedMessages == 2 && report.newStartOffset == 6, "\(report)")
            #expect(report.lostRanges == ["slow": 0..<6], "the link's unread entries went, and it is told")
            // An hour later every message is too old: all but the last go.
            let later = try await store.applyRetention(nowMs: times[4] + 3_600_000)
            #expect(later.deletedMessages == 2 && later.newStartOffset == 12 && later.lostRanges == ["slow": 0..<12], "\(later)")
            #expect(try await store.currentInfo().startOffset == 12)
        }
    }
}
