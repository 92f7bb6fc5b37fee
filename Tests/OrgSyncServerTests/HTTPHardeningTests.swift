import Foundation
import HTTPTypes
import Hummingbird
import OrgSyncAPI
import HummingbirdTesting
import NIOCore
import OrgSyncLog
@testable import OrgSyncBroker
@testable import OrgSyncServer
import Testing
import OrgSyncTestSupport

/// Issue 12, the HTTP rows: deadlines and a connection limit on real sockets against the real
/// server, the broker-wide budget of body bytes, HEAD, and content codings.
@Suite struct ConnectionLimitTests {
    /// A connection that never sends a byte is closed at `header_timeout_ms`; a kept-alive one
    /// with no next request at `idle_timeout_ms` after its last response (not earlier).
    @Test func idleConnectionsAreClosedAtTheirDeadline() async throws {
        try await withLiveBroker(yaml: liveYAML("header_timeout_ms: 300\nidle_timeout_ms: 900")) { port, _ in
            let silent = try RawHTTPConnection(port: port)
            let start = ContinuousClock.now
            let silentOutcome = await offThePool { silent.readUntilClosed(timeout: .seconds(5)) }
            let silentFor = ContinuousClock.now - start
            #expect(silentOutcome == [], "a silent connection is closed without an answer")
            #expect(silentFor >= .milliseconds(250), "not before its header deadline: \(silentFor)")
            #expect(silentFor < .seconds(3), "closed within the deadline and a bound: \(silentFor)")

            let keptAlive = try RawHTTPConnection(port: port)
            let answer = await offThePool {
                keptAlive.send(rawRequest("GET", "/health/live"))
                return keptAlive.readResponse(timeout: .seconds(30))
            }
            #expect(answer?.status == 200)
            let answeredAt = ContinuousClock.now
            let idleOutcome = await offThePool { keptAlive.readUntilClosed(timeout: .seconds(6)) }
            let idleFor = ContinuousClock.now - answeredAt
            #expect(idleOutcome == [], "the idle connection is closed")
            #expect(idleFor >= .milliseconds(800), "idle_timeout_ms, not header_timeout_ms, applies between requests: \(idleFor)")
            #expect(idleFor < .seconds(4), "closed within the deadline and a bound: \(idleFor)")
        }
    }

    /// A client dribbling its header block is dropped at `header_timeout_ms` from its first
    /// byte, though bytes keep arriving, and gets no answer.
    @Test func aClientSendingHeadersSlowlyIsDropped() async throws {
        try await withLiveBroker(yaml: liveYAML("header_timeout_ms: 400\nidle_timeout_ms: 20000")) { port, _ in
            let slow = try RawHTTPConnection(port: port)
            let start = ContinuousClock.now
            let (closed, answered, sentHeaders) = await offThePool { () -> (Bool, Bool, Int) in
                guard slow.send("GET /health/live HTTP/1.1\r\nHost: x\r\n") else { return (true, false, 0) }
                var sent = 0
                // One header line every 50 ms (the wait for the server's close is the pacing).
                while ContinuousClock.now - start < .seconds(10) {
                    if let bytes = slow.receive(timeout: .milliseconds(50)) { return (bytes.isEmpty, !bytes.isEmpty, sent) }
                    guard slow.send("X-Slow-\(sent): a\r\n") else { return (true, false, sent) }
                    sent += 1
                }
                return (false, false, sent)
            }
            let droppedAfter = ContinuousClock.now - start
            #expect(closed, "the slow client is dropped")
            #expect(!answered, "and gets no answer")
            #expect(sentHeaders >= 3, "it kept sending while it waited (\(sentHeaders) lines)")
            #expect(droppedAfter >= .milliseconds(350), "not before the deadline: \(droppedAfter)")
            #expect(droppedAfter < .seconds(4), "at the header deadline, not the idle one: \(droppedAfter)")
        }
    }

