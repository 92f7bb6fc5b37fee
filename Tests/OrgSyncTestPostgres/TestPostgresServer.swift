import Dispatch
import Foundation
import Logging
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

/// The throwaway PostgreSQL server `.ci/postgres.sh` starts, found through its `ORGSYNC_TEST_PG_*`
/// variables: what the PostgreSQL adapter's tests and the link tests share.
///
/// Outside CI a missing server skips those suites with a visible message; in CI (`CI` set) a
/// missing server fails them, so CI cannot pass without running them.
public enum TestPostgresServer {
    public static let environment = ProcessInfo.processInfo.environment

    /// The variables naming the server to connect to.
    public static let connectionVariables = ["ORGSYNC_TEST_PG_HOST", "ORGSYNC_TEST_PG_PORT", "ORGSYNC_TEST_PG_USER", "ORGSYNC_TEST_PG_DB"]
    /// The variables a test that stops and starts the server needs too.
    public static let controlVariables = ["ORGSYNC_TEST_PG_CTL", "ORGSYNC_TEST_PG_DATA"]

    /// Whether every one of `variables` is set and not empty.
    public static func isConfigured(_ variables: [String] = connectionVariables) -> Bool {
        variables.allSatisfy { environment[$0]?.isEmpty == false }
    }

    public static var inCI: Bool {
        guard let value = environment["CI"] else { return false }
        return !value.isEmpty && value != "0" && value.lowercased() != "false"
    }

    public struct NotConfigured: Error, CustomStringConvertible {
        public var variables: [String]
        public init(_ variables: [String] = connectionVariables) { self.variables = variables }
        public var description: String {
            "CI is set but \(variables.joined(separator: ", ")) are not: .ci/run must start PostgreSQL (.ci/postgres.sh)"
        }
    }

    /// Where the server is and who to be on it.
    public struct Connection: Sendable, Hashable {
        public var host: String
        public var port: Int
        public var user: String
        public var password: String?
        public var database: String

        public init(host: String, port: Int, user: String, password: String?, database: String) {
            self.host = host
            self.port = port
            self.user = user
            self.password = password
            self.database = database
        }

        /// The same from `.ci/postgres.sh`'s variables (the environment's or a private cluster's).
        public init?(variables: [String: String]) {
            guard let host = variables["ORGSYNC_TEST_PG_HOST"], let port = variables["ORGSYNC_TEST_PG_PORT"].flatMap(Int.init),
                  let user = variables["ORGSYNC_TEST_PG_USER"], let database = variables["ORGSYNC_TEST_PG_DB"]
            else { return nil }
            self.init(host: host, port: port, user: user, password: variables["ORGSYNC_TEST_PG_PASSWORD"], database: database)
        }
    }

    /// The shared server's connection. Throws ``NotConfigured`` without one.
    public static func connection() throws -> Connection {
        guard isConfigured(), let connection = Connection(variables: environment) else { throw NotConfigured() }
        return connection
    }

    /// A plain connection of the test's own, to look at the target behind the adapter's back.
    public static func connect(_ connection: Connection) async throws -> PostgresConnection {
        let configuration = PostgresConnection.Configuration(
            host: connection.host, port: connection.port, username: connection.user, password: connection.password,
            database: connection.database, tls: .disable)
        return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: Logger(label: "test"))
    }

    /// Runs the pg_ctl of the cluster `variables` name (as its owner) with `-w`, and returns its
    /// exit status. Throws ``NotConfigured`` when they name none.
    public static func pgCtl(_ arguments: [String], variables: [String: String] = environment) async throws -> Int32 {
        guard let ctl = variables["ORGSYNC_TEST_PG_CTL"], let data = variables["ORGSYNC_TEST_PG_DATA"], let command = arguments.first
        else { throw NotConfigured(controlVariables) }
        var full = [command, "-s", "-D", data, "-w", "-t", "60"]
        if command == "start", let log = variables["ORGSYNC_TEST_PG_LOG"] { full += ["-l", log] }
        full += arguments.dropFirst()
        return try await run([ctl] + full)
    }

    /// Runs a program and returns its exit status (128 + signal when killed, as a shell says).
    ///
    /// posix_spawn + waitpid on a Dispatch thread: Foundation's Process did not always report
    /// the exit of `pg_ctl start` (whose server child outlives it), and waiting must not block a
    /// thread of Swift's small cooperative pool.
    public static func run(_ argv: [String]) async throws -> Int32 {
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
    /// One Int64 (or NULL) from a one-row, one-column query. A string literal is a
    /// `PostgresQuery`: its interpolations are bound parameters, not SQL text.
    public func scalar(_ query: PostgresQuery) async throws -> Int64? {
        var value: Int64?
        for try await row in try await self.query(query, logger: Logger(label: "test")).decode(Int64?.self) { value = row }
        return value
    }
}
