import Foundation
import OrgSyncLog
import Testing

#if canImport(Glibc)
import Glibc
import OrgSyncTestSupport
#endif

/// The three ways acknowledged entries were silently never applied before targets stored a
/// stream identity with their offset, each against the real `orgsync serve` and a SQLite target:
/// a repair that cut the stream, a new data directory on an existing target, and a second broker
/// with another stream but the same link name and target. Each must now diverge, apply nothing,
/// say so, and apply every entry once an operator resets the link.
@Suite(.serialized) struct DivergedLinkProcessTests {
    /// The kinds of target a link writes to: each stores its position with the stream identity.
    enum TargetKind: String, CaseIterable, CustomStringConvertible {
        case sqlite, postgres, plugin
        var description: String { rawValue }
    }

    struct Setup {
        let directory: String
        let target: String
        let kind: TargetKind
        /// The PostgreSQL schema of this test (a fresh one per test).
        let schema = "diverged_" + UUID().uuidString.prefix(8).lowercased()

        init(_ kind: TargetKind = .sqlite) throws {
            self.kind = kind
            directory = FileManager.default.temporaryDirectory.path + "/orgsync-diverged-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            target = directory + "/target.sqlite"
        }

        /// The link's adapter and settings, in YAML.
        func adapterYAML() throws -> String {
            switch kind {
            case .sqlite:
                return "adapter: sqlite\n    settings: { path: \(target) }"
            case .plugin:
                return "adapter: python-sqlite\n    settings: { path: \(target) }"
            case .postgres:
                let pg = try PostgresForProcessTests.connection()
                return "adapter: postgres\n    settings: { host: \(pg.host), port: \"\(pg.port)\", user: \(pg.user), database: \(pg.database), "
                    + "schema: \(schema), query_timeout_ms: \"5000\"\(pg.password == nil ? "" : ", password_env: ORGSYNC_TEST_PG_PASSWORD") }"
            }
        }

