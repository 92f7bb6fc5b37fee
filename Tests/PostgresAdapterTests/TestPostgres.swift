import Foundation
import Logging
import OrgSyncPluginAPI
import OrgSyncTestPostgres
import PostgresAdapter
import PostgresNIO
import Testing

/// The throwaway server `.ci/postgres.sh` starts (``TestPostgresServer``), as the adapter's
/// tests use it: adapter settings on a schema of their own, private clusters to stop.
///
/// Outside CI a missing server skips the integration suite with a visible message; in CI
/// (`CI` set) a missing server fails every test of it, so CI cannot pass without running them.
enum TestPostgres {
    static let environment = TestPostgresServer.environment
    static var isConfigured: Bool { TestPostgresServer.isConfigured() }
    static var inCI: Bool { TestPostgresServer.inCI }

    /// Run the suite when a server is configured, and in CI always (where absence must fail).
    static var shouldRun: Bool { isConfigured || inCI }

    static let skipMessage: Comment =
        "PostgreSQL integration tests skipped: ORGSYNC_TEST_PG_* not set (run: source .ci/postgres.sh)"

    typealias NotConfigured = TestPostgresServer.NotConfigured

    static func settings(schema: String, queryTimeoutMs: Int = 30_000) throws -> PostgresAdapterSettings {
        let server = try TestPostgresServer.connection()
        return PostgresAdapterSettings(
            host: server.host, port: server.port, user: server.user, password: server.password, database: server.database,
            schema: schema, connectTimeoutMs: 5_000, queryTimeoutMs: queryTimeoutMs)
    }

    /// A schema name of its own for one test, so tests never see each other's tables.
    static func uniqueSchema(_ test: String) -> String {
        "t_\(test)_\(UInt32.random(in: 0...UInt32.max))"
    }

    /// A plain connection of the test's own, to look at the target behind the adapter's back.
    static func connect(_ settings: PostgresAdapterSettings) async throws -> PostgresConnection {
        try await TestPostgresServer.connect(.init(
            host: settings.host, port: settings.port, user: settings.user, password: settings.password, database: settings.database))
    }

    /// A cluster of one test's own, from `.ci/postgres.sh start`: tests that stop their server
    /// use one, so the shared server stays up for every other test running in parallel.
    struct PrivateCluster: Sendable {
        var variables: [String: String]
        var settings: PostgresAdapterSettings

        /// Runs the cluster's pg_ctl (as its owner) and returns its exit status.
        func pgCtl(_ arguments: [String]) async throws -> Int32 {
            try await TestPostgresServer.pgCtl(arguments, variables: variables)
        }

        /// Stops the cluster and removes its directory; safe after a failure and when stopped.
        func stop() async {
            guard let dir = variables["ORGSYNC_TEST_PG_DIR"] else { return }
            _ = try? await TestPostgres.run(["/bin/bash", TestPostgres.script, "stop", dir])
        }
    }

    /// `.ci/postgres.sh`, found from this file (Tests/PostgresAdapterTests/ in the package).
    static let script: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent(".ci/postgres.sh").path
    }()

    static func startPrivateCluster(schema: String) async throws -> PrivateCluster {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("orgsync-pg-env-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let status = try await run(["/bin/bash", "-c", "exec /bin/bash \"$0\" start > \"$1\"", script, output])
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        var variables: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("export ") {
            let assignment = line.dropFirst("export ".count)
            guard let equals = assignment.firstIndex(of: "=") else { continue }
            variables[String(assignment[..<equals])] = String(assignment[assignment.index(after: equals)...])
        }
        guard status == 0, let server = TestPostgresServer.Connection(variables: variables) else {
            if let dir = variables["ORGSYNC_TEST_PG_DIR"] { _ = try? await run(["/bin/bash", script, "stop", dir]) }
            throw PrivateClusterFailed(status: status)
        }
        let settings = PostgresAdapterSettings(
            host: server.host, port: server.port, user: server.user, password: server.password, database: server.database,
            schema: schema, connectTimeoutMs: 5_000)
        return PrivateCluster(variables: variables, settings: settings)
    }

    struct PrivateClusterFailed: Error, CustomStringConvertible {
        var status: Int32
        var description: String { "\(TestPostgres.script) start exited with \(status)" }
    }

    static func run(_ argv: [String]) async throws -> Int32 { try await TestPostgresServer.run(argv) }
}

