import Foundation
import Logging
import OrgSyncTestCertificates
import PostgresAdapter
import OrgSyncTestPostgres
import PostgresNIO
import Testing

/// A PostgreSQL cluster of its own with `ssl = on` and certificates made at test time: a CA,
/// the server's certificate for `localhost` only (so 127.0.0.1 fails verify-full on the host
/// name), an expired one for `localhost`, a client certificate for the role ``clientRole``
/// (which may only log in with it: `hostssl … cert`), and a second CA nobody uses.
///
/// A cluster of its own because the tests swap the server's certificate and edit pg_hba: the
/// shared server of `.ci/postgres.sh` stays as the other suites expect it, and nothing has to
/// be reset (the cluster goes with its directory). Started once per suite by ``TestTLSServerTrait``.
struct TestTLSServer: Sendable {
    @TaskLocal static var current: TestTLSServer?

    static let clientRole = "tls_client"
    /// Bound on waiting for the server to take a new configuration.
    static let reloadTimeoutMs = 20_000

    var cluster: TestPostgres.PrivateCluster
    var certificates: TestCertificates
    var serverCertificate: TestCertificates.Issued
    var expiredCertificate: TestCertificates.Issued
    var clientCertificate: TestCertificates.Issued
    var otherCA: TestCertificates

    /// The cluster's own settings (127.0.0.1, password login, sslmode as the adapter's default).
    var plainSettings: PostgresAdapterSettings { cluster.settings }

    /// Settings for `host` with `tls`, on a schema of the test's own.
    func settings(host: String, schema: String, tls: PostgresTLSSettings) -> PostgresAdapterSettings {
        var settings = cluster.settings
        settings.host = host
        settings.schema = schema
        settings.tls = tls
        return settings
    }

    static func start() async throws -> TestTLSServer {
        _ = try TestPostgres.settings(schema: "public")  // in CI without a server: fail here
        let cluster = try await TestPostgres.startPrivateCluster(schema: "public")
        do {
            return try await configure(cluster)
        } catch {
            await cluster.stop()
            throw error
        }
    }

    func stop() async { await cluster.stop() }

    private static func configure(_ cluster: TestPostgres.PrivateCluster) async throws -> TestTLSServer {
        guard let clusterDirectory = cluster.variables["ORGSYNC_TEST_PG_DIR"], let data = cluster.variables["ORGSYNC_TEST_PG_DATA"],
            let database = cluster.variables["ORGSYNC_TEST_PG_DB"]
        else { throw TestPostgres.NotConfigured() }
        // Inside the cluster's directory, so the files go with it; readable by the server's user.
        let directory = clusterDirectory + "/tls"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        let certificates = try TestCertificates(directory: directory)
        let server = try certificates.issue("server", hosts: ["localhost"])
        let expired = try certificates.issue("server-expired", hosts: ["localhost"], validity: .expired)
        let client = try certificates.issue("client", commonName: clientRole)
        let otherCA = try TestCertificates(directory: directory, name: "another test CA", file: "other")
        // PostgreSQL reads a key only when its owner is the server's user and nobody else may read it.
        let dataAttributes = try FileManager.default.attributesOfItem(atPath: data)
        guard let owner = dataAttributes[.ownerAccountID], let group = dataAttributes[.groupOwnerAccountID] else {
            throw TestPostgres.NotConfigured()
        }
        for issued in [server, expired] {
            for path in [issued.certificateFile, issued.keyFile] {
                try FileManager.default.setAttributes([.ownerAccountID: owner, .groupOwnerAccountID: group], ofItemAtPath: path)
            }
        }
        // The client role logs in with its certificate only (first matching line wins).
        let hba = data + "/pg_hba.conf"
        let rules = try String(contentsOfFile: hba, encoding: .utf8)
        try ("hostssl all \(clientRole) 127.0.0.1/32 cert\nhostssl all \(clientRole) ::1/128 cert\n" + rules)
            .write(toFile: hba, atomically: false, encoding: .utf8)
        let tlsServer = TestTLSServer(
            cluster: cluster, certificates: certificates, serverCertificate: server, expiredCertificate: expired,
            clientCertificate: client, otherCA: otherCA)
        try await tlsServer.admin { db in
            for statement in [
                "CREATE ROLE \(clientRole) LOGIN", "GRANT CREATE ON DATABASE \"\(database)\" TO \(clientRole)",
                "ALTER SYSTEM SET ssl_ca_file = '\(certificates.caFile)'", "ALTER SYSTEM SET ssl = on",
            ] {
                try await db.query(PostgresQuery(unsafeSQL: statement), logger: Logger(label: "test"))
            }
        }
        try await tlsServer.useServerCertificate(server)
        return tlsServer
    }

