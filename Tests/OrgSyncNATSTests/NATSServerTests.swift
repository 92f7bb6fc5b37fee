import Foundation
@testable import OrgSyncNATS
import OrgSyncTestNATS
import OrgSyncTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The client against a real nats-server 2.9: handshake, publish/subscribe with headers,
/// request/reply (and no responders), JetStream streams, acknowledged and deduplicated
/// publishes, expectations, reads — and what a caller sees when the server dies.
@Suite(.serialized) struct NATSServerTests {
    func withServer(_ body: (NATSTestServer, NATSConnection) async throws -> Void) async throws {
        let server = try await NATSTestServer()
        defer { server.stop() }
        let connection = try await NATSConnection.connect(server.options())
        do {
            try await body(server, connection)
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
    }

    @Test func publishSubscribeAndRequestReplyWithHeaders() async throws {
        try await withServer { _, connection in
            let info = try #require(await connection.serverInfo)
            #expect(info.headers && info.jetStream && info.maxPayloadBytes == 1 << 20)
            let subscription = try await connection.subscribe("orders.*")
            try await connection.flush(timeoutMs: 5_000)  // the server has the SUB before the PUB
            try await connection.publish("orders.new", payload: Array("one".utf8), headers: NATSHeaders([.init("Trace", "7")]))
            try await connection.publish("other", payload: Array("not for us".utf8))
            try await connection.publish("orders.old", payload: [0, 13, 10, 255])
            var iterator = subscription.makeAsyncIterator()
            let first = try #require(try await iterator.next())
            #expect(first.subject == "orders.new" && first.payload == Array("one".utf8) && first.headers?["Trace"] == "7")
            let second = try #require(try await iterator.next())
            #expect(second.subject == "orders.old" && second.payload == [0, 13, 10, 255] && second.headers == nil)

            // A responder: answers each request with its payload reversed.
            let service = try await connection.subscribe("svc.reverse")
            let responder = Task {
                for try await request in service {
                    guard let replyTo = request.replyTo else { continue }
                    try await connection.publish(replyTo, payload: request.payload.reversed())
                }
            }
            defer { responder.cancel() }
            try await connection.flush(timeoutMs: 5_000)
            let reply = try await connection.request("svc.reverse", payload: Array("abc".utf8), timeoutMs: 5_000)
            #expect(reply.payload == Array("cba".utf8))
            let answers = try await withThrowingTaskGroup(of: [UInt8].self) { group in
                for i in 0..<50 { group.addTask { try await connection.request("svc.reverse", payload: [UInt8(i), 1], timeoutMs: 5_000).payload } }
                return try await group.reduce(into: Set<[UInt8]>()) { $0.insert($1) }
            }
            #expect(answers == Set((0..<50).map { [1, UInt8($0)] }), "50 requests at once each got its own reply")

            let started = ContinuousClock.now
            await #expect(throws: NATSError.noResponders(subject: "nobody.home")) {
                _ = try await connection.request("nobody.home", timeoutMs: 5_000)
            }
            #expect(ContinuousClock.now - started < .seconds(2), "no responders is an answer, not a timeout")
            let silent = try await connection.subscribe("svc.silent")
            try await connection.flush(timeoutMs: 5_000)
            await #expect(throws: NATSError.timedOut("a reply on svc.silent")) {
                _ = try await connection.request("svc.silent", timeoutMs: 200)
            }
            await connection.unsubscribe(silent)
        }
    }

    @Test func whatCannotBeSentIsRefusedBeforeItIsWritten() async throws {
        try await withServer { _, connection in
            await #expect(throws: NATSError.payloadTooLarge(bytes: (1 << 20) + 1, maxBytes: 1 << 20)) {
                try await connection.publish("big", payload: [UInt8](repeating: 1, count: (1 << 20) + 1))
            }
            await #expect(throws: NATSError.invalidSubject("a b")) { try await connection.publish("a b") }
            await #expect(throws: NATSError.invalidHeaders) {
                try await connection.publish("a", headers: NATSHeaders([.init("X", "1\r\nPUB evil 1")]))
            }
            try await connection.flush(timeoutMs: 5_000)
            let connected = await connection.isConnected
            let serverError = await connection.lastServerError
            #expect(connected && serverError == nil, "nothing reached the server")
        }
    }

    @Test func aSubscriberThatFallsBehindEndsWithSlowConsumerNotUnboundedMemory() async throws {
        let server = try await NATSTestServer()
        defer { server.stop() }
        var options = server.options()
        options.subscriptionMessagesMax = 10
        let connection = try await NATSConnection.connect(options)
        let subscription = try await connection.subscribe("flood")
        try await connection.flush(timeoutMs: 5_000)
        for i in 0..<50 { try await connection.publish("flood", payload: [UInt8(i)]) }
        try await connection.flush(timeoutMs: 5_000)
        var received = 0
        await #expect(throws: NATSError.slowConsumer(subject: "flood")) {
            for try await _ in subscription { received += 1 }
        }
        #expect(received == 10, "the buffer held its bound, then the subscription ended")
        #expect(await connection.isConnected, "the connection goes on")
        await connection.close()
    }

    @Test func jetStreamStoresAcknowledgesDeduplicatesAndChecksExpectations() async throws {
        try await withServer { _, connection in
            let js = JetStream(connection: connection)
            let config = JetStreamStreamConfig(name: "EVENTS", subjects: ["events.>"], duplicateWindowNs: 60_000_000_000, allowDirect: true)
            let created = try await js.createStream(config)
            #expect(created.config.name == "EVENTS" && created.state.messages == 0)
            #expect(try await js.createStream(config).config.subjects == ["events.>"], "the same config again is the same stream")

            let first = try await js.publish("events.a", payload: Array("one".utf8), messageID: "m1", expectedLastSequence: 0)
            #expect(first.stream == "EVENTS" && first.sequence == 1 && !first.duplicate)
            let again = try await js.publish("events.a", payload: Array("one".utf8), messageID: "m1", expectedLastSequence: 0)
            #expect(again.sequence == 1 && again.duplicate, "a retry of an acknowledged publish is not stored twice")
            let wrong = await #expect(throws: JetStreamAPIError.self) {
                _ = try await js.publish("events.b", payload: Array("two".utf8), messageID: "m2", expectedLastSequence: 0)
            }
            #expect(wrong?.errorCode == JetStreamAPIError.wrongLastSequence)
            let second = try await js.publish("events.b", payload: Array("two".utf8), messageID: "m2", expectedLastSequence: 1)
            #expect(second.sequence == 2)
            let bySubject = try await js.publish("events.a", payload: [], expectedLastSubjectSequence: 1)
            #expect(bySubject.sequence == 3)

            let stored = try await js.message(stream: "EVENTS", sequence: 2)
            #expect(stored.subject == "events.b" && stored.payload == Array("two".utf8) && stored.headers?["Nats-Msg-Id"] == "m2")
            let missing = await #expect(throws: JetStreamAPIError.self) { _ = try await js.message(stream: "EVENTS", sequence: 99) }
            #expect(missing?.errorCode == JetStreamAPIError.messageNotFound)
            #expect(try await js.streamInfo("EVENTS").state.lastSequence == 3)
            await #expect(throws: NATSError.noResponders(subject: "nostream.x")) {
                _ = try await js.publish("nostream.x", payload: [1])
            }
            try await js.deleteStream("EVENTS")
            let gone = await #expect(throws: JetStreamAPIError.self) { _ = try await js.streamInfo("EVENTS") }
            #expect(gone?.errorCode == JetStreamAPIError.streamNotFound)
        }
    }

    @Test func keyValueWritesByRevisionAndExactlyOneOfRacingCreatorsWins() async throws {
        try await withServer { _, connection in
            let js = JetStream(connection: connection)
            let bucket = try await KeyValueBucket.create(js, name: "leases", history: 5)
            #expect(try await bucket.get("node.a") == nil)
            let first = try await bucket.create("node.a", Array("v1".utf8))
            await #expect(throws: KeyValueError.keyExists("node.a")) { try await bucket.create("node.a", Array("v2".utf8)) }
            #expect(try await bucket.get("node.a") == KeyValueEntry(key: "node.a", value: Array("v1".utf8), revision: first))
            let second = try await bucket.update("node.a", Array("v2".utf8), revision: first)
            await #expect(throws: KeyValueError.wrongRevision(key: "node.a", expected: first)) {
                try await bucket.update("node.a", Array("stale".utf8), revision: first)
            }
            #expect(try await bucket.get("node.a")?.revision == second)
            await #expect(throws: KeyValueError.wrongRevision(key: "node.a", expected: first)) { try await bucket.delete("node.a", revision: first) }
            try await bucket.delete("node.a", revision: second)
            #expect(try await bucket.get("node.a") == nil, "deleted")
            let again = try await bucket.create("node.a", Array("v3".utf8))
            #expect(again > second)
            #expect(try await bucket.get("node.a")?.value == Array("v3".utf8), "a deleted key can be created again")
            try await bucket.put("other", [1])
            #expect(try await KeyValueBucket.bind(js, name: "leases").get("other")?.value == [1])
            let missing = await #expect(throws: JetStreamAPIError.self) { _ = try await KeyValueBucket.bind(js, name: "nobucket") }
            #expect(missing?.errorCode == JetStreamAPIError.streamNotFound)
            await #expect(throws: KeyValueError.invalidKey("bad key")) { _ = try await bucket.get("bad key") }
            await #expect(throws: KeyValueError.invalidKey(".hidden")) { try await bucket.put(".hidden", []) }

            // Eight creators race for one key: exactly one wins, the others learn it exists.
            let winners = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        do {
                            _ = try await bucket.create("owner", [UInt8(i)])
                            return 1
                        } catch KeyValueError.keyExists {
                            return 0
                        }
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(winners == 1)
        }
    }

    @Test func aLostConnectionIsMadeAgainWithItsSubscriptionsAndTheHeldPublishesInOrder() async throws {
        let first = try await NATSTestServer()
        var options = first.options()
        options.reconnect = NATSReconnectPolicy(waitBaseMs: 20, waitMaxMs: 200, jitterMs: 10)
        let connection = try await NATSConnection.connect(options)
        let js = JetStream(connection: connection)
        _ = try await js.createStream(JetStreamStreamConfig(name: "KEEP", subjects: ["keep.>"]))
        #expect(try await js.publish("keep.a", payload: [1]).sequence == 1)
        let subscription = try await connection.subscribe("live")
        try await connection.flush(timeoutMs: 5_000)
        var iterator = subscription.makeAsyncIterator()
        try await connection.publish("live", payload: [0])
        #expect(try await iterator.next()?.payload == [0])

        await first.kill()
        try await withTimeout(ms: 5_000, "the loss to be noticed") {
            while await connection.isConnected { try await Task.sleep(for: .milliseconds(5)) }
        }
        try await connection.publish("live", payload: [1])  // held while disconnected
        try await connection.publish("live", payload: [2])
        await #expect(throws: NATSError.disconnected) { try await connection.flush(timeoutMs: 1_000) }

        let second = try await NATSTestServer(port: first.port, directory: first.directory)  // same address, same store
        defer { second.stop() }
        try await withTimeout(ms: 10_000, "the reconnect") {
            while !(await connection.isConnected) { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(try await iterator.next()?.payload == [1])
        #expect(try await iterator.next()?.payload == [2], "held publishes went out in order, after the subscription was made again")
        let ack = try await js.publish("keep.b", payload: [2])
        #expect(ack.stream == "KEEP" && ack.sequence == 2, "requests work again, and the stream survived on disk")
        await connection.close()
        await #expect(throws: NATSError.self) { try await connection.publish("live", payload: [3]) }
    }

    @Test func publishesHeldWhileDisconnectedAreBoundedAndAttemptsTooWhenAsked() async throws {
        let server = try await NATSTestServer()
        defer { server.stop() }
        var patient = server.options()
        patient.reconnect = NATSReconnectPolicy(waitBaseMs: 10, waitMaxMs: 50, jitterMs: 0)
        patient.reconnect?.pendingBytesMax = 64
        var brief = server.options()
        brief.reconnect = NATSReconnectPolicy(waitBaseMs: 10, waitMaxMs: 20, jitterMs: 0, attemptsMax: 3)
        let holding = try await NATSConnection.connect(patient)
        let givingUp = try await NATSConnection.connect(brief)
        await server.kill()
        try await withTimeout(ms: 5_000, "the loss to be noticed") {
            while await holding.isConnected { try await Task.sleep(for: .milliseconds(5)) }
        }
        // 64 bytes may wait: one publish of 52 (PUB a 40, the payload, CRLF) fits, a second does not.
        try await holding.publish("a", payload: [UInt8](repeating: 7, count: 40))
        await #expect(throws: NATSError.reconnectBufferFull(bytesMax: 64)) {
            try await holding.publish("a", payload: [UInt8](repeating: 7, count: 40))
        }
        await holding.close()
        // Nobody listens on the port any more: three attempts, then closed for good.
        try await withTimeout(ms: 10_000, "the attempts to run out") {
            while true {
                do {
                    try await givingUp.publish("a", payload: [1])
                } catch NATSError.closed(let why) {
                    #expect(why.contains("gave up reconnecting after 3 attempts"))
                    return
                } catch {}
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        await givingUp.close()
    }

    @Test func aReaderReadsAStreamInOrderFromASequenceAndGoesOnWhenItsConsumerIsGone() async throws {
        try await withServer { _, connection in
            let js = JetStream(connection: connection)
            _ = try await js.createStream(JetStreamStreamConfig(name: "LOG", subjects: ["log.>"]))
            for i in 1...1_000 { _ = try await js.publish("log.\(i % 3)", payload: Array(String(i).utf8)) }
            let reader = JetStreamReader(jetStream: js, stream: "LOG", from: 500)
            var read: [UInt64] = []
            for _ in 0..<10 where read.count < 501 {
                let batch = try await reader.next(batch: 100, waitMs: 500)
                #expect(batch.count <= 100)
                #expect(batch.allSatisfy { $0.payload == Array(String($0.sequence).utf8) && $0.subject == "log.\($0.sequence % 3)" })
                read += batch.map(\.sequence)
            }
            #expect(read == Array(500...1_000), "every message once, in order, from 500")
            let started = ContinuousClock.now
            #expect(try await reader.next(batch: 10, waitMs: 300).isEmpty, "nothing new: empty after the wait")
            #expect(ContinuousClock.now - started >= .milliseconds(250))
            // Its consumer deleted behind its back: the reader makes one again from where it stands.
            struct Names: Decodable { var consumers: [String]? }
            let names = try JSONDecoder().decode(
                Names.self, from: Data(try await connection.request("$JS.API.CONSUMER.NAMES.LOG", timeoutMs: 5_000).payload))
            #expect(names.consumers?.count == 1)
            for name in names.consumers ?? [] {
                _ = try await connection.request("$JS.API.CONSUMER.DELETE.LOG.\(name)", timeoutMs: 5_000)
            }
            _ = try await js.publish("log.x", payload: Array("1001".utf8))
            #expect(try await reader.next(batch: 10, waitMs: 500).map(\.sequence) == [1_001])
            #expect(await reader.nextSequence == 1_002)
            // No wait: what the stream holds, at once (the server ends the pull itself), and
            // nothing at once when it holds nothing new.
            let noWait = JetStreamReader(jetStream: js, stream: "LOG", from: 995)
            let quick = ContinuousClock.now
            #expect(try await noWait.next(batch: 100, waitMs: 0).map(\.sequence) == Array(995...1_001))
            #expect(try await noWait.next(batch: 100, waitMs: 0).isEmpty)
            #expect(ContinuousClock.now - quick < .milliseconds(900), "ended by the server, not by the reader's own bound")

            let v1 = JetStreamReader.ackMetadata("$JS.ACK.LOG.c.1.77.3.1700000000000000000.0")
            #expect(v1?.streamSequence == 77 && v1?.consumerSequence == 3)
            let v2 = JetStreamReader.ackMetadata("$JS.ACK.hub.H.LOG.c.1.78.4.1700000000000000000.0.r")
            #expect(v2?.streamSequence == 78 && v2?.consumerSequence == 4, "the 12-token form of newer servers")
            #expect(JetStreamReader.ackMetadata("$JS.ACK.LOG.c.1.x.3.1.0") == nil && JetStreamReader.ackMetadata("_INBOX.a") == nil)
        }
    }

    @Test func aServerThatDiesEndsEveryCallWithClosed() async throws {
        let server = try await NATSTestServer()
        defer { server.stop() }
        let connection = try await NATSConnection.connect(server.options())
        let subscription = try await connection.subscribe("svc.never")
        try await connection.flush(timeoutMs: 5_000)
        let pending = Task { try await connection.request("svc.never", timeoutMs: 30_000) }
        let reader = Task { for try await _ in subscription {} }
        // The request reached the server (its subscriber got nothing to answer); then the server dies.
        try await connection.flush(timeoutMs: 5_000)
        await server.kill()
        await #expect(throws: NATSError.self) { _ = try await pending.value }
        await #expect(throws: NATSError.self) { try await reader.value }
        try await withTimeout(ms: 5_000, "the connection to notice") {
            while await connection.isConnected { await Task.yield() }
        }
        await #expect(throws: NATSError.self) { try await connection.publish("x", payload: [1]) }
        await connection.close()
    }

    @Test func nothingListeningFailsTheConnectWithTheAddress() async throws {
        let port = try NATSTestServer.freePort()
        let error = await #expect(throws: NATSError.self) { _ = try await NATSConnection.connect(NATSConnectionOptions(port: port)) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("127.0.0.1:\(port)"))
    }
}