extension PostgresConnection {
    func count(schema: String, table: String) async throws -> Int64 {
        try await scalar(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \"\(schema)\".\"\(table)\"")) ?? -1
    }

    /// How many backends of `link`'s adapter wait for a lock, asked until one does or 20 s
    /// passed (another backend's state: asking again is the only way to see it change).
    func linkWaitingForALock(_ link: String) async throws -> Int64 {
        let deadline = ContinuousClock.now + .seconds(20)
        var waiting: Int64 = 0
        while waiting == 0, ContinuousClock.now < deadline {
            waiting = try await scalar(PostgresQuery(unsafeSQL: """
                SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orgsync:\(link)' AND wait_event_type = 'Lock'
                """)) ?? 0
            if waiting == 0 { try await Task.sleep(for: .milliseconds(20)) }
        }
        return waiting
    }

    /// The server's activity counters of one table.
    struct TableCounters {
        var inserted: Int64
        var updated: Int64
        var deleted: Int64
        var sequentialScans: Int64
        /// Rows fetched through an index (`idx_tup_fetch`).
        var indexFetched: Int64
    }

    /// `table`'s counters once `until` holds for them, asked every 100 ms (another backend's
    /// counters arrive when it reports them: asking again is the only way to see them change);
    /// the last ones read when 30 s passed first.
    func tableCounters(schema: String, table: String, until: (TableCounters) -> Bool) async throws -> TableCounters {
        let sql = """
            SELECT n_tup_ins, n_tup_upd, n_tup_del, seq_scan, coalesce(idx_tup_fetch, 0)
            FROM pg_stat_user_tables WHERE schemaname = '\(schema)' AND relname = '\(table)'
            """
        let deadline = ContinuousClock.now + .seconds(30)
        var counters = TableCounters(inserted: 0, updated: 0, deleted: 0, sequentialScans: 0, indexFetched: 0)
        while true {
            let rows = try await query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test"))
            for try await row in rows.decode((Int64, Int64, Int64, Int64, Int64).self) {
                counters = TableCounters(inserted: row.0, updated: row.1, deleted: row.2, sequentialScans: row.3, indexFetched: row.4)
            }
            if until(counters) || ContinuousClock.now >= deadline { return counters }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func dropSchema(_ schema: String) async {
        _ = try? await query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE"), logger: Logger(label: "test"))
    }
}

func entry(
    _ offset: UInt64, _ op: EntryOperation, _ key: String, object: String = "Contact",
    _ fields: [String: JSONValue] = [:]
) -> Entry {
    Entry(offset: Offset(offset), org: "acme", object: object, op: op, key: key, ts: "2026-11-18T11:06:40.\(offset)Z", fields: fields)
}

func batch(_ entries: [Entry]) -> EntryBatch { EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: entries) }

/// The kind of the AdapterError `body` throws, or nil when it throws none or another type.
func adapterError(_ body: () async throws -> Void) async -> AdapterError? {
    do {
        try await body()
        return nil
    } catch let error as AdapterError {
        return error
    } catch {
        Issue.record("expected an AdapterError, got \(type(of: error)): \(error)")
        return nil
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound and released just now).
func unusedLoopbackPort() throws -> Int {
    let socket = try loopbackSocket(listening: false)
    close(socket.fd)
    return socket.port
}

/// A TCP socket bound to 127.0.0.1 on a port the kernel picks, listening when asked; the caller
/// closes `fd`.
func loopbackSocket(listening: Bool) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EMFILE) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(fd, pointer, length) == 0, !listening || listen(fd, 8) == 0 else { return -1 }
            return getsockname(fd, pointer, &length)
        }
    }
    guard bound == 0 else {
        close(fd)
        throw POSIXError(.EADDRINUSE)
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

// Literals for readable test entries (the API module does not offer them).
extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
}
