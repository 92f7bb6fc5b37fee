import Foundation
import Logging
import PostgresNIO
import Testing

/// The throwaway server `.ci/postgres.sh` starts, found through its `ORGSYNC_TEST_PG_*`
/// variables (the same rules as `PostgresAdapterTests/TestPostgres.swift`): outside CI a missing
/// server skips these tests visibly; in CI (`CI` set) a missing server fails them.
enum LinkTestPostgres {
    static let environment = ProcessInfo.processInfo.environment

    static var isConfigured: Bool {
        ["ORGSYNC_TEST_PG_HOST", "ORGSYNC_TEST_PG_PORT", "ORGSYNC_TEST_PG_USER", "ORGSYNC_TEST_PG_DB",
         "ORGSYNC_TEST_PG_CTL", "ORGSYNC_TEST_PG_DATA"]
            .allSatisfy { environment[$0]?.isEmpty == false }
    }

    static var inCI: Bool {
        guard let value = environment["CI"] else { return false }
        return !value.isEmpty && value != "0" && value.lowercased() != "false"
    }

    static var shouldRun: Bool { isConfigured || inCI }

    static let skipMessage: Comment =
        "PostgreSQL link tests skipped: ORGSYNC_TEST_PG_* not set (run: source .ci/postgres.sh)"

    struct NotConfigured: Error, CustomStringConvertible {
        var description: String {
            "CI is set but ORGSYNC_TEST_PG_HOST/PORT/USER/DB/CTL/DATA are not: .ci/run must start PostgreSQL (.ci/postgres.sh)"
        }
    }

    struct Connection: Sendable {
        var host: String
        var port: Int
        var user: String
        var password: String?
        var database: String
    }

    static func connection() throws -> Connection {
        guard isConfigured, let host = environment["ORGSYNC_TEST_PG_HOST"], let portText = environment["ORGSYNC_TEST_PG_PORT"],
            let port = Int(portText), let user = environment["ORGSYNC_TEST_PG_USER"], let database = environment["ORGSYNC_TEST_PG_DB"]
        else { throw NotConfigured() }
        return Connection(host: host, port: port, user: user, password: environment["ORGSYNC_TEST_PG_PASSWORD"], database: database)
    }

    /// The `settings` table of a `postgres` link on `schema`, as a broker configuration gives it.
    static func adapterSettings(_ connection: Connection, schema: String) -> [String: String] {
        var settings = [
            "host": connection.host, "port": String(connection.port), "user": connection.user,
            "database": connection.database, "schema": schema, "primary_key": "org_key",
            // A short connect bound so that probes of a stopped server fail fast. The query
            // deadline stays at its default: a dead server is noticed by the adapter's liveness
            // check (and a stopped one closes its connections), while a tight deadline would
            // suspend a link whose queries are merely slow on a loaded machine.
            "connect_timeout_ms": "1000",
        ]
        if let password = connection.password { settings["password"] = password }
        return settings
    }

    /// A plain connection of the test's own, to look at the target behind the adapter's back.
    static func connect(_ connection: Connection) async throws -> PostgresConnection {
        let configuration = PostgresConnection.Configuration(
            host: connection.host, port: connection.port, username: connection.user, password: connection.password,
            database: connection.database, tls: .disable)
        return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: Logger(label: "test"))
    }

    /// Runs the server's pg_ctl (as its owner) with `-w`, and returns its exit status.
    static func pgCtl(_ arguments: [String]) async throws -> Int32 {
        guard let ctl = environment["ORGSYNC_TEST_PG_CTL"], let data = environment["ORGSYNC_TEST_PG_DATA"], let command = arguments.first
        else { throw NotConfigured() }
        var full = [command, "-s", "-D", data, "-w", "-t", "60"]
        if command == "start", let log = environment["ORGSYNC_TEST_PG_LOG"] { full += ["-l", log] }
        full += arguments.dropFirst()
        // posix_spawn + waitpid on a Dispatch thread: Foundation's Process does not always report
        // the exit of `pg_ctl start` (whose server child outlives it), and waiting must not
        // block a thread of Swift's cooperative pool.
        let argv = [ctl] + full
        return try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                var pid: pid_t = 0
                var cArguments = argv.map { strdup($0) } + [nil]
                defer { cArguments.forEach { free($0) } }
                let spawned = posix_spawn(&pid, ctl, nil, nil, &cArguments, environ)
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

    /// Whether the server runs (`pg_ctl status` exits 0).
    static func isRunning() async -> Bool {
        (try? await pgCtl(["status"])) == 0
    }
}

extension PostgresConnection {
    /// One Int64 (or NULL) from a one-row, one-column query.
    func scalar(_ sql: String) async throws -> Int64? {
        var value: Int64?
        for try await row in try await query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test")).decode(Int64?.self) {
            value = row
        }
        return value
    }
}