    /// Past `connections_max` a connection is closed as soon as it is accepted, while those
    /// under the limit keep working; a closed one makes room.
    @Test func connectionsPastTheLimitAreClosedAtOnce() async throws {
        try await withLiveBroker(yaml: liveYAML("connections_max: 2")) { port, _ in
            let first = try RawHTTPConnection(port: port)
            let second = try RawHTTPConnection(port: port)
            for connection in [first, second] {
                let answer = await offThePool {
                    connection.send(rawRequest("GET", "/health/live"))
                    return connection.readResponse(timeout: .seconds(30))
                }
                #expect(answer?.status == 200, "a connection under the limit works")
            }
            let third = try RawHTTPConnection(port: port)
            let start = ContinuousClock.now
            let refused = await offThePool { () -> [UInt8]? in
                third.send(rawRequest("GET", "/health/live"))
                return third.readUntilClosed(timeout: .seconds(5))
            }
            #expect(refused == [], "the connection past the limit is closed without an answer")
            #expect(ContinuousClock.now - start < .seconds(2), "at once, not at a deadline (header_timeout_ms is 10 s)")
            let again = await offThePool {
                second.send(rawRequest("GET", "/health/live"))
                return second.readResponse(timeout: .seconds(30))
            }
            #expect(again?.status == 200, "the connections under the limit still work")

            // Closing one makes room (the server learns of the close asynchronously: a bounded
            // number of attempts, each a full round trip).
            first.close()
            var admitted = false
            for _ in 0..<50 where !admitted {
                let next = try RawHTTPConnection(port: port)
                admitted = await offThePool {
                    next.send(rawRequest("GET", "/health/live"))
                    return next.readResponse(timeout: .seconds(2))?.status == 200
                }
            }
            #expect(admitted, "a closed connection gives its place back")
        }
    }

    @Test func deadlinesAndLimitsHaveDocumentedRanges() throws {
        let defaults = try BrokerConfiguration.parse(yaml: "auth: { enabled: false }", environment: [:]).server
        #expect(defaults.headerTimeoutMs == 10_000)
        #expect(defaults.idleTimeoutMs == 60_000)
        #expect(defaults.connectionsMax == 1_000)
        #expect(defaults.inflightBodyBytesMax == 64 << 20)
        for (field, value) in [("header_timeout_ms", "50"), ("idle_timeout_ms", "0"), ("connections_max", "0"),
                               ("inflight_body_bytes_max", "1024"), ("header_timeout_ms", "99999999999")] {
            let error = #expect(throws: ConfigurationError.self) {
                _ = try BrokerConfiguration.parse(yaml: "auth: { enabled: false }\nserver: { \(field): \(value) }", environment: [:])
            }
            #expect(error.map { "\($0)".contains("server.\(field)") } == true, "\(field): \(value)")
        }
    }
}

/// Body bytes in flight across requests are bounded by `server.inflight_body_bytes_max`.
@Suite struct BodyBudgetRouteTests {
    static let line = entryJSON(0)

    /// `count` NDJSON entries: about `count * 120` bytes.
    static func ndjson(_ count: Int, prefix: String) -> [UInt8] {
        Array((0..<count).map { entryJSON($0).replacingOccurrences(of: "\"k\($0)\"", with: "\"\(prefix)-\($0)\"") }
            .joined(separator: "\n").utf8)
    }

