import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import OrgSyncAPI
import OrgSyncLog
@testable import OrgSyncBroker
@testable import OrgSyncServer
import Testing

/// A broker on a temporary data directory with auth on (a produce and an admin token).
final class TestBroker {
    let directory: String
    let broker: Broker
    let router: Router<BrokerRequestContext>
    static let produceToken = "produce-token-0123456789"
    static let adminToken = "admin-token-0123456789ab"

    /// Whether the directory is this broker's to remove (not when reopened over another's).
    private let ownsDirectory: Bool

    init(yaml: String? = nil, directory existing: String? = nil) throws {
        ownsDirectory = existing == nil
        directory = existing ?? FileManager.default.temporaryDirectory.path + "/orgsync-server-" + UUID().uuidString
        let config = try BrokerConfiguration.parse(yaml: yaml ?? """
            auth:
              enabled: true
              tokens:
                - { name: p, role: produce, token: \(TestBroker.produceToken) }
                - { name: a, role: admin, token_env: TEST_ADMIN_TOKEN }
            server:
              body_bytes_max: 65536
              entry_bytes_max: 2048
              request_entries_max: 500
            streams:
              - name: events
              - name: other
            """, environment: ["TEST_ADMIN_TOKEN": TestBroker.adminToken])
        broker = try Broker(configuration: config, dataDirectory: directory, metrics: BrokerMetrics(),
                            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        router = buildRouter(broker: broker, authenticator: Authenticator(configuration: config, environment: ["TEST_ADMIN_TOKEN": TestBroker.adminToken]))
    }

    deinit { if ownsDirectory { try? FileManager.default.removeItem(atPath: directory) } }

    /// Closes this broker's streams and opens a new broker over the same data directory (a
    /// restart); this one still removes the directory when it goes.
    func reopened() async throws -> TestBroker {
        await broker.close()
        return try TestBroker(directory: directory)
    }

    var end: UInt64 { (broker.streams["events"] as? StreamLog)?.endOffset ?? 0 }
}

func entryJSON(_ i: Int) -> String {
    #"{"org":"o","object":"Contact","op":"upsert","key":"k\#(i)","ts":"2026-11-25T00:00:00Z","fields":{"Name":"n\#(i)"}}"#
}

func headers(_ token: String?, _ contentType: String? = "application/json") -> HTTPFields {
    var fields = HTTPFields()
    if let token { fields[.authorization] = "Bearer \(token)" }
    if let contentType { fields[.contentType] = contentType }
    return fields
}

func errorCode(_ response: TestResponse) -> String? {
    (try? APIJSON.decoder().decode(ErrorBody.self, from: Data(response.body.readableBytesView)))?.error.code
}

@Suite struct RouterTests {
    @Test func appendsOneEntryAndManyAndReportsOffsets() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: headers(TestBroker.produceToken),
                                     body: ByteBuffer(string: entryJSON(0))) { response in
                #expect(response.status == .created)
                let body = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Int]
                #expect(body?["first_offset"] == 0)
                #expect(body?["last_offset"] == 0)
            }
            let ndjson = (1...10).map(entryJSON).joined(separator: "\n") + "\n"
            try await client.execute(uri: "/v1/streams/events/entries", method: .post,
                                     headers: headers(TestBroker.adminToken, "application/x-ndjson"), body: ByteBuffer(string: ndjson)) { response in
                #expect(response.status == .created)
                let body = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Int]
                #expect(body?["first_offset"] == 1)
                #expect(body?["last_offset"] == 10)
                #expect(body?["count"] == 10)
            }
            try await client.execute(uri: "/v1/streams/events", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .ok)
                let body = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any]
                #expect(body?["end_offset"] as? Int == 11)
                #expect(body?["segments"] as? Int == 1)
            }
        }
        #expect(t.end == 11)
        try await app.test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                let text = String(buffer: response.body)
                #expect(text.contains("orgsync_fsync_duration_seconds_count 2"), "one flush per append")
                #expect(text.contains(#"orgsync_appended_entries_total{stream="events"} 11"#))
                #expect(text.contains("orgsync_append_duration_seconds_bucket"))
            }
        }
        let stored = try #require(t.broker.streams["events"] as? StreamLog).read(from: 3, maxEntries: 1)
        #expect(stored.first?.payload == Array(entryJSON(3).utf8))
    }

    /// Every bad request gets its 4xx with a JSON error, and the end offset does not move.
    @Test(arguments: [
        ("malformed JSON", "application/json", #"{"org":"#, 400, "invalid_entry"),
        ("not an object", "application/json", "[1,2]", 400, "invalid_entry"),
        ("missing field", "application/json", #"{"org":"o","object":"C","op":"upsert","key":"k"}"#, 400, "invalid_entry"),
        ("wrong type", "application/json", #"{"org":"o","object":"C","op":"upsert","key":7,"ts":"t"}"#, 400, "invalid_entry"),
        ("bad op", "application/json", #"{"org":"o","object":"C","op":"merge","key":"k","ts":"t"}"#, 400, "invalid_entry"),
        ("empty body", "application/json", "", 400, "invalid_entry"),
        ("empty ndjson", "application/x-ndjson", "\n\n", 400, "bad_request"),
        ("one bad line", "application/x-ndjson", entryJSON(1) + "\n{oops}\n" + entryJSON(2), 400, "invalid_entry"),
        ("text/plain", "text/plain", entryJSON(1), 415, "unsupported_media_type"),
        ("no content type", nil, entryJSON(1), 415, "unsupported_media_type"),
        ("entry over limit", "application/json", #"{"org":"o","object":"C","op":"upsert","key":"k","ts":"t","fields":{"x":""# + String(repeating: "a", count: 3000) + #""}}"#, 413, "payload_too_large"),
        ("body over limit", "application/x-ndjson", Array(repeating: entryJSON(1), count: 700).joined(separator: "\n"), 413, "payload_too_large"),
    ] as [(String, String?, String, Int, String)])
    func badInputAppendsNothing(name: String, contentType: String?, body: String, status: Int, code: String) async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/streams/events/entries", method: .post,
                                     headers: headers(TestBroker.produceToken, contentType), body: ByteBuffer(string: body)) { response in
                #expect(response.status.code == status, "\(name)")
                #expect(errorCode(response) == code, "\(name)")
                #expect(response.headers[.contentType] == "application/json")
            }
        }
        #expect(t.end == 0, "\(name) must append nothing")
    }

    @Test func invalidUTF8IsRejected() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        var damaged = Array(entryJSON(1).utf8)
        damaged[damaged.count - 5] = 0xFF
        let bytes = damaged
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: headers(TestBroker.produceToken),
                                     body: ByteBuffer(bytes: bytes)) { response in
                #expect(response.status == .badRequest)
                #expect(errorCode(response) == "invalid_entry")
            }
        }
        #expect(t.end == 0)
    }

    @Test func theBadLineIsNamed() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        let body = [entryJSON(1), entryJSON(2), "", #"{"org":"o"}"#].joined(separator: "\n")
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/streams/events/entries", method: .post,
                                     headers: headers(TestBroker.produceToken, "application/x-ndjson"), body: ByteBuffer(string: body)) { response in
                #expect(response.status == .badRequest)
                #expect(String(buffer: response.body).contains("line 4"))
            }
        }
        #expect(t.end == 0)
    }

    @Test func authNeedsAValidTokenOfTheRightRole() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            for (token, status) in [(nil, 401), ("wrong-token-0123456789", 401), ("Basic abc", 401)] as [(String?, Int)] {
                var fields = headers(nil)
                if let token { fields[.authorization] = token.hasPrefix("Basic") ? token : "Bearer \(token)" }
                try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: fields,
                                         body: ByteBuffer(string: entryJSON(1))) { response in
                    #expect(response.status.code == status)
                    #expect(errorCode(response) == "unauthorized")
                    #expect(response.headers[.wwwAuthenticate] != nil)
                }
            }
            // Metrics are not open in this configuration; health is.
            try await client.execute(uri: "/metrics", method: .get) { response in #expect(response.status == .unauthorized) }
            try await client.execute(uri: "/health/live", method: .get) { response in #expect(response.status == .ok) }
            try await client.execute(uri: "/health/ready", method: .get) { response in #expect(response.status == .ok) }
            try await client.execute(uri: "/metrics", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body).contains("orgsync_"))
            }
        }
        #expect(t.end == 0)
    }

    @Test func unknownStreamsAndPathsAre404() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/streams/nope/entries", method: .post, headers: headers(TestBroker.produceToken),
                                     body: ByteBuffer(string: entryJSON(1))) { response in
                #expect(response.status == .notFound)
                #expect(errorCode(response) == "not_found")
            }
            try await client.execute(uri: "/v1/streams/nope", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .notFound)
            }
            try await client.execute(uri: "/v2/whatever", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .notFound)
            }
        }
        #expect(t.end == 0)
    }

    @Test func theOpenAPIDocumentIsServedAndNamesEveryRoute() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/openapi.yaml", method: .get) { response in
                #expect(response.status == .ok)
                let text = String(buffer: response.body)
                for path in ["/v1/streams:", "/v1/streams/{stream}:", "/v1/streams/{stream}/entries:", "/health/live:", "/health/ready:", "/metrics:"] {
                    #expect(text.contains(path), "\(path) missing from the document")
                }
            }
        }
    }
}

