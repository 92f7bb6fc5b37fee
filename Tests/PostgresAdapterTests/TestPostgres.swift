import Foundation
import Logging
import OrgSyncPluginAPI
import PostgresAdapter
import PostgresNIO
import Testing

/// The throwaway server `.ci/postgres.sh` starts, found through its environment variables.
///
/// Outside CI a missing server skips the integration suite with a visible message; in CI
/// (`CI` set) a missing server fails every test of it, so CI cannot pass without running them.
enum TestPostgres {
    static let environment = ProcessInfo.processInfo.environment

    static var isConfigured: Bool {
        ["ORGSYNC_TEST_PG_HOST", "ORGSYNC_TEST_PG_PORT", "ORGSYNC_TEST_PG_USER", "ORGSYNC_TEST_PG_DB"]
            .allSatisfy { environment[$0]?.isEmpty == false }
    }

    static var inCI: Bool {
        guard let value = environment["CI"] else { return false }
        return !value.isEmpty && value != "0" && value.lowercased() != "false"
    }

    /// Run the suite when a server is configured, and in CI always (where absence must fail).
    static var shouldRun: Bool { isConfigured || inCI }

    static let skipMessage: Comment =
        "PostgreSQL integration tests skipped: ORGSYNC_TEST_PG_* not set (run: source .ci/postgres.sh)"

    struct NotConfigured: Error, CustomStringConvertible {
        var description: String {
            "CI is set but ORGSYNC_TEST_PG_HOST/PORT/USER/DB are not: .ci/run must start PostgreSQL (.ci/postgres.sh)"
        }
    }

    static func settings(schema: String, queryTimeoutMs: Int = 30_000) throws -> PostgresAdapterSettings {
        guard isConfigured, let host = environment["ORGSYNC_TEST_PG_HOST"], let portText = environment["ORGSYNC_TEST_PG_PORT"],
            let port = Int(portText), let user = environment["ORGSYNC_TEST_PG_USER"], let database = environment["ORGSYNC_TEST_PG_DB"]
        else { throw NotConfigured() }
        return PostgresAdapterSettings(
            host: host, port: port, user: user, password: environment["ORGSYNC_TEST_PG_PASSWORD"], database: database,
            schema: schema, connectTimeoutMs: 5_000, queryTimeoutMs: queryTimeoutMs)
    }

    /// A schema name of its own for one test, so tests never see each other's tables.
    static func uniqueSchema(_ test: String) -> String {
        "t_\(test)_\(UInt32.random(in: 0...UInt32.max))"
    }

    /// A plain connection of the test's own, to look at the target behind the adapter's back.
    static func connect(_ settings: PostgresAdapterSettings) async throws -> PostgresConnection {
        let configuration = PostgresConnection.Configuration(
            host: settings.host, port: settings.port, username: settings.user, password: settings.password,
            database: settings.database, tls: .disable)
        return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: Logger(label: "test"))
    }

    /// A cluster of one test's own, from `.ci/postgres.sh start`: tests that stop their server
    /// use one, so the shared server stays up for every other test running in parallel.
    struct PrivateCluster: Sendable {
        var variables: [String: String]
        var settings: PostgresAdapterSettings

        /// Runs the cluster's pg_ctl (as its owner) and returns its exit status.
        func pgCtl(_ arguments: [String]) async throws -> Int32 {
            guard let ctl = variables["ORGSYNC_TEST_PG_CTL"], let data = variables["ORGSYNC_TEST_PG_DATA"] else {
                throw NotConfigured()
            }
            var full = [arguments[0], "-s", "-D", data, "-w", "-t", "60"]
            if arguments[0] == "start", let log = variables["ORGSYNC_TEST_PG_LOG"] { full += ["-l", log] }
            full += arguments.dropFirst()
            return try await TestPostgres.run([ctl] + full)
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
        guard status == 0, let host = variables["ORGSYNC_TEST_PG_HOST"], let port = variables["ORGSYNC_TEST_PG_PORT"].flatMap(Int.init),
            let user = variables["ORGSYNC_TEST_PG_USER"], let database = variables["ORGSYNC_TEST_PG_DB"]
        else {
            if let dir = variables["ORGSYNC_TEST_PG_DIR"] { _ = try? await run(["/bin/bash", script, "stop", dir]) }
            throw PrivateClusterFailed(status: status)
        }
        let settings = PostgresAdapterSettings(
            host: host, port: port, user: user, password: variables["ORGSYNC_TEST_PG_PASSWORD"], database: database,
            schema: schema, connectTimeoutMs: 5_000)
        return PrivateCluster(variables: variables, settings: settings)
    }

    struct PrivateClusterFailed: Error, CustomStringConvertible {
        var status: Int32
        var description: String { "\(TestPostgres.script) start exited with \(status)" }
    }

    /// Runs a program and returns its exit status (128 + signal when killed, as a shell says).
    ///
    /// posix_spawn + waitpid on a Dispatch thread: Foundation's Process did not always report
    /// the exit of `pg_ctl start` (whose server child outlives it), and waiting must not block a
    /// thread of Swift's small cooperative pool.
    static func run(_ argv: [String]) async throws -> Int32 {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                var pid: pid_t = 0
                var cArguments = argv.map { strdup($0) } + [nil]
                defer { cArguments.forEach { free($0) } }
                let spawned = posix_spawn(&pid, argv[0], nil, nil, &cArguments, environ)
                guard spawned == 0 else {
                    continuation.resume(throwing: POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EINVAL))
                    return
                }
                var status: Int32 = 0
                while waitpid(pid, &status, 0) == -1, errno == EINTR {}
                let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                continuation.resume(returning: exitCode)
            }
        }
    }
}

extension PostgresConnection {
    /// One Int64 from a one-row, one-column query.
    func scalar(_ query: PostgresQuery) async throws -> Int64? {
        var value: Int64?
        for try await row in try await self.query(query, logger: Logger(label: "test")).decode(Int64?.self) { value = row }
        return value
    }

    func count(schema: String, table: String) async throws -> Int64 {
        try await scalar(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \"\(schema)\".\"\(table)\"")) ?? -1
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