    static func count(_ response: RawResponse?) -> Int? {
        guard let response, response.status == 201 else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])?["count"] as? Int
    }

    /// Two stalled uploads hold the whole budget: every other large body waits its bounded
    /// while, then gets 503 with Retry-After and appends nothing; the stalled ones then finish
    /// with 201, the end offset moves by exactly what 201s acknowledged, and the budget is free
    /// again afterwards.
    @Test func bodiesPastTheBudgetGet503AndAppendNothing() async throws {
        let budget = InflightBodyBudget(bytesMax: 131_072, waitMax: .milliseconds(200))
        try await withLiveBroker(yaml: liveYAML("inflight_body_bytes_max: 131072"), bodyBudget: budget) { port, t in
            let startEnd = t.end
            let held = [Self.ndjson(400, prefix: "held-a"), Self.ndjson(400, prefix: "held-b")]
            let holders = try held.map { _ in try RawHTTPConnection(port: port) }
            for (holder, body) in zip(holders, held) {
                let request = rawRequest("POST", "/v1/streams/events/entries", headers: ["Content-Type: application/x-ndjson"], body: body)
                #expect(holder.send(Array(request[..<(request.count - body.count + 1000)])), "headers and the first 1000 bytes")
            }
            let reservedInTime = try await boundedWait(.seconds(10)) { await budget.waitUntilReserved(atLeast: 131_072) }
            #expect(reservedInTime, "the stalled uploads hold the whole budget")

            let refused = await withTaskGroup(of: RawResponse?.self) { group in
                for i in 0..<6 {
                    group.addTask {
                        guard let connection = try? RawHTTPConnection(port: port) else { return nil }
                        return await offThePool {
                            connection.send(rawRequest("POST", "/v1/streams/events/entries", headers: ["Content-Type: application/x-ndjson"],
                                                       body: Self.ndjson(300, prefix: "busy-\(i)")))
                            return connection.readResponse(timeout: .seconds(30))
                        }
                    }
                }
                return await group.reduce(into: [RawResponse?]()) { $0.append($1) }
            }
            for response in refused {
                #expect(response?.status == 503, "a body past the budget is refused")
                #expect(response?.headers["retry-after"] == "1")
            }
            #expect(t.end == startEnd, "the refused requests appended nothing")

            var acknowledged = 0
            for (holder, body) in zip(holders, held) {
                let answer = await offThePool {
                    holder.send(Array(body[1000...]))
                    return holder.readResponse(timeout: .seconds(30))
                }
                #expect(answer?.status == 201, "the uploads that held the budget complete")
                acknowledged += Self.count(answer) ?? 0
            }
            #expect(acknowledged == 800)
            #expect(t.end == startEnd + UInt64(acknowledged), "the end moved by exactly what 201s acknowledged")
            #expect(await budget.reservedBytes == 0, "the budget is released")

            let later = try RawHTTPConnection(port: port)
            let after = await offThePool {
                later.send(rawRequest("POST", "/v1/streams/events/entries", headers: ["Content-Type: application/x-ndjson"],
                                      body: Self.ndjson(400, prefix: "later")))
                return later.readResponse(timeout: .seconds(30))
            }
            #expect(after?.status == 201, "a later request fits again")
        }
    }

    /// Many concurrent large bodies against a small budget: each gets 201 or 503 (never another
    /// 5xx), the end offset moves by exactly the 201s' counts, and nothing stays reserved.
    @Test func concurrentLargeBodiesEitherFitOrGet503() async throws {
        let budget = InflightBodyBudget(bytesMax: 131_072, waitMax: .milliseconds(100))
        try await withLiveBroker(yaml: liveYAML("inflight_body_bytes_max: 131072"), bodyBudget: budget) { port, t in
            let startEnd = t.end
            let responses = await withTaskGroup(of: RawResponse?.self) { group in
                for i in 0..<16 {
                    group.addTask {
                        guard let connection = try? RawHTTPConnection(port: port) else { return nil }
                        return await offThePool {
                            connection.send(rawRequest("POST", "/v1/streams/events/entries", headers: ["Content-Type: application/x-ndjson"],
                                                       body: Self.ndjson(450, prefix: "c\(i)")))
                            return connection.readResponse(timeout: .seconds(60))
                        }
                    }
                }
                return await group.reduce(into: [RawResponse?]()) { $0.append($1) }
            }
            #expect(responses.allSatisfy { $0?.status == 201 || $0?.status == 503 }, "\(responses.map { $0?.status })")
            #expect(responses.filter { $0?.status == 503 }.allSatisfy { $0?.headers["retry-after"] != nil })
            let acknowledged = responses.compactMap(Self.count).reduce(0, +)
            #expect(acknowledged == 450 * responses.filter { $0?.status == 201 }.count)
            #expect(t.end == startEnd + UInt64(acknowledged))
            #expect(await budget.reservedBytes == 0)
        }
    }

    @Test func theBudgetGrantsInOrderAndNeverPastItsSize() {
        var state = BodyBudgetState(bytesMax: 100)
        #expect(state.reserve(id: 1, bytes: 60) == .granted)
        #expect(state.reserve(id: 2, bytes: 50) == .wait)
        #expect(state.reserve(id: 3, bytes: 10) == .wait, "no overtaking a waiter, though 10 would fit")
        #expect(state.reserve(id: 4, bytes: 101) == .refused)
        #expect(state.release(60) == [2, 3])
        #expect(state.reservedBytes == 60)
        #expect(state.reserve(id: 5, bytes: 50) == .wait)
        #expect(state.reserve(id: 6, bytes: 5) == .wait)
        #expect(state.cancel(id: 5) == (wasWaiting: true, granted: [6]), "a waiter giving up lets the next in")
        #expect(state.cancel(id: 5).wasWaiting == false)
        #expect(state.reservedBytes == 65)
        #expect(state.release(1000) == [] && state.reservedBytes == 0, "release never goes below zero")
    }
}

/// Waits for `event` at most `timeout`: whether it happened.
func boundedWait(_ timeout: Duration, _ event: @escaping @Sendable () async -> Void) async throws -> Bool {
    await withTaskGroup(of: Bool.self) { group in
        group.addTask { await event(); return true }
        group.addTask { try? await Task.sleep(for: timeout); return false }
        let first = await group.next() ?? false
        group.cancelAll()
        return first
    }
}

@Suite struct ConnectionDeadlinesTests {
    typealias Machine = ConnectionDeadlines<ContinuousClock.Instant>
    let zero = ContinuousClock.now
    func at(_ ms: Int) -> ContinuousClock.Instant { zero.advanced(by: .milliseconds(ms)) }

