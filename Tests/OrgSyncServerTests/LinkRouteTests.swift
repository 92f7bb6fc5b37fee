import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
@testable import OrgSyncBroker
@testable import OrgSyncServer
import SQLiteAdapter
import Testing
import OrgSyncTestSupport

/// A broker with one SQLite link whose supervisor runs for the test's duration.
final class LinkedBroker: Sendable {
    let directory: String
    let broker: Broker
    let authenticator: Authenticator
    let runner: Task<Void, Never>

    init() throws {
        directory = FileManager.default.temporaryDirectory.path + "/orgsync-links-" + UUID().uuidString
        let environment = ["TEST_ADMIN_TOKEN": TestBroker.adminToken]
        let config = try BrokerConfiguration.parse(yaml: """
            auth:
              tokens:
                - { name: p, role: produce, token: \(TestBroker.produceToken) }
                - { name: a, role: admin, token_env: TEST_ADMIN_TOKEN }
            streams: [ { name: events } ]
            links:
              - name: demo
                stream: events
                adapter: sqlite
                settings: { path: demo.sqlite, primary_key: org_key }
                supervisor: { verify_interval_ms: 20, verify_window_ms: 1000, backoff_base_ms: 10, backoff_cap_ms: 50 }
            """, environment: environment)
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        broker = try Broker(
            configuration: config, dataDirectory: directory, metrics: BrokerMetrics(), logger: logger,
            registry: PluginRegistry(builtins: [SQLiteAdapterFactory()], logger: logger), environment: environment)
        authenticator = Authenticator(configuration: config, environment: environment)
        let supervisor = broker.links.supervisors["demo"]
        runner = Task { try? await supervisor?.run() }
    }

    var router: Router<BrokerRequestContext> { buildRouter(broker: broker, authenticator: authenticator) }

    deinit {
        runner.cancel()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Polls the link's status (every 10 ms, bounded) until it satisfies `condition`.
    /// Cursor moves emit no transition to wait on, so this is a bounded poll of the status.
    func waitFor(_ what: String, timeoutSeconds: Double = 10, _ condition: (LinkStatus) -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(timeoutSeconds)
        let supervisor = try broker.links.supervisor("demo")
        while ContinuousClock.now < deadline {
            if condition(await supervisor.status()) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("timed out waiting for \(what): \(await supervisor.status())")
    }
}

func json(_ response: TestResponse) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any]) ?? [:]
}

@Suite struct LinkRouteTests {
    @Test func listAndDetailShowTheLinkApplyingEntries() async throws {
        let t = try LinkedBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            let body = (0..<20).map { entryJSON($0) }.joined(separator: "\n")
            try await client.execute(uri: "/v1/streams/events/entries", method: .post,
                                     headers: headers(TestBroker.produceToken, "application/x-ndjson"), body: ByteBuffer(string: body)) { response in
                #expect(response.status == .created)
            }
            try await t.waitFor("lag 0") { $0.cursor == 20 && $0.lagCount == 0 }
            try await client.execute(uri: "/v1/links", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .ok)
                let links = json(response)["links"] as? [[String: Any]]
                #expect(links?.count == 1)
                #expect(links?.first?["name"] as? String == "demo")
            }
            try await client.execute(uri: "/v1/links/demo", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                let status = json(response)
                #expect(status["state"] as? String == "active")
                #expect(status["cursor"] as? Int == 20)
                #expect(status["lag"] as? Int == 0)
                #expect(status["probe_progress"] as? String == "0/3")
            }
            try await client.execute(uri: "/v1/links/nope", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .notFound)
                #expect(errorCode(response) == "not_found")
            }
        }
    }

    @Test func operatorActionsNeedAdminAndFollowTheStateMachine() async throws {
        let t = try LinkedBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/links/demo/suspend", method: .post, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .forbidden)
                #expect(errorCode(response) == "forbidden")
            }
            try await client.execute(uri: "/v1/links/demo/suspend", method: .post, headers: headers(nil, nil)) { response in
                #expect(response.status == .unauthorized)
            }
            try await client.execute(uri: "/v1/links/demo/cursor?offset=0", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .conflict, "the cursor moves only while paused")
            }
            try await client.execute(uri: "/v1/links/demo/suspend", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .ok)
                #expect(json(response)["state"] as? String == "paused")
            }
            try await client.execute(uri: "/v1/links/demo/cursor?offset=1", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .conflict, "a cursor past the stream's end is refused")
            }
            try await client.execute(uri: "/v1/links/demo/cursor", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/v1/links/demo/resume?force=maybe", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/v1/links/demo/resume", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .ok)
                #expect(json(response)["state"] as? String == "verifying", "resume verifies the target first")
            }
            try await t.waitFor("active after K probes") { $0.state == .active }
            try await client.execute(uri: "/v1/links/demo/sync-log?limit=2", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                let page = json(response)
                let records = page["records"] as? [[String: Any]]
                #expect(records?.first?["event"] as? String == "resumed", "newest first")
                #expect(records?.count == 2)
                #expect(page["next_before"] is Int)
            }
            try await client.execute(uri: "/v1/links/demo/sync-log?limit=0", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/v1/links/demo/dead-letters?status=odd", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/v1/links/demo/dead-letters", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .ok)
                #expect((json(response)["dead_letters"] as? [Any])?.isEmpty == true)
            }
            try await client.execute(uri: "/v1/links/demo/dead-letters/5/retry", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .notFound)
            }
            try await client.execute(uri: "/v1/links/demo/dead-letters/x/retry", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .badRequest)
            }
        }
        // The operator's pause is remembered across a restart; the resume removed it.
        #expect(!FileManager.default.fileExists(atPath: t.directory + "/links/demo/PAUSED"))
    }

    @Test func aRejectedEntryIsADeadLetterThatCanBeRetried() async throws {
        let t = try LinkedBroker()
        let app = Application(router: t.router)
        // Two inserts of one (org, key): the second is rejected by the target.
        let first = #"{"org":"o","object":"Lead","op":"insert","key":"dup","ts":"t","fields":{"N":1}}"#
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/streams/events/entries", method: .post,
                                     headers: headers(TestBroker.produceToken, "application/x-ndjson"),
                                     body: ByteBuffer(string: [first, first, entryJSON(1)].joined(separator: "\n"))) { response in
                #expect(response.status == .created)
            }
            try await t.waitFor("lag 0") { $0.cursor == 3 }
            try await client.execute(uri: "/v1/links/demo/dead-letters?status=failed", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                let letters = json(response)["dead_letters"] as? [[String: Any]]
                #expect(letters?.count == 1)
                #expect(letters?.first?["offset"] as? Int == 1)
                #expect(letters?.first?["target_code"] as? String == "1555")
            }
            try await client.execute(uri: "/v1/links/demo/sync-log", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                let records = json(response)["records"] as? [[String: Any]]
                #expect(records?.contains { $0["event"] as? String == "entry_failed" && $0["offset"] as? Int == 1 } == true)
            }
            // Retrying fails again (the row is still there) and says so.
            try await client.execute(uri: "/v1/links/demo/dead-letters/1/retry", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .conflict)
                #expect(errorCode(response) == "retry_rejected")
            }
            // Once the conflicting row is deleted, the retry applies the entry although its offset
            // is below the target's stored offset, and the letter is resolved.
            let delete = #"{"org":"o","object":"Lead","op":"delete","key":"dup","ts":"t"}"#
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: headers(TestBroker.produceToken),
                                     body: ByteBuffer(string: delete)) { response in
                #expect(response.status == .created)
            }
            try await t.waitFor("delete applied") { $0.cursor == 4 }
            try await client.execute(uri: "/v1/links/demo/dead-letters/1/retry", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .ok)
                #expect(json(response)["status"] as? String == "resolved")
            }
            try await client.execute(uri: "/v1/links/demo/sync-log?limit=1", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                let records = json(response)["records"] as? [[String: Any]]
                #expect(records?.first?["event"] as? String == "entry_resolved")
            }
        }
    }
}