    /// Makes `issued` the server's certificate (ALTER SYSTEM and a reload) and waits, bounded,
    /// until a new session sees it: the postmaster reloads its TLS context before it forks
    /// sessions with the new settings. Nothing is done when it is the certificate already.
    func useServerCertificate(_ issued: TestCertificates.Issued) async throws {
        try await admin { db in
            if try await Self.setting("ssl_cert_file", on: db) == issued.certificateFile, try await Self.setting("ssl", on: db) == "on" {
                return
            }
            for statement in [
                "ALTER SYSTEM SET ssl_cert_file = '\(issued.certificateFile)'", "ALTER SYSTEM SET ssl_key_file = '\(issued.keyFile)'",
                "SELECT pg_reload_conf()",
            ] {
                try await db.query(PostgresQuery(unsafeSQL: statement), logger: Logger(label: "test"))
            }
        }
        let deadline = ContinuousClock.now + .milliseconds(Self.reloadTimeoutMs)
        while true {
            let current = try await admin { db in
                (try await Self.setting("ssl_cert_file", on: db), try await Self.setting("ssl", on: db))
            }
            if current == (issued.certificateFile, "on") { return }
            guard ContinuousClock.now < deadline else {
                throw ReloadTimedOut(waitedFor: issued.certificateFile, saw: current.0)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    struct ReloadTimedOut: Error, CustomStringConvertible {
        var waitedFor: String
        var saw: String
        var description: String {
            "the server did not take ssl_cert_file=\(waitedFor) within \(TestTLSServer.reloadTimeoutMs) ms (a new session still sees \(saw))"
        }
    }

    /// Runs `body` on a new plain connection of the cluster's superuser.
    func admin<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let db = try await TestPostgres.connect(cluster.settings)
        do {
            let value = try await body(db)
            try? await db.close()
            return value
        } catch {
            try? await db.close()
            throw error
        }
    }

    /// Whether the session named `applicationName` uses TLS, and the client certificate's DN it
    /// sent (empty for none); nil when no such session is connected.
    func sessionTLS(applicationName: String) async throws -> (ssl: Bool, clientDN: String)? {
        try await admin { db in
            var binds = PostgresBindings()
            binds.append(applicationName)
            let rows = try await db.query(
                PostgresQuery(
                    unsafeSQL: """
                        SELECT s.ssl, coalesce(s.client_dn, '') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                        WHERE a.application_name = $1
                        """, binds: binds), logger: Logger(label: "test"))
            var found: (Bool, String)?
            for try await row in rows.decode((Bool, String).self) { found = row }
            return found.map { (ssl: $0.0, clientDN: $0.1) }
        }
    }

    private static func setting(_ name: String, on db: PostgresConnection) async throws -> String {
        var binds = PostgresBindings()
        binds.append(name)
        let rows = try await db.query(PostgresQuery(unsafeSQL: "SELECT current_setting($1)", binds: binds), logger: Logger(label: "test"))
        var value = ""
        for try await text in rows.decode(String.self) { value = text }
        return value
    }
}

/// Starts ``TestTLSServer`` once around the suite it marks, and stops it after the suite,
/// whatever happened; the tests find it in ``TestTLSServer/current``.
struct TestTLSServerTrait: SuiteTrait, TestScoping {
    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let server = try await TestTLSServer.start()
        do {
            try await TestTLSServer.$current.withValue(server) { try await function() }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}

extension Trait where Self == TestTLSServerTrait {
    /// A PostgreSQL cluster of the suite's own with TLS on (``TestTLSServer``).
    static var tlsServer: Self { Self() }
}
