import Foundation
import Logging
import OrgSyncBroker
import OrgSyncCluster
import OrgSyncCore
import OrgSyncLog
import OrgSyncNATS
import OrgSyncPluginAPI
import OrgSyncTestCertificates
import OrgSyncTestNATS
import OrgSyncTestSupport
import Testing

/// Cluster streams against real nats-servers: several brokers (each its own connection and
/// stores) appending to one JetStream stream, reading it, sharing cursors and ids; an R3 stream
/// through the death of its servers.
@Suite(.serialized) struct JetStreamStreamStoreTests {
    static let logger = Logger(label: "test.cluster")

    static func configuration(urls: [String], node: String, replicas: Int) -> BrokerConfiguration {
        var configuration = BrokerConfiguration()
        configuration.streams = [BrokerConfiguration.Stream()]  // "events"
        var cluster = BrokerConfiguration.Cluster(node: node, natsUrls: urls)
        cluster.replicas = replicas
        cluster.requestTimeoutMs = 2_000
        configuration.cluster = cluster
        return configuration
    }

    /// A broker's streams on the cluster at `urls`.
    static func member(_ urls: [String], node: String, replicas: Int = 1) async throws -> ClusterStreams {
        let configuration = configuration(urls: urls, node: node, replicas: replicas)
        return try await ClusterStreams.open(configuration: configuration, cluster: try #require(configuration.cluster), environment: [:], logger: logger)
    }

    static func entry(_ id: String) -> [UInt8] {
        Array(#"{"org":"o","object":"A","op":"upsert","key":"\#(id)","ts":"t","fields":{"id":"\#(id)"}}"#.utf8)
    }

    /// Every entry of the stream from `start`, read through a link's source.
    static func readAll(_ store: JetStreamStreamStore, from start: UInt64 = 0) async throws -> [Entry] {
        let source = store.linkSource()
        var entries: [Entry] = []
        var offset = Offset(start)
        let end = await source.endOffset()
        let unavailableUntil = ContinuousClock.now + .seconds(30)
        while offset < end {
            let batch: [Entry]
            do {
                batch = try await source.read(from: offset, maxCount: 7)
            } catch let error as LinkStoreUnavailable where ContinuousClock.now < unavailableUntil {
                // A server restarting: read again, as a link does (bounded).
                _ = error
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            guard let last = batch.last else {
                // Stored, yet not on the server that answers this reader (a replica catching
                // up after a restart): it comes, as to a waiting link.
                let waitingAt = offset
                try await withTimeout(ms: 20_000, "offset \(waitingAt) to reach the reader") { try await source.waitForEntries(after: waitingAt) }
                continue
            }
            entries += batch
            offset = Offset(last.offset.rawValue + 1)
        }
        return entries
    }

    func withServer(_ body: (NATSTestServer) async throws -> Void) async throws {
        let server = try await NATSTestServer()
        defer { server.stop() }
        try await body(server)
    }

    @Test func appendsGetDenseOffsetsAndReadBackFromAnyOffset() async throws {
        try await withServer { server in
            let broker = try await Self.member(["127.0.0.1:\(server.port)"], node: "a")
            defer { Task { await broker.close() } }
            let store = try #require(broker.stores["events"])
            var expected: [String] = []
            #expect(try await store.currentInfo().endOffset == 0, "an empty stream")
            for (index, count) in [1, 5, 3, 40].enumerated() {
                let ids = (0..<count).map { "a\(index)-\($0)" }
                let result = try await store.append(ids.map(Self.entry), idempotencyKey: nil).result
                #expect(result.firstOffset == UInt64(expected.count) && result.count == count)
                expected += ids
                // The ends are cached by sequence: each append moves the end, never the start.
                let info = try await store.currentInfo()
                #expect(info.startOffset == 0 && info.endOffset == UInt64(expected.count))
            }
            let info = try await store.currentInfo()
            #expect(info.startOffset == 0 && info.endOffset == 49)
            let all = try await Self.readAll(store)
            #expect(all.map(\.key) == expected)
            #expect(all.map(\.offset.rawValue) == Array(0..<49))
            // From inside an append (offset 3 is the third entry of the second append) and the last.
            #expect(try await Self.readAll(store, from: 3).map(\.key) == Array(expected.dropFirst(3)))
            #expect(try await store.linkSource().read(from: 48, maxCount: 10).map(\.key) == [expected[48]])
            #expect(try await store.linkSource().read(from: 49, maxCount: 10).isEmpty)
        }
    }

    /// `cluster.tls` and credentials as a member uses them: the member's own connection options
    /// (``BrokerConfiguration/Cluster/connectionOptions(environment:)``), a DNS name checked
    /// against the server's certificate, a password from the environment.
    @Test func aMemberReachesNATSOverTLSWithAPasswordFromTheEnvironment() async throws {
        let authority = try TestCertificates(directory: try makeTemporaryDirectory("orgsync-cluster-tls"))
        let certificate = try authority.issue("nats", hosts: ["127.0.0.1", "localhost"])
        let port = try NATSTestServer.freePort()
        let environment = ["ORGSYNC_NATS_PASSWORD": "s3cret-pw"]
        var configuration = Self.configuration(urls: ["tls://localhost:\(port)"], node: "a", replicas: 1)
        configuration.cluster?.tls = .init(caFile: authority.caFile)
        configuration.cluster?.user = "orgsync"
        configuration.cluster?.passwordEnv = "ORGSYNC_NATS_PASSWORD"
        let cluster = try #require(configuration.cluster)
        let server = try await NATSTestServer(
            port: port,
            extraArguments: ["--tls", "--tlscert", certificate.certificateFile, "--tlskey", certificate.keyFile, "--user", "orgsync", "--pass", "s3cret-pw"],
            client: try cluster.connectionOptions(environment: environment))
        defer { server.stop() }

        let member = try await ClusterStreams.open(configuration: configuration, cluster: cluster, environment: environment, logger: Self.logger)
        let store = try #require(member.stores["events"])
        let result = try await store.append(["t1", "t2", "t3"].map(Self.entry), idempotencyKey: "over-tls").result
        #expect(result.firstOffset == 0 && result.count == 3)
        #expect(try await Self.readAll(store).map(\.key) == ["t1", "t2", "t3"])
        await member.close()

        do {
            let wrong = try await ClusterStreams.open(
                configuration: configuration, cluster: cluster, environment: ["ORGSYNC_NATS_PASSWORD": "wrong-pw-9"], logger: Self.logger)
            await wrong.close()
            Issue.record("a wrong password was taken")
        } catch {
            #expect("\(error)".contains("Authorization Violation") && !"\(error)".contains("wrong-pw-9"), "\(error)")
        }
    }

    @Test func brokersAppendingToOneStreamAtOnceGetDenseDisjointOffsets() async throws {
        try await withServer { server in
            let urls = ["127.0.0.1:\(server.port)"]
            let brokers = [try await Self.member(urls, node: "a"), try await Self.member(urls, node: "b"), try await Self.member(urls, node: "c")]
            defer { Task { for broker in brokers { await broker.close() } } }
            let appendsPerBroker = 40
            // Every broker appends at once, several appends in flight each: the fence decides.
            let results = try await withThrowingTaskGroup(of: (String, [String], AppendResult).self) { group in
                for (b, broker) in brokers.enumerated() {
                    let store = try #require(broker.stores["events"])
                    for a in 0..<appendsPerBroker {
                        group.addTask {
                            let ids = (0..<(1 + a % 4)).map { "b\(b)-a\(a)-\($0)" }
                            return ("b\(b)-a\(a)", ids, try await store.append(ids.map(Self.entry), idempotencyKey: nil).result)
                        }
                    }
                }
                var results: [(String, [String], AppendResult)] = []
                for try await result in group { results.append(result) }
                return results
            }
            let sorted = results.sorted { $0.2.firstOffset < $1.2.firstOffset }
            var next: UInt64 = 0
            for (_, ids, result) in sorted {
                #expect(result.firstOffset == next, "offsets must be dense and disjoint")
                #expect(result.count == ids.count)
                next = result.lastOffset + 1
            }
            // What each broker was told is what every broker reads at those offsets.
            let expected = sorted.flatMap(\.1)
            for broker in brokers {
                let read = try await Self.readAll(try #require(broker.stores["events"]))
                #expect(read.map(\.key) == expected)
            }
        }
    }

    @Test func unkeyedAppendsThatArriveTogetherShareAMessageEachWithItsOwnOffsets() async throws {
        try await withServer { server in
            let broker = try await Self.member(["127.0.0.1:\(server.port)"], node: "a")
            defer { Task { await broker.close() } }
            let store = try #require(broker.stores["events"])
            let appendCount = 40
            // All at once: while one message is in flight, the appends that arrive wait for the
            // publish turn together and go as one message.
            let results = try await withThrowingTaskGroup(of: ([String], AppendResult).self) { group in
                for a in 0..<appendCount {
                    group.addTask {
                        let ids = (0..<(1 + a % 3)).map { "a\(a)-\($0)" }
                        return (ids, try await store.append(ids.map(Self.entry), idempotencyKey: nil).result)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let sorted = results.sorted { $0.1.firstOffset < $1.1.firstOffset }
            var next: UInt64 = 0
            for (ids, result) in sorted {
                #expect(result.firstOffset == next && result.count == ids.count, "each append its own dense range")
                next = result.lastOffset + 1
            }
            #expect(try await Self.readAll(store).map(\.key) == sorted.flatMap(\.0), "each was told where its entries are")
            let messages = try await store.jetStream.streamInfo(store.jetStreamName).state.messages
            #expect(messages < UInt64(appendCount), "\(messages) messages for \(appendCount) appends: none were grouped")
            // A keyed append is a message of its own (its key is the message's id).
            let keyed = try await store.append([Self.entry("k")], idempotencyKey: "key-1").result
            #expect(keyed.firstOffset == next)
            #expect(try await store.jetStream.streamInfo(store.jetStreamName).state.messages == messages + 1)
        }
    }

    @Test func whenAGroupCannotBeStoredEveryMemberIsToldAndNoneWaits() async throws {
        try await withServer { server in
            let broker = try await Self.member(["127.0.0.1:\(server.port)"], node: "a")
            defer { Task { await broker.close() } }
            let store = try #require(broker.stores["events"])
            _ = try await store.append([Self.entry("before")], idempotencyKey: nil)
            await server.kill()
            let failures = try await withTimeout(ms: 60_000, "every append's answer") {
                try await withThrowingTaskGroup(of: Bool.self) { group in
                    for a in 0..<20 {
                        group.addTask {
                            do {
                                _ = try await store.append([Self.entry("a\(a)")], idempotencyKey: nil)
                                return false
                            } catch {
                                return true
                            }
                        }
                    }
                    return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
                }
            }
            #expect(failures == 20)
        }
    }

    @Test func anIdempotencyKeyIsHonouredByEveryBroker() async throws {
        try await withServer { server in
            let urls = ["127.0.0.1:\(server.port)"]
            let a = try await Self.member(urls, node: "a")
            let b = try await Self.member(urls, node: "b")
            defer { Task { await a.close(); await b.close() } }
            let storeA = try #require(a.stores["events"])
            let storeB = try #require(b.stores["events"])
            _ = try await storeA.append([Self.entry("before")], idempotencyKey: nil)
            let entries = ["x", "y", "z"].map(Self.entry)
            let first = try await storeA.append(entries, idempotencyKey: "order-7")
            #expect(first == .appended(AppendResult(firstOffset: 1, lastOffset: 3)))
            _ = try await storeB.append([Self.entry("between")], idempotencyKey: nil)
            // The retry reaches another broker: the first answer, nothing appended.
            #expect(try await storeB.append(entries, idempotencyKey: "order-7") == .replayed(AppendResult(firstOffset: 1, lastOffset: 3)))
            #expect(try await storeA.append(entries, idempotencyKey: "order-7") == .replayed(AppendResult(firstOffset: 1, lastOffset: 3)))
            // The same key with other entries is refused, on either broker.
            await #expect(throws: LogError.idempotencyKeyReused(key: "order-7")) {
                try await storeB.append(["x", "y"].map(Self.entry), idempotencyKey: "order-7")
            }
            // Appends after a replay still follow the real tail.
            #expect(try await storeB.append([Self.entry("after")], idempotencyKey: nil).result.firstOffset == 5)
            #expect(try await Self.readAll(storeA).map(\.key) == ["before", "x", "y", "z", "between", "after"])
        }
    }

    @Test func aLinkSourceWakesOnAnotherBrokersAppendAndCursorsAndIdsAreShared() async throws {
        try await withServer { server in
            let urls = ["127.0.0.1:\(server.port)"]
            let a = try await Self.member(urls, node: "a")
            let b = try await Self.member(urls, node: "b")
            defer { Task { await a.close(); await b.close() } }
            let storeA = try #require(a.stores["events"])
            let storeB = try #require(b.stores["events"])
            #expect(storeA.lineage == storeB.lineage)
            _ = try await storeA.append([Self.entry("one")], idempotencyKey: nil)
            let source = storeA.linkSource()
            #expect(try await source.read(from: 0, maxCount: 10).map(\.key) == ["one"])
            // Waiting at the end; the append comes through the other broker.
            let waiting = Task { try await source.waitForEntries(after: 0) }
            _ = try await storeB.append([Self.entry("two"), Self.entry("three")], idempotencyKey: nil)
            try await withTimeout(ms: 10_000, "the wait to end on broker b's append") { try await waiting.value }
            #expect(try await source.read(from: 1, maxCount: 10).map(\.key) == ["two", "three"])
            #expect(await source.endOffset() == 3)
            // A wait that nothing answers ends when cancelled.
            let idle = Task { try await source.waitForEntries(after: 3) }
            idle.cancel()
            await #expect(throws: CancellationError.self) { try await withTimeout(ms: 10_000, "a cancelled wait to end") { try await idle.value } }

            try await storeA.linkCursorStore().store(link: "crm", offset: 2)
            #expect(try await storeB.linkCursorStore().load(link: "crm") == 2)
            #expect(try await storeB.linkCursorStore().load(link: "other") == nil)

            // A broker opening the stream later finds the same id and the same tail.
            let c = try await Self.member(urls, node: "c")
            defer { Task { await c.close() } }
            let storeC = try #require(c.stores["events"])
            #expect(storeC.lineage == storeA.lineage)
            #expect(try await storeC.append([Self.entry("four")], idempotencyKey: nil).result.firstOffset == 3)
        }
    }

    /// The stream's lineage is kept in a bucket any client of the NATS server can write: one
    /// that is not a lineage an IDENTITY file could hold (epoch 0, which targets refuse; an epoch
    /// whose successor overflows; an id that is no id; no epochs; too large) keeps the member
    /// from opening the stream, naming the bucket and what is wrong, instead of serving it.
    @Test func aStreamWhoseLineageInTheBucketIsNotOneIsNotOpened() async throws {
        try await withServer { server in
            let urls = ["127.0.0.1:\(server.port)"]
            let first = try await Self.member(urls, node: "a")
            let good = try #require(first.stores["events"]).lineage
            await first.close()
            let connection = try await NATSConnection.connect(server.options())
            defer { Task { await connection.close() } }
            let bucket = try await KeyValueBucket.bind(JetStream(connection: connection), name: ClusterStreams.lineageBucket)
            let id = good.streamID
            let cases: [(json: String, problem: String)] = [
                (#"{"streamID":"\#(id)","epochs":[{"epoch":0,"startOffset":0}]}"#, "epoch 0 out of range"),
                (#"{"streamID":"\#(id)","epochs":[{"epoch":18446744073709551615,"startOffset":0}]}"#, "out of range"),
                (#"{"streamID":"\#(id)","epochs":[{"epoch":2,"startOffset":5},{"epoch":2,"startOffset":9}]}"#, "epochs out of order"),
                (#"{"streamID":"\#(id)","epochs":[{"epoch":1,"startOffset":5},{"epoch":2,"startOffset":4}]}"#, "epochs out of order"),
                (#"{"streamID":"\#(id)","epochs":[]}"#, "no epoch"),
                (#"{"streamID":"../x","epochs":[{"epoch":1,"startOffset":0}]}"#, "is not 1-64 of"),
                (#"{"streamID":"","epochs":[{"epoch":1,"startOffset":0}]}"#, "is not 1-64 of"),
                (#"{"epochs":[{"epoch":1,"startOffset":0}]}"#, "not a stream lineage"),
                (#"{"streamID":"\#(id)","epochs":[\#(Array(repeating: #"{"epoch":1,"startOffset":0}"#, count: 3_000).joined(separator: ","))]}"#,
                 "more than 65536"),
            ]
            for (json, problem) in cases {
                _ = try await bucket.put("events", Array(json.utf8))
                do {
                    let member = try await Self.member(urls, node: "b")
                    await member.close()
                    Issue.record("opened with lineage \(json.prefix(120))")
                } catch let error as BrokerError {
                    guard case .streamUnavailable(let stream, let why) = error else { Issue.record("\(error)"); continue }
                    #expect(stream == "events")
                    #expect(why.contains(ClusterStreams.lineageBucket) && why.contains(problem), "\(why)")
                }
            }
            // Put back as it was, it opens again with the same id.
            _ = try await bucket.put("events", Array(try JSONEncoder().encode(good)))
            let again = try await Self.member(urls, node: "b")
            #expect(try #require(again.stores["events"]).lineage == good)
            await again.close()
        }
    }

    /// R3 on three nats-servers: appends go on while one server is dead, including the one the
    /// broker is connected to (it moves to another); a server whose store is deleted catches up.
    /// Every acknowledged append is read back once, in order.
    @Test func anR3StreamKeepsEveryAcknowledgedAppendThroughServerDeaths() async throws {
        let cluster = try await NATSTestCluster()
        defer { cluster.stop() }
        let broker = try await Self.member(cluster.urls, node: "a", replicas: 3)
        defer { Task { await broker.close() } }
        let store = try #require(broker.stores["events"])
        var acknowledged: [String: AppendResult] = [:]
        /// Appends with a key until acknowledged (a failover makes some attempts fail), bounded.
        func appendSurely(_ id: String) async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while true {
                do {
                    acknowledged[id] = try await store.append([Self.entry(id)], idempotencyKey: id).result
                    return
                } catch let error as BrokerError where ContinuousClock.now < deadline {
                    _ = error  // unavailable during the failover: the same key again
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        for i in 0..<20 { try await appendSurely("r\(i)") }
        await cluster.server(2).kill()  // not the one the broker is on
        for i in 20..<40 { try await appendSurely("r\(i)") }
        try await cluster.restart(2, keepStore: false)
        // Server 2 rejoins with an empty store: until it caught up, killing another leaves one
        // replica of three, no leader, and no append for as long (this test once timed out so).
        try await cluster.waitForReplicasCaughtUp(stream: store.jetStreamName)
        await cluster.server(0).kill()  // the broker's server: it reconnects to another
        for i in 40..<60 { try await appendSurely("r\(i)") }
        try await cluster.restart(0)
        for i in 60..<80 { try await appendSurely("r\(i)") }

        let read = try await Self.readAll(store)
        let ids = (0..<80).map { "r\($0)" }
        #expect(read.map(\.key) == ids, "every acknowledged append once, in order")
        for (offset, entry) in read.enumerated() {
            #expect(acknowledged[entry.key]?.firstOffset == UInt64(offset), "the offset each append was given is where it is")
        }
    }

    /// While an R3 stream's replicas have no leader, nats-server lets each replica answer for
    /// the stream with its own state — one whose store was lost answers an empty stream, and a
    /// link once took its cursor for "beyond the end". Such an answer is refused: the stream is
    /// unavailable (503; a link waits), never shorter than it was.
    @Test func aStreamWhoseReplicasHaveNoLeaderIsUnavailableNotWhatAReplicaSays() async throws {
        let cluster = try await NATSTestCluster()
        defer { cluster.stop() }
        let broker = try await Self.member([cluster.urls[0]], node: "a", replicas: 3)  // on server 0 only
        defer { Task { await broker.close() } }
        let store = try #require(broker.stores["events"])
        for i in 0..<5 { _ = try await store.append([Self.entry("q\(i)")], idempotencyKey: "q\(i)") }
        #expect(try await store.currentInfo().endOffset == 5)

        await cluster.server(1).kill()
        await cluster.server(2).kill()
        // Server 0 alone: once it sees no leader (a leader that lost its quorum steps down) it
        // answers with its own state and no leader.
        let refusal = try await withTimeout(ms: 30_000, "server 0 to answer without a leader") { () -> String in
            while true {
                do {
                    let end = try await store.currentInfo().endOffset
                    #expect(end == 5, "an answer taken is the stream as acknowledged")
                } catch let error as BrokerError where "\(error)".contains("has no leader") {
                    return "\(error)"
                } catch is BrokerError {
                    // no answer within the request timeout while the replicas notice: again
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        #expect(refusal.contains("JetStream stream"), "\(refusal)")
        await #expect(throws: LinkStoreUnavailable.self) { _ = try await store.linkSource().checkedEndOffset() }
    }
}
