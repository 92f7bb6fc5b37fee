import Foundation
import OrgSyncTestNATS
import OrgSyncTestSupport
import Testing

/// Two `orgsync serve` processes as members of one cluster on a real nats-server: appends to
/// either member land in one stream with dense offsets, and the link placed on member `b`
/// applies them all, once, into its SQLite target; member `a` does not run it.
@Suite(.serialized) struct ClusterServeProcessTests {
    func writeConfig(_ directory: String, node: String, natsPort: Int) throws -> String {
        let path = directory + "/\(node).yaml"
        try """
        auth: { enabled: false }
        cluster: { node: \(node), nats_urls: ["nats://127.0.0.1:\(natsPort)"], replicas: 1 }
        streams: [ { name: events } ]
        links:
          - { name: crm, stream: events, adapter: sqlite, node: b, settings: { path: crm.sqlite } }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func membersShareStreamsAndTheLinkRunsOnItsMember() async throws {
        let nats = try await NATSTestServer()
        defer { nats.stop() }
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-cluster-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func start(_ node: String) async throws -> BrokerProcess {
            let config = try writeConfig(directory, node: node, natsPort: nats.port)
            return try await BrokerProcess.start(arguments: ["--config", config, "--data-dir", directory + "/\(node)", "--port", "0"])
        }
        let a = try await start("a")
        let b = try await start("b")
        var firstOffsets: [Int] = []
        for (round, member) in [a, b, a, b, a].enumerated() {
            let lines = (0..<20).map { #"{"org":"o","object":"Lead","op":"upsert","key":"r\#(round)-\#($0)","ts":"t","fields":{"n":\#($0)}}"# }
            let (status, body) = try await post(
                "http://127.0.0.1:\(member.port)/v1/streams/events/entries", body: Data(lines.joined(separator: "\n").utf8),
                contentType: "application/x-ndjson")
            #expect(status == 201, "\(String(decoding: body, as: UTF8.self))")
            firstOffsets.append(try #require((try JSONSerialization.jsonObject(with: body) as? [String: Int])?["first_offset"]))
        }
        #expect(firstOffsets == [0, 20, 40, 60, 80], "one stream, dense offsets, whichever member took the append")
        for member in [a, b] {
            let (status, body) = try await get("http://127.0.0.1:\(member.port)/v1/streams/events")
            #expect(status == 200)
            #expect((try JSONSerialization.jsonObject(with: body) as? [String: Any])?["end_offset"] as? Int == 100)
        }
        // The link is b's: a does not know it as one of its own.
        #expect(try await get("http://127.0.0.1:\(a.port)/v1/links/crm").0 == 404)
        let deadline = Date().addingTimeInterval(30)
        var cursor = 0
        while Date() < deadline {
            let (status, body) = try await get("http://127.0.0.1:\(b.port)/v1/links/crm")
            try #require(status == 200)
            cursor = (try JSONSerialization.jsonObject(with: body) as? [String: Any])?["cursor"] as? Int ?? 0
            if cursor == 100 { break }
            try await Task.sleep(for: .milliseconds(100))  // another process's state: its answers are all there is
        }
        #expect(cursor == 100, "b applied the 100 entries the two members took")
        #expect(try await sqliteCount(directory + "/b/crm.sqlite", "SELECT count(*) FROM Lead") == 100)
        #expect(await a.terminate() == 0)
        #expect(await b.terminate() == 0)
    }

    /// Placement mistakes stop `serve` before anything opens, naming the field.
    @Test func aLinkWithoutItsMemberIsRefused() async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-cluster-cfg-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/bad.yaml"
        try """
        auth: { enabled: false }
        cluster: { node: a, nats_urls: ["127.0.0.1:1"] }
        streams: [ { name: events } ]
        links: [ { name: crm, stream: events, adapter: sqlite, settings: { path: crm.sqlite } } ]
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let (status, message) = try await runServe(["--config", path, "--data-dir", directory + "/state", "--port", "0"])
        #expect(status == 2)
        #expect(message.contains("links[0].node") && message.contains("runs on one member"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/state"))
    }
}