    @Test func aNewConnectionHasTheHeaderDeadlineAndBytesDoNotMoveIt() {
        var machine = Machine(headerTimeout: .milliseconds(100), idleTimeout: .milliseconds(1000), openedAt: at(0))
        #expect(machine.initialAction == .armTimer(at(100)))
        #expect(machine.bytesReceived(now: at(50)) == .none)
        #expect(machine.timerFired(now: at(99)) == .armTimer(at(100)))
        #expect(machine.timerFired(now: at(100)) == .close)
    }

    @Test func aRequestCycleMovesThroughBodyAnsweringAndIdle() {
        var machine = Machine(headerTimeout: .milliseconds(100), idleTimeout: .milliseconds(1000), openedAt: at(0))
        #expect(machine.headReceived(now: at(10)) == .armTimer(at(1010)))
        #expect(machine.bytesReceived(now: at(500)) == .armTimer(at(1500)), "body bytes restart the idle deadline")
        #expect(machine.timerFired(now: at(1010)) == .armTimer(at(1500)))
        #expect(machine.requestEnded(now: at(600)) == .none)
        #expect(machine.state == .answering)
        #expect(machine.timerFired(now: at(99_999)) == .none, "no deadline while the broker answers")
        #expect(machine.responseEnded(now: at(2000)) == .armTimer(at(3000)))
        #expect(machine.bytesReceived(now: at(2500)) == .armTimer(at(2600)), "the next request's first byte starts its header deadline")
        #expect(machine.timerFired(now: at(2600)) == .close)
    }

    @Test func anAnswerBeforeTheBodyEndsGoesIdleWhenTheBodyEnds() {
        var machine = Machine(headerTimeout: .milliseconds(100), idleTimeout: .milliseconds(1000), openedAt: at(0))
        _ = machine.headReceived(now: at(10))
        #expect(machine.responseEnded(now: at(20)) == .none, "still reading the body (a 413 sent early)")
        #expect(machine.requestEnded(now: at(30)) == .armTimer(at(1030)))
        #expect(machine.state == .idle(deadline: at(1030)))
    }

    @Test func pipelinedRequestsStayAnsweringUntilTheLastResponse() {
        var machine = Machine(headerTimeout: .milliseconds(100), idleTimeout: .milliseconds(1000), openedAt: at(0))
        _ = machine.headReceived(now: at(1))
        _ = machine.requestEnded(now: at(1))
        _ = machine.headReceived(now: at(2))
        _ = machine.requestEnded(now: at(2))
        #expect(machine.responseEnded(now: at(3)) == .none)
        #expect(machine.state == .answering)
        #expect(machine.responseEnded(now: at(4)) == .armTimer(at(1004)))
    }
}

