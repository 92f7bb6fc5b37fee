import Foundation
import Logging
import PostgresAdapter
import PostgresNIO

/// The PostgreSQL server the benchmarks measure against: the one `.ci/postgres.sh` starts, from
/// `ORGSYNC_TEST_PG_HOST/PORT/USER/PASSWORD/DB`.
enum PostgresBenchmarkServer {
    static let missingMessage = "ORGSYNC_TEST_PG_HOST/PORT/USER/DB not set (run: source .ci/postgres.sh)"

    /// Adapter settings for that server, or nil when the variables are not set. Plain TCP (the
    /// adapter's default, prefer, would encrypt against a server with ssl on and make the
    /// figures about TLS) and `primary_key: org_key` (the seeded workload's keys are unique per
    /// org only).
    static func settings(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> PostgresAdapterSettings? {
        guard let host = environment["ORGSYNC_TEST_PG_HOST"], let portText = environment["ORGSYNC_TEST_PG_PORT"],
            let port = Int(portText), (1...65_535).contains(port), let user = environment["ORGSYNC_TEST_PG_USER"],
            let database = environment["ORGSYNC_TEST_PG_DB"]
        else { return nil }
        return PostgresAdapterSettings(
            host: host, port: port, user: user, password: environment["ORGSYNC_TEST_PG_PASSWORD"], database: database,
            primaryKey: .orgKey, tls: PostgresTLSSettings(mode: .disable))
    }

    /// A plain connection (no TLS) to the server of `settings`.
    static func connect(_ settings: PostgresAdapterSettings, logger: Logger) async throws -> PostgresConnection {
        try await PostgresConnection.connect(
            configuration: .init(host: settings.host, port: settings.port, username: settings.user, password: settings.password,
                                 database: settings.database, tls: .disable),
            id: 1, logger: logger)
    }

    /// Drops `schemas` (with everything in them) on the server of `settings`.
    static func dropSchemas(_ schemas: [String], settings: PostgresAdapterSettings) async throws {
        guard !schemas.isEmpty else { return }
        let logger = Logger(label: "orgsync.bench.postgres")
        let connection = try await connect(settings, logger: logger)
        var failure: (any Error)?
        for schema in schemas {
            do {
                try await connection.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE"), logger: logger)
            } catch {
                failure = failure ?? error
            }
        }
        try? await connection.close()
        if let failure { throw failure }
    }
}