@Suite struct ConfigurationTests {
    @Test func defaultsApplyAndUnknownFieldsAreErrors() throws {
        let config = try BrokerConfiguration.parse(yaml: "auth: { enabled: false }\n")
        #expect(config.server.port == 7070)
        #expect(config.server.host == "127.0.0.1")
        #expect(config.streams.map(\.name) == ["events"])
        #expect(throws: ConfigurationError.self) { try BrokerConfiguration.parse(yaml: "auth: { enabled: false }\nservr: {}\n") }
        do {
            _ = try BrokerConfiguration.parse(yaml: "auth: { enabled: false }\nserver: { port: seventy }\n")
            Issue.record("a wrong type was accepted")
        } catch let error as ConfigurationError {
            #expect(error.field == "server.port")
        }
        do {
            _ = try BrokerConfiguration.parse(yaml: "auth: { enabled: false }\nserver: { prot: 1 }\n")
            Issue.record("an unknown field was accepted")
        } catch let error as ConfigurationError {
            #expect(error.field == "server.prot")
        }
    }

    @Test func authMustBeConfiguredOrExplicitlyOff() throws {
        do {
            _ = try BrokerConfiguration.parse(yaml: "server: { port: 1 }\n")
            Issue.record("auth on with no tokens was accepted")
        } catch let error as ConfigurationError {
            #expect(error.field == "auth.tokens")
        }
        do {
            _ = try BrokerConfiguration.parse(yaml: "auth: { tokens: [ { name: a, role: admin, token_env: NOPE } ] }\n", environment: [:])
            Issue.record("a missing token variable was accepted")
        } catch let error as ConfigurationError {
            #expect(error.field == "auth.tokens[0].token_env")
            #expect(!error.description.contains("secret"))
        }
        do {
            _ = try BrokerConfiguration.parse(yaml: "auth: { enabled: false }\nlinks: [ { name: l, stream: nope, adapter: sqlite } ]\n")
            Issue.record("a link to an unknown stream was accepted")
        } catch let error as ConfigurationError {
            #expect(error.field == "links[0].stream")
        }
    }

