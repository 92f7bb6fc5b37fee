import Foundation
import NIOHTTP1
import OrgSyncAPI
import OrgSyncTestHTTP
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
        #expect(cursor == 100, "b applied the 100 entries the two members took; b's log ends: \(b.standardError.suffix(4_000))")
        #expect(try await sqliteCount(directory + "/b/crm.sqlite", "SELECT count(*) FROM Lead") == 100)
        #expect(await a.terminate() == 0)
        #expect(await b.terminate() == 0)
    }

    /// Links without `node:` are leased: each runs on exactly one live member, placed by the
    /// cluster; when that member is killed its links run on the other within the lease, under
    /// higher owner epochs (stored in each target), and every entry is applied exactly once.
    /// Waits (bounded; other processes' state, so asked again until it holds) for `done`.
    func eventually(_ what: String, within seconds: Double = 30, _ done: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while try await !done() {
            guard Date() < deadline else {
                Issue.record("not within \(seconds) s: \(what)")
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    @Test func leasedLinksRunOnOneMemberAndMoveWhenItIsKilled() async throws {
        let nats = try await NATSTestServer()
        defer { nats.stop() }
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-leases-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory + "/targets", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let links = (1...4).map { "l\($0)" }
        func start(_ node: String) async throws -> BrokerProcess {
            let path = directory + "/\(node).yaml"
            try """
            auth: { enabled: false }
            cluster: { node: \(node), nats_urls: ["nats://127.0.0.1:\(nats.port)"], replicas: 1, lease_ms: 1500 }
            streams: [ { name: events } ]
            links:
            \(links.map { "  - { name: \($0), stream: events, adapter: sqlite, settings: { path: \(directory)/targets/\($0).sqlite } }" }.joined(separator: "\n"))
            """.write(toFile: path, atomically: true, encoding: .utf8)
            return try await BrokerProcess.start(arguments: ["--config", path, "--data-dir", directory + "/\(node)", "--port", "0"])
        }
        /// The target's stored position of `link`: its last applied offset and owner epoch.
        func position(_ link: String) async -> (offset: Int, ownerEpoch: Int)? {
            let path = "\(directory)/targets/\(link).sqlite"
            guard let offset = try? await sqliteCount(path, "SELECT applied_offset FROM orgsync_offsets WHERE link = '\(link)'"),
                  let epoch = try? await sqliteCount(path, "SELECT owner_epoch FROM orgsync_offsets WHERE link = '\(link)'")
            else { return nil }
            return (offset, epoch)
        }
        func append(_ member: BrokerProcess, _ keys: Range<Int>) async throws {
            let lines = keys.map { #"{"org":"o","object":"Lead","op":"insert","key":"k\#($0)","ts":"t","fields":{"n":\#($0)}}"# }
            let (status, body) = try await post(
                "http://127.0.0.1:\(member.port)/v1/streams/events/entries", body: Data(lines.joined(separator: "\n").utf8),
                contentType: "application/x-ndjson")
            #expect(status == 201, "\(String(decoding: body, as: UTF8.self))")
        }
        func clusterView(_ member: BrokerProcess) async throws -> ClusterBody {
            let (status, body) = try await get("http://127.0.0.1:\(member.port)/v1/cluster")
            try #require(status == 200, "\(String(decoding: body, as: UTF8.self))")
            return try APIJSON.decoder().decode(ClusterBody.self, from: body)
        }
        func runsOn(_ member: BrokerProcess) async throws -> Set<String> {
            var running: Set<String> = []
            for link in links where try await get("http://127.0.0.1:\(member.port)/v1/links/\(link)").0 == 200 { running.insert(link) }
            return running
        }

        let a = try await start("a")
        let b = try await start("b")
        try await append(a, 0..<50)
        try await eventually("every target applied offsets 0...49") {
            for link in links { guard await position(link)?.offset == 49 else { return false } }
            return true
        }
        // Settled: each link runs on exactly one member, and both members run some.
        var onB: Set<String> = []
        try await eventually("each link on exactly one member") {
            let (onA, onBNow) = (try await runsOn(a), try await runsOn(b))
            onB = onBNow
            return onA.isDisjoint(with: onBNow) && onA.union(onBNow) == Set(links) && !onA.isEmpty && !onBNow.isEmpty
        }
        var epochs: [String: Int] = [:]
        for link in links { epochs[link] = await position(link)?.ownerEpoch ?? 0 }
        #expect(epochs.values.allSatisfy { $0 > 0 }, "every target stores its owner's epoch: \(epochs)")
        // Either member tells the same: both live, each link's owner, and a lease epoch at or above
        // the one its target stores (a link handed over since its last batch has a newer one).
        for member in [a, b] {
            let cluster = try await clusterView(member)
            #expect(cluster.members == ["a", "b"])
            for link in cluster.links {
                #expect(link.placement == "leased")
                #expect(link.owner == (onB.contains(link.link) ? "b" : "a"), "\(link)")
                #expect((link.ownerEpoch ?? 0) >= UInt64(epochs[link.link] ?? Int.max), "\(link)")
            }
        }

        // b dies: its links run on a within the lease, under higher epochs, and apply what
        // a takes meanwhile exactly once.
        #expect(await b.terminate(signal: SIGKILL) == SIGKILL)
        try await append(a, 50..<100)
        try await eventually("every target applied offsets 0...99 after b was killed") {
            for link in links { guard await position(link)?.offset == 99 else { return false } }
            return true
        }
        #expect(try await runsOn(a) == Set(links), "a runs every link")
        try await eventually("b's announcement expired") { try await clusterView(a).members == ["a"] }
        let after = try await clusterView(a)
        #expect(after.links.allSatisfy { $0.owner == "a" }, "\(after.links)")
        let cli = try await CommandLineTests.run(["cluster", "--url", "http://127.0.0.1:\(a.port)"])
        #expect(cli.status == 0, "\(cli.standardError)")
        #expect(cli.standardOutput.contains("live members: a;"), "\(cli.standardOutput)")
        for link in links {
            #expect(cli.standardOutput.split(separator: "\n").contains { $0.hasPrefix(link + " ") && $0.contains("leased") && $0.contains(" a ") },
                    "\(link) leased to a in: \(cli.standardOutput)")
        }
        for link in links {
            let now = await position(link)?.ownerEpoch ?? 0
            if onB.contains(link) {
                #expect(now > epochs[link] ?? .max, "\(link) moved from b under a higher owner epoch (\(epochs[link] ?? 0) → \(now))")
            }
            #expect(try await sqliteCount("\(directory)/targets/\(link).sqlite", "SELECT count(*) FROM Lead") == 100,
                    "\(link): 100 entries applied once each")
        }
        #expect(await a.terminate() == 0)
    }

    /// A capture source without `node:` is leased: it runs on one member, and when that member
    /// is killed the other captures what was committed meanwhile from the same slot. Every row
    /// inserted is in the stream exactly once (as many entries as rows, and every row applied by a
    /// leased link into its SQLite target).
    @Test func aLeasedSourceMovesWhenItsMemberIsKilledAndCapturesEveryChangeOnce() async throws {
        guard PostgresForProcessTests.shouldRun else { return }
        let pg = try PostgresForProcessTests.connection()
        let nats = try await NATSTestServer()
        defer { nats.stop() }
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-leased-source-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let table = "leased_" + String(UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(12))
        try await PostgresForProcessTests.execute("CREATE TABLE \(table) (id int PRIMARY KEY, n int)")
        defer {
            let cleanUp = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '\(table)' AND NOT active; DROP PUBLICATION IF EXISTS \(table); DROP TABLE IF EXISTS \(table)"
            Task { try? await PostgresForProcessTests.execute(cleanUp) }
        }
        func start(_ node: String) async throws -> BrokerProcess {
            let path = directory + "/\(node).yaml"
            let password = pg.password == nil ? "" : ", password_env: ORGSYNC_TEST_PG_PASSWORD"
            try """
            auth: { enabled: false }
            cluster: { node: \(node), nats_urls: ["nats://127.0.0.1:\(nats.port)"], replicas: 1, lease_ms: 1500 }
            streams: [ { name: events } ]
            sources:
              - name: crm
                kind: postgres
                stream: events
                settings: { host: \(pg.host), port: \(pg.port), user: \(pg.user), database: \(pg.database)\(password), tables: \(table), slot: \(table), publication: \(table), poll_ms: 50 }
                supervisor: { backoff_base_ms: 100, backoff_cap_ms: 500, probe_threshold: 1 }
            links:
              - { name: audit, stream: events, adapter: sqlite, settings: { path: \(directory)/audit.sqlite } }
              # A leased link whose name has the form of a source's lease key is still a link.
              - { name: source.bar, stream: events, adapter: sqlite, settings: { path: \(directory)/bar.sqlite } }
            """.write(toFile: path, atomically: true, encoding: .utf8)
            return try await BrokerProcess.start(arguments: ["--config", path, "--data-dir", directory + "/\(node)", "--port", "0"])
        }
        func runsSource(_ member: BrokerProcess) async throws -> Bool {
            try await get("http://127.0.0.1:\(member.port)/v1/sources/crm").0 == 200
        }
        func streamEnd(_ member: BrokerProcess) async throws -> UInt64? {
            let (status, body) = try await get("http://127.0.0.1:\(member.port)/v1/streams/events")
            guard status == 200 else { return nil }
            return try APIJSON.decoder().decode(StreamInfoBody.self, from: body).endOffset
        }
        func insert(_ ids: ClosedRange<Int>) async throws {
            try await PostgresForProcessTests.execute("INSERT INTO \(table) SELECT i, i * 10 FROM generate_series(\(ids.lowerBound), \(ids.upperBound)) i")
        }
        func applied(_ target: String = "audit") async -> Int? {
            try? await sqliteCount("\(directory)/\(target).sqlite", "SELECT count(DISTINCT id) FROM \(table)")
        }

        let a = try await start("a")
        let b = try await start("b")
        var owner: BrokerProcess = a
        try await eventually("one member runs the source") {
            let (onA, onB) = (try await runsSource(a), try await runsSource(b))
            owner = onA ? a : b
            return onA != onB
        }
        let survivor = owner === a ? b : a
        let (status, body) = try await get("http://127.0.0.1:\(survivor.port)/v1/sources/crm")
        #expect(status == 404 && String(decoding: body, as: UTF8.self).contains("another member"), "\(String(decoding: body, as: UTF8.self))")
        try await insert(1...20)
        try await eventually("rows 1...20 captured") { try await streamEnd(survivor) == 20 }

        // The member that runs the source dies; rows committed meanwhile are captured by the other.
        #expect(await owner.terminate(signal: SIGKILL) == SIGKILL)
        try await insert(21...45)
        try await eventually("the source runs on the other member") { try await runsSource(survivor) }
        try await eventually("rows 21...45 captured") { (try await streamEnd(survivor) ?? 0) >= 45 }
        try await eventually("every row applied") { await applied() == 45 }
        try await eventually("every row applied by link source.bar") { await applied("bar") == 45 }
        #expect(try await streamEnd(survivor) == 45, "45 rows, 45 entries: none captured twice")
        let (clusterStatus, clusterBody) = try await get("http://127.0.0.1:\(survivor.port)/v1/cluster")
        #expect(clusterStatus == 200)
        let cluster = try APIJSON.decoder().decode(ClusterBody.self, from: clusterBody)
        #expect(cluster.sources.map(\.source) == ["crm"] && cluster.sources.first?.placement == "leased")
        #expect(cluster.sources.first?.owner == (survivor === a ? "a" : "b"), "\(cluster.sources)")
        #expect(await survivor.terminate() == 0)
    }

    /// A leased link's events go to the operators' webhooks from the member it runs on (the
    /// notifier reads every hosted link's sync log, leased ones included).
    @Test func aLeasedLinksEventsAreNotifiedByTheMemberItRunsOn() async throws {
        let nats = try await NATSTestServer()
        defer { nats.stop() }
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-leased-notify-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let events = Observed<[String]>([])
        let receiver = try await TestHTTPServer.start { request in
            let body = (try? JSONSerialization.jsonObject(with: Data(request.body))) as? [String: Any]
            let link = (body?["data"] as? [String: Any])?["link"] as? String ?? "?"
            events.update { $0.append("\(body?["type"] as? String ?? "?") \(link)") }
            return Reply(status: .ok)
        }
        let path = directory + "/a.yaml"
        try """
        auth: { enabled: false }
        cluster: { node: a, nats_urls: ["nats://127.0.0.1:\(nats.port)"], replicas: 1, lease_ms: 1500 }
        streams: [ { name: events } ]
        links:
          - { name: leased, stream: events, adapter: sqlite, settings: { path: \(directory)/leased.sqlite } }
        notifications:
          - { name: ops, url: "\(receiver.url)", secret_env: ORGSYNC_TEST_NOTIFY_SECRET, events: [link.paused] }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let secret = "whsec_" + Data((0..<32).map { UInt8($0 * 3 + 7) }).base64EncodedString()
        let member = try await BrokerProcess.start(
            arguments: ["--config", path, "--data-dir", directory + "/a", "--port", "0"], environment: ["ORGSYNC_TEST_NOTIFY_SECRET": secret])
        // The lease is taken at the member's first round: until then the link is not here (404).
        let deadline = Date().addingTimeInterval(30)
        var status = 0
        while status != 200, Date() < deadline {
            status = try await post("http://127.0.0.1:\(member.port)/v1/links/leased/suspend", body: Data(), contentType: "application/json").0
            if status != 200 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(status == 200, "the leased link was paused on the member running it")
        let seen = try await withTimeout(ms: 30_000, "link.paused of the leased link at the receiver") {
            try await events.wait(until: { $0.contains("link.paused leased") })
        }
        #expect(seen.contains("link.paused leased"))
        #expect(await member.terminate() == 0)
    }

    /// `orgsync serve` run once on the configuration `yaml` makes (given the temporary directory
    /// it is written to): its exit status, its standard error, and whether it made its data
    /// directory.
    func serveOnce(_ yaml: (_ directory: String) -> String) async throws -> (status: Int32, message: String, madeDataDirectory: Bool) {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-cluster-cfg-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/member.yaml"
        try yaml(directory).write(toFile: path, atomically: true, encoding: .utf8)
        let (status, message) = try await runServe(["--config", path, "--data-dir", directory + "/state", "--port", "0"])
        return (status, message, FileManager.default.fileExists(atPath: directory + "/state"))
    }

    /// Placement mistakes stop `serve` before anything opens, naming the field.
    @Test func aLinkNamedAsALeasedSourcesLeaseIsRefused() async throws {
        let (status, message, madeDataDirectory) = try await serveOnce { _ in
            """
            auth: { enabled: false }
            cluster: { node: a, nats_urls: ["127.0.0.1:1"] }
            streams: [ { name: events }, { name: audit } ]
            links: [ { name: source.crm, stream: audit, adapter: sqlite, settings: { path: x.sqlite } } ]
            sources: [ { name: crm, kind: postgres, stream: events, settings: { host: 127.0.0.1, user: u, database: d, publication: p } } ]
            """
        }
        #expect(status == 2)
        #expect(message.contains("links[0].name") && message.contains("lease key"), "\(message)")
        #expect(!madeDataDirectory)
    }

    /// A member whose TLS to NATS cannot be set up stops at start, naming the setting and its
    /// file — before it connects, and without showing its NATS password.
    @Test func aMemberWhoseNATSAuthorityFileCannotBeReadSaysSo() async throws {
        let (status, message, _) = try await serveOnce { directory in
            """
            auth: { enabled: false }
            cluster: { node: a, nats_urls: ["tls://127.0.0.1:1"], tls: { ca_file: \(directory)/missing-ca.pem }, user: orgsync, password: s3cret-pw }
            streams: [ { name: events } ]
            """
        }
        #expect(status == 3, "cannot open: \(message)")
        #expect(message.contains("cluster.tls.ca_file") && message.contains("missing-ca.pem") && message.contains("cannot be read"), "\(message)")
        #expect(!message.contains("s3cret-pw"))
    }
}