extension LinkRouteTests {
    @Test func theRetriedRowIsInTheTarget() async throws {
        let t = try LinkedBroker()
        let app = Application(router: t.router)
        let insert = #"{"org":"o","object":"Lead","op":"insert","key":"dup","ts":"t","fields":{"N":1}}"#
        let delete = #"{"org":"o","object":"Lead","op":"delete","key":"dup","ts":"t"}"#
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/streams/events/entries", method: .post,
                                     headers: headers(TestBroker.produceToken, "application/x-ndjson"),
                                     body: ByteBuffer(string: [insert, insert, delete].joined(separator: "\n"))) { response in
                #expect(response.status == .created)
            }
            try await t.waitFor("lag 0") { $0.cursor == 3 }
            try await client.execute(uri: "/v1/links/demo/dead-letters/1/retry", method: .post, headers: headers(TestBroker.adminToken, nil)) { response in
                #expect(response.status == .ok)
            }
        }
        let rows = try await t.broker.links.supervisor("demo").status()
        #expect(rows.deadLetterFailedCount == 0)
        // The row exists again: the retried insert ran although offset 1 < stored offset 2.
        let adapter = try SQLiteAdapterFactory().makeAdapter(.init(
            linkName: "probe", streamName: "events", settings: ["path": "demo.sqlite", "primary_key": "org_key"], dataDirectory: t.directory))
        try await adapter.open()
        #expect(try await adapter.appliedPosition() == nil, "another link name has no offset")
        await adapter.close()
        let count = try await sqliteCount(t.directory + "/demo.sqlite", "SELECT count(*) FROM Lead WHERE key = 'dup'")
        #expect(count == 1)
    }
}

/// Runs a one-number query with the sqlite3 command-line tool, waiting up to 5 s for a lock
/// another process holds (a plugin finishing its transaction); any failure is an error.
func sqliteCount(_ path: String, _ sql: String) async throws -> Int {
    try await offThePool { try sqliteCountNow(path, sql) }
}

private func sqliteCountNow(_ path: String, _ sql: String) throws -> Int {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
    process.arguments = ["-cmd", ".timeout 5000", path, sql]
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    let problem = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0, let count = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
        throw SQLiteCountError(description: "sqlite3 \(sql) on \(path) failed (\(process.terminationStatus)): \(problem)")
    }
    return count
}

struct SQLiteCountError: Error, CustomStringConvertible {
    var description: String
}