    @Test func theExampleConfigurationParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let config = try BrokerConfiguration.load(path: root.appendingPathComponent("data/orgsync.example.yaml").path, environment: [:])
        #expect(config.server.host == "127.0.0.1")
        #expect(config.streams.contains { $0.name == "events" })
        #expect(config.auth.enabled == false, "the embedded default is a local demo and says so")
    }

    @Test func tokensCompareInConstantTimeShape() {
        #expect(Authenticator.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!Authenticator.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!Authenticator.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!Authenticator.constantTimeEqual([], Array("a".utf8)))
    }
}

@Suite struct ActiveSegmentLostRouteTests {
    /// Issue 12: appends into an active segment deleted under the broker were answered 201 and
    /// lost at restart. Now nothing is acknowledged: 503, the stream stopped and named.
    @Test func anAppendAfterTheActiveSegmentIsDeletedIs503() async throws {
        let t = try TestBroker()
        let directory = t.directory
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: headers(TestBroker.produceToken),
                                     body: ByteBuffer(string: entryJSON(0))) { response in
                #expect(response.status == .created)
            }
            let active = StreamLog.streamDirectory(dataDirectory: directory, name: "events") + "/00000000000000000000.log"
            try FileManager.default.removeItem(atPath: active)
            for i in 1...2 {
                try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: headers(TestBroker.produceToken),
                                         body: ByteBuffer(string: entryJSON(i))) { response in
                    #expect(response.status == .serviceUnavailable)
                    #expect(errorCode(response) == "stream_stopped")
                    #expect(String(buffer: response.body).contains("00000000000000000000.log"))
                }
            }
        }
        #expect(t.end == 1, "nothing after the deletion was acknowledged")
    }
}