@Suite struct HeadAndContentCodingTests {
    /// Every GET route answers HEAD as GET without a body: the same status and the GET's header
    /// fields (RFC 9110 §9.3.2); HEAD on a POST-only route is 405 naming its methods.
    @Test func headIsServedAsGetWithoutABody() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            for route in APIRoutes.all where route.methods.contains("GET") {
                let uri = route.path(["stream": "events", "link": "nolink"])
                let get = try await client.execute(uri: uri, method: .get, headers: headers(TestBroker.adminToken)) { $0 }
                let head = try await client.execute(uri: uri, method: .head, headers: headers(TestBroker.adminToken)) { $0 }
                #expect(head.status == get.status, "HEAD \(uri)")
                #expect(head.body.readableBytes == 0, "HEAD \(uri) has no body")
                #expect(head.headers[.contentType] == get.headers[.contentType], "HEAD \(uri)")
            }
            let document = try await client.execute(uri: "/openapi.yaml", method: .head) { $0 }
            #expect(document.headers[.contentLength] == String(openAPIDocument.utf8.count), "the GET's Content-Length")
            let unauthorized = try await client.execute(uri: "/v1/streams", method: .head) { $0 }
            #expect(unauthorized.status == .unauthorized)
            #expect(unauthorized.body.readableBytes == 0, "an error's answer to HEAD has no body either")
            let post = try await client.execute(uri: "/v1/streams/events/entries", method: .head, headers: headers(TestBroker.adminToken)) { $0 }
            #expect(post.status == .methodNotAllowed)
            #expect(post.headers[.allow] == "POST")
            #expect(post.body.readableBytes == 0)
        }
    }

    func append(_ client: some TestClientProtocol, body: [UInt8], encoding: String?,
                contentType: String = "application/x-ndjson") async throws -> TestResponse {
        var fields = headers(TestBroker.produceToken, contentType)
        if let encoding { fields[.contentEncoding] = encoding }
        return try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: fields,
                                        body: ByteBuffer(bytes: body)) { $0 }
    }

    @Test func gzipAndDeflateBodiesAreInflatedAndAppended() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        let lines = Array((0..<3).map(entryJSON).joined(separator: "\n").utf8)
        let broker = t.broker
        try await app.test(.router) { client in
            for (encoding, body) in [("gzip", try Zlib.compress(lines, format: .gzip)), ("deflate", try Zlib.compress(lines, format: .zlib)),
                                     ("identity", lines), ("GZIP", try Zlib.compress(lines, format: .gzip))] {
                let before = (broker.streams["events"] as? StreamLog)?.endOffset ?? 0
                let response = try await append(client, body: body, encoding: encoding)
                #expect(response.status == .created, "Content-Encoding: \(encoding)")
                #expect((broker.streams["events"] as? StreamLog)?.endOffset == before + 3, "Content-Encoding: \(encoding)")
            }
            let stored = try (broker.streams["events"] as? StreamLog)?.read(from: 0, maxEntries: 1).first.map { String(decoding: $0.payload, as: UTF8.self) }
            #expect(stored == entryJSON(0), "the inflated entry is what is stored")
        }
    }

    @Test func otherCodingsAre415AndBrokenOrBombBodiesAppendNothing() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        let lines = Array((0..<3).map(entryJSON).joined(separator: "\n").utf8)
        // 10 MiB of spaces inflate from ~10 KiB: past the 64 KiB body limit of TestBroker.
        let bomb = try Zlib.compress([UInt8](repeating: 0x20, count: 10 << 20), format: .gzip)
        #expect(bomb.count < 65_536, "the bomb passes the wire limit")
        let truncated = Array(try Zlib.compress(lines, format: .gzip).dropLast(6))
        try await app.test(.router) { client in
            for encoding in ["br", "compress", "gzip, br", "zstd"] {
                let response = try await append(client, body: lines, encoding: encoding)
                #expect(response.status == .unsupportedMediaType, "Content-Encoding: \(encoding)")
            }
            let bombed = try await append(client, body: bomb, encoding: "gzip")
            #expect(bombed.status == .contentTooLarge, "a zip bomb is 413")
            #expect(errorCode(bombed) == "payload_too_large")
            let plainGzip = try await append(client, body: lines, encoding: "gzip")
            #expect(plainGzip.status == .badRequest, "a body that is not gzip")
            let cut = try await append(client, body: truncated, encoding: "gzip")
            #expect(cut.status == .badRequest, "a truncated gzip body")
            let chunkedGzip = try await client.execute(
                uri: "/v1/streams/events/entries", method: .post,
                headers: [.authorization: "Bearer \(TestBroker.produceToken)", .contentType: "application/x-ndjson",
                          .transferEncoding: "gzip, chunked"],
                body: ByteBuffer(bytes: lines)) { $0 }
            #expect(chunkedGzip.status == .notImplemented, "a transfer coding other than chunked is 501")
        }
        #expect(t.end == 0, "nothing was appended")
    }

    /// Through the real HTTP/1.1 parser: `Transfer-Encoding: gzip, chunked` is 501 and a
    /// chunked gzip body is inflated.
    @Test func transferCodingsOnTheWire() async throws {
        try await withLiveBroker(yaml: liveYAML("")) { port, t in
            let lines = Array((0..<2).map(entryJSON).joined(separator: "\n").utf8)
            let gzipped = try Zlib.compress(lines, format: .gzip)
            let chunk = Array(String(gzipped.count, radix: 16).utf8) + Array("\r\n".utf8) + gzipped + Array("\r\n0\r\n\r\n".utf8)
            let connection = try RawHTTPConnection(port: port)
            let (refused, accepted) = await offThePool { () -> (RawResponse?, RawResponse?) in
                connection.send(rawRequest("POST", "/v1/streams/events/entries",
                                           headers: ["Content-Type: application/x-ndjson", "Transfer-Encoding: gzip, chunked"], body: chunk))
                let refused = connection.readResponse(timeout: .seconds(30))
                guard let again = try? RawHTTPConnection(port: port) else { return (refused, nil) }
                again.send(rawRequest("POST", "/v1/streams/events/entries",
                                      headers: ["Content-Type: application/x-ndjson", "Content-Encoding: gzip", "Transfer-Encoding: chunked"],
                                      body: chunk))
                return (refused, again.readResponse(timeout: .seconds(30)))
            }
            #expect(refused?.status == 501)
            #expect(accepted?.status == 201)
            #expect(t.end == 2)
        }
    }
}
