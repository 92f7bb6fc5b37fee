import Foundation
import Logging
import OrgSyncTestPostgres
import PostgresNIO
import Testing

/// The throwaway server `.ci/postgres.sh` starts, found through its `ORGSYNC_TEST_PG_*`
/// variables (``TestPostgresServer``): outside CI a missing server skips these tests visibly; in
/// CI (`CI` set) a missing server fails them.
enum LinkTestPostgres {
    typealias Connection = TestPostgresServer.Connection
    struct NotConfigured: Error, CustomStringConvertible {
        var description: String { "\(TestPostgresServer.NotConfigured(LinkTestPostgres.variables))" }
    }
    static let environment = TestPostgresServer.environment
    /// These tests stop and start the server, so they need its pg_ctl and data directory too.
    static let variables = TestPostgresServer.connectionVariables + TestPostgresServer.controlVariables

    static var isConfigured: Bool { TestPostgresServer.isConfigured(variables) }
    static var inCI: Bool { TestPostgresServer.inCI }
    static var shouldRun: Bool { isConfigured || inCI }

    static let skipMessage: Comment =
        "PostgreSQL link tests skipped: ORGSYNC_TEST_PG_* not set (run: source .ci/postgres.sh)"

    static func connection() throws -> Connection {
        guard isConfigured else { throw NotConfigured() }
        return try TestPostgresServer.connection()
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

    static func connect(_ connection: Connection) async throws -> PostgresConnection {
        try await TestPostgresServer.connect(connection)
    }

    static func pgCtl(_ arguments: [String]) async throws -> Int32 {
        try await TestPostgresServer.pgCtl(arguments)
    }

    /// Whether the server runs (`pg_ctl status` exits 0).
    static func isRunning() async -> Bool {
        (try? await pgCtl(["status"])) == 0
    }
}