        /// A configuration with small segments, a link `demo` into the shared target.
        func config(_ name: String, stream: String = "events") throws -> String {
            let path = directory + "/" + name + ".yaml"
            let plugins = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("plugins/examples").path
            try """
            auth: { enabled: false }
            plugins_dir: \(plugins)
            streams: [ { name: \(stream), segment_bytes_max: 4096 } ]
            links:
              - name: demo
                stream: \(stream)
                \(try adapterYAML())
                supervisor: { probe_threshold: 1, verify_interval_ms: 50, backoff_base_ms: 50, backoff_cap_ms: 200 }
            """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        func start(_ config: String, dataDirectory: String) async throws -> BrokerProcess {
            try await BrokerProcess.start(arguments: ["--config", config, "--data-dir", directory + "/" + dataDirectory, "--port", "0"])
        }

        func cleanUp() { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Appends `count` inserts with keys `prefix-i`, in requests of 40.
    func append(_ broker: BrokerProcess, prefix: String, count: Int, stream: String = "events") async throws {
        var sent = 0
        while sent < count {
            let lines = (sent..<min(count, sent + 40)).map {
                // A random pad, so that the batches do not compress to nothing and segments roll.
                #"{"org":"o","object":"Lead","op":"insert","key":"\#(prefix)-\#($0)","ts":"t","fields":{"N":\#($0),"Pad":"\#(UUID().uuidString + UUID().uuidString)"}}"#
            }
            let (status, _) = try await post("http://127.0.0.1:\(broker.port)/v1/streams/\(stream)/entries",
                                             body: Data(lines.joined(separator: "\n").utf8), contentType: "application/x-ndjson")
            try #require(status == 201)
            sent += lines.count
        }
    }

    func rows(_ setup: Setup, prefix: String) async throws -> Int {
        switch setup.kind {
        case .sqlite, .plugin:
            return try await sqliteCount(setup.target, "SELECT count(*) FROM Lead WHERE key LIKE '\(prefix)-%'")
        case .postgres:
            return try await PostgresForProcessTests.count(
                "SELECT count(*) FROM \(setup.schema).\"Lead\" WHERE key LIKE '\(prefix)-%'")
        }
    }

    func run(_ arguments: [String]) async throws -> Int32 {
        let executable = try orgsyncExecutable()
        return try await offThePool {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    @Test(arguments: TargetKind.allCases)
    func aRepairThatCutAppliedEntriesDivergesUntilReset(kind: TargetKind) async throws {
        if kind == .postgres, !PostgresForProcessTests.shouldRun { return }
        let setup = try Setup(kind)
        defer { setup.cleanUp() }
        let config = try setup.config("a")
        do {
            let broker = try await setup.start(config, dataDirectory: "a")
            try await append(broker, prefix: "old", count: 400)
            _ = try await waitForLink(broker, "applied 400") { ($0["cursor"] as? Int) == 400 }
            #expect(await broker.terminate() == 0)
        }
        // Damage an early segment, let `log verify` find it and `log repair` cut there.
        let streamDirectory = setup.directory + "/a/streams/events"
        let segments = try FileManager.default.contentsOfDirectory(atPath: streamDirectory).filter { $0.hasSuffix(".log") }.sorted()
        try #require(segments.count > 3)
        let damaged = try #require(FileHandle(forUpdatingAtPath: streamDirectory + "/" + segments[1]))
        try damaged.seek(toOffset: 100)
        let byte = try #require(try damaged.read(upToCount: 1)?.first)
        try damaged.seek(toOffset: 100)
        try damaged.write(contentsOf: Data([byte ^ 0xFF]))
        try damaged.close()
        let dataDirectory = setup.directory + "/a"
        #expect(try await run(["log", "verify", "--data-dir", dataDirectory, "--stream", "events"]) == 1)
        #expect(try await run(["log", "repair", "--data-dir", dataDirectory, "--stream", "events", "--yes"]) == 0)
        let log = try StreamLog.open(dataDirectory: dataDirectory, name: "events")
        let cut = log.endOffset
        #expect(log.lineage.currentEpoch == 2, "a repair that cut acknowledged entries begins a new epoch")
        await log.close()
        try #require(cut < 400)

        let broker = try await setup.start(config, dataDirectory: "a")
        try await append(broker, prefix: "new", count: 100)
        let diverged = try await waitForLink(broker, "diverged") { ($0["state"] as? String) == "diverged" }
        #expect((diverged["lag"] as? Int) == 100, "a diverged link never reports lag 0 with entries missing")
        #expect((diverged["last_error"] as? String)?.contains("cut by a repair") == true)
        #expect(try await rows(setup, prefix: "new") == 0)
        // Resume does not end it; a reset from the cut replays the new entries.
        let (resumeStatus, _) = try await post("http://127.0.0.1:\(broker.port)/v1/links/demo/resume", body: Data(), contentType: "application/json")
        #expect(resumeStatus == 409)
        let (resetStatus, _) = try await post("http://127.0.0.1:\(broker.port)/v1/links/demo/reset?from=\(cut)", body: Data(),
                                              contentType: "application/json")
        #expect(resetStatus == 200)
        _ = try await waitForLink(broker, "drained") { ($0["lag"] as? Int) == 0 && ($0["state"] as? String) == "active" }
        #expect(try await rows(setup, prefix: "new") == 100, "every new entry reached the target")
        #expect(await broker.terminate() == 0)
    }

    @Test func anOperatorsPauseOutlastsARestartOfTheBroker() async throws {
        let setup = try Setup()
        defer { setup.cleanUp() }
        let config = try setup.config("p")
        do {
            let broker = try await setup.start(config, dataDirectory: "p")
            try await append(broker, prefix: "before", count: 40)
            _ = try await waitForLink(broker, "applied 40") { ($0["cursor"] as? Int) == 40 }
            let (status, _) = try await post("http://127.0.0.1:\(broker.port)/v1/links/demo/suspend", body: Data(), contentType: "application/json")
            #expect(status == 200)
            #expect(await broker.terminate() == 0)
        }
        let broker = try await setup.start(config, dataDirectory: "p")
        let paused = try await linkStatus(broker)
        #expect((paused["state"] as? String) == "paused", "the pause outlasted the restart")
        try await append(broker, prefix: "during", count: 40)
        // The appends are acknowledged; a paused link applies none of them.
        #expect((try await linkStatus(broker)["lag"] as? Int) == 40)
        #expect(try await rows(setup, prefix: "during") == 0)
        let (status, _) = try await post("http://127.0.0.1:\(broker.port)/v1/links/demo/resume", body: Data(), contentType: "application/json")
        #expect(status == 200)
        _ = try await waitForLink(broker, "drained after resume") { ($0["lag"] as? Int) == 0 && ($0["state"] as? String) == "active" }
        #expect(try await rows(setup, prefix: "during") == 40)
        #expect(await broker.terminate() == 0)
    }

    @Test func aNewDataDirectoryOnAnExistingTargetDiverges() async throws {
        let setup = try Setup()
        defer { setup.cleanUp() }
        let config = try setup.config("b")
        do {
            let broker = try await setup.start(config, dataDirectory: "first")
            try await append(broker, prefix: "first", count: 400)
            _ = try await waitForLink(broker, "applied 400") { ($0["cursor"] as? Int) == 400 }
            #expect(await broker.terminate() == 0)
        }
        let broker = try await setup.start(config, dataDirectory: "second")
        try await append(broker, prefix: "second", count: 100)
        let diverged = try await waitForLink(broker, "diverged") { ($0["state"] as? String) == "diverged" }
        #expect((diverged["lag"] as? Int) == 100)
        #expect((diverged["last_error"] as? String)?.contains("another stream") == true)
        #expect(try await rows(setup, prefix: "second") == 0)
        let (status, _) = try await post("http://127.0.0.1:\(broker.port)/v1/links/demo/reset?from=0", body: Data(), contentType: "application/json")
        #expect(status == 200)
        _ = try await waitForLink(broker, "drained") { ($0["lag"] as? Int) == 0 && ($0["state"] as? String) == "active" }
        #expect(try await rows(setup, prefix: "second") == 100)
        #expect(await broker.terminate() == 0)
    }

    @Test func aSecondBrokerWithAnotherStreamButTheSameLinkDiverges() async throws {
        let setup = try Setup()
        defer { setup.cleanUp() }
        let first = try await setup.start(try setup.config("c1"), dataDirectory: "c1")
        try await append(first, prefix: "one", count: 100)
        _ = try await waitForLink(first, "applied 100") { ($0["cursor"] as? Int) == 100 }
        #expect(await first.terminate() == 0)
        let second = try await setup.start(try setup.config("c2", stream: "orders"), dataDirectory: "c2")
        try await append(second, prefix: "two", count: 50, stream: "orders")
        _ = try await waitForLink(second, "diverged") { ($0["state"] as? String) == "diverged" }
        #expect(try await rows(setup, prefix: "two") == 0, "nothing of another stream is applied over this target's position")
        #expect(await second.terminate() == 0)
    }
}

/// The throwaway PostgreSQL of `.ci/postgres.sh` (`ORGSYNC_TEST_PG_*`), for tests that run the
/// real broker against it: skipped outside CI when not started, a failure in CI.
enum PostgresForProcessTests {
    static let environment = ProcessInfo.processInfo.environment

    static var shouldRun: Bool {
        if environment["ORGSYNC_TEST_PG_HOST"]?.isEmpty == false { return true }
        guard let ci = environment["CI"] else { return false }
        return !ci.isEmpty && ci != "0" && ci.lowercased() != "false"
    }

    struct Connection {
        var host: String
        var port: Int
        var user: String
        var password: String?
        var database: String
    }

    static func connection() throws -> Connection {
        guard let host = environment["ORGSYNC_TEST_PG_HOST"], let port = environment["ORGSYNC_TEST_PG_PORT"].flatMap({ Int($0) }),
              let user = environment["ORGSYNC_TEST_PG_USER"], let database = environment["ORGSYNC_TEST_PG_DB"]
        else { throw ProcessError("CI is set but ORGSYNC_TEST_PG_* are not: .ci/run must start PostgreSQL (.ci/postgres.sh)") }
        return Connection(host: host, port: port, user: user, password: environment["ORGSYNC_TEST_PG_PASSWORD"], database: database)
    }

    /// Runs a one-number query with psql.
    static func count(_ sql: String) async throws -> Int {
        try await offThePool { try countNow(sql) }
    }

    /// Runs statements with psql (one session); throws unless all succeed.
    static func execute(_ sql: String) async throws {
        _ = try await offThePool { try psql(sql) }
    }

    private static func countNow(_ sql: String) throws -> Int {
        let text = try psql(sql)
        guard let value = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw ProcessError("psql answered \(text), not a number") }
        return value
    }

    private static func psql(_ sql: String) throws -> String {
        let pg = try connection()
        let psql = ["/usr/bin/psql", "/usr/lib/postgresql/15/bin/psql"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try psql ?? { throw ProcessError("psql not found") }())
        process.arguments = ["-h", pg.host, "-p", String(pg.port), "-U", pg.user, "-d", pg.database, "-v", "ON_ERROR_STOP=1", "-tAc", sql]
        var env = ProcessInfo.processInfo.environment
        if let password = pg.password { env["PGPASSWORD"] = password }
        process.environment = env
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ProcessError("psql failed (\(process.terminationStatus)): \(text)") }
        return text
    }
}
