import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestCertificates
import OrgSyncTestSupport
import PostgresNIO
import Testing

/// A link with `sslmode: verify-full` to a server whose certificate has expired suspends with
/// the reason in its status and sync log, keeps everything appended meanwhile, and resumes
/// through the usual K probes once the server has a valid certificate. Turns TLS on at the
/// shared server (and off again): part of `PostgresLinkTests`' run on its own in `.ci/run`.
extension PostgresLinkTests {
    /// Bound on waiting for the server to take a new configuration.
    static let reloadTimeoutMs = 20_000

    @Test func anExpiredServerCertificateSuspendsTheLinkWithTheReasonAndAValidOneResumesIt() async throws {
        let server = try LinkTestPostgres.connection()
        guard let clusterDirectory = LinkTestPostgres.environment["ORGSYNC_TEST_PG_DIR"],
            let data = LinkTestPostgres.environment["ORGSYNC_TEST_PG_DATA"]
        else { throw LinkTestPostgres.NotConfigured() }
        // In the cluster's directory, so a restart by another test still finds the files and
        // they go with the cluster; readable by the server's user.
        let directory = clusterDirectory + "/tls-link-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        let certificates = try TestCertificates(directory: directory)
        let valid = try certificates.issue("server", hosts: ["localhost"])
        let expired = try certificates.issue("server-expired", hosts: ["localhost"], validity: .expired)
        try Self.giveToServerUser([valid, expired], data: data)

        try await Self.useServerCertificate(expired, server)
        do {
            try await runExpiredThenValid(server, certificates: certificates, valid: valid)
        } catch {
            try? await Self.turnTLSOff(server)
            throw error
        }
        try await Self.turnTLSOff(server)
    }

    private func runExpiredThenValid(
        _ server: LinkTestPostgres.Connection, certificates: TestCertificates, valid: TestCertificates.Issued
    ) async throws {
        let schema = "t_tls_\(UInt32.random(in: 0...UInt32.max))"
        var settings = LinkTestPostgres.adapterSettings(server, schema: schema)
        settings["host"] = "localhost"
        settings["sslmode"] = "verify-full"
        settings["sslrootcert"] = certificates.caFile
        let rig = try await PostgresLinkRig(linkName: "pg-tls", settings: settings, randomSeed: 19, steadyProducer: true)
        defer { rig.stop() }
        let (supervisor, recorder, producer) = (rig.supervisor, rig.recorder, rig.producer)

        let suspended = try await recorder.wait(for: .suspended, ms: 10_000)
        #expect(suspended.reason.contains("TLS: certificate verify failed: the server's certificate expired at "), "\(suspended.reason)")
        try await producer.waitForAppended(100)
        let down = await supervisor.status()
        #expect(down.state != .active, "no batch goes to a server whose certificate has expired")
        #expect(down.cursor == 0)
        #expect(down.lastError?.contains("the server's certificate expired at ") == true, "\(String(describing: down.lastError))")
        #expect(supervisor.syncLog.page().contains { $0.event == .suspended && $0.reason.contains("certificate expired at") })
        #expect(recorder.transitions.value.allSatisfy { $0.event != .resumed })

        // A valid certificate at the server: the link's probes verify it and it resumes.
        try await Self.useServerCertificate(valid, server)
        let configuration = fastLinkConfiguration()
        let resumed = try await recorder.wait(for: .resumed, ms: 15_000)
        #expect(resumed.reason.hasPrefix("target answered \(configuration.probeThreshold) consecutive probes"), "\(resumed.reason)")

        try await rig.drainAndCheckEveryEntryOnce(server, schema: schema)
        try await rig.finish()
    }

    /// PostgreSQL reads a key only when its owner is the server's user and nobody else may read it.
    static func giveToServerUser(_ issued: [TestCertificates.Issued], data: String) throws {
        let attributes = try FileManager.default.attributesOfItem(atPath: data)
        guard let owner = attributes[.ownerAccountID], let group = attributes[.groupOwnerAccountID] else {
            throw LinkTestPostgres.NotConfigured()
        }
        for path in issued.flatMap({ [$0.certificateFile, $0.keyFile] }) {
            try FileManager.default.setAttributes([.ownerAccountID: owner, .groupOwnerAccountID: group], ofItemAtPath: path)
        }
    }

    /// TLS on with `issued` as the server's certificate, once a new session sees it (the
    /// postmaster reloads its TLS context before it forks sessions with the new settings).
    static func useServerCertificate(_ issued: TestCertificates.Issued, _ server: LinkTestPostgres.Connection) async throws {
        try await reconfigure(server, [
            "ALTER SYSTEM SET ssl_cert_file = '\(issued.certificateFile)'", "ALTER SYSTEM SET ssl_key_file = '\(issued.keyFile)'",
            "ALTER SYSTEM SET ssl = on",
        ], until: "SELECT current_setting('ssl') = 'on' AND current_setting('ssl_cert_file') = '\(issued.certificateFile)'")
    }

    /// The shared server as the other tests expect it: without TLS.
    static func turnTLSOff(_ server: LinkTestPostgres.Connection) async throws {
        try await reconfigure(
            server, ["ALTER SYSTEM RESET ssl", "ALTER SYSTEM RESET ssl_cert_file", "ALTER SYSTEM RESET ssl_key_file"],
            until: "SELECT current_setting('ssl') = 'off'")
    }

    private static func reconfigure(_ server: LinkTestPostgres.Connection, _ statements: [String], until check: String) async throws {
        let db = try await LinkTestPostgres.connect(server)
        do {
            for statement in statements + ["SELECT pg_reload_conf()"] {
                _ = try await db.query(PostgresQuery(unsafeSQL: statement), logger: Logger(label: "test"))
            }
        } catch {
            try? await db.close()
            throw error
        }
        try? await db.close()
        let deadline = ContinuousClock.now + .milliseconds(reloadTimeoutMs)
        while true {
            let fresh = try await LinkTestPostgres.connect(server)
            var taken = false
            do {
                for try await value in try await fresh.query(PostgresQuery(unsafeSQL: check), logger: Logger(label: "test")).decode(Bool.self) {
                    taken = value
                }
            } catch {
                try? await fresh.close()
                throw error
            }
            try? await fresh.close()
            if taken { return }
            guard ContinuousClock.now < deadline else {
                throw ReloadTimedOut(check: check)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    struct ReloadTimedOut: Error, CustomStringConvertible {
        var check: String
        var description: String { "the server did not take its new configuration within \(PostgresLinkTests.reloadTimeoutMs) ms (\(check))" }
    }
}
