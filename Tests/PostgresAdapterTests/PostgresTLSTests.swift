import Foundation
import Logging
import OrgSyncPluginAPI
import OrgSyncTestCertificates
import PostgresAdapter
import OrgSyncTestPostgres
import PostgresNIO
import Testing

/// The adapter over TLS against a real server (``TestTLSServer``: a cluster of the suite's own
/// with `ssl = on` and certificates made at test time). Each failure is a connection failure of
/// the link, with the reason in words. Serialized: the tests swap the server's certificate.
@Suite(.serialized, .tlsServer, .enabled(if: TestPostgres.shouldRun, TestPostgres.skipMessage))
struct PostgresTLSTests {
    var tlsServer: TestTLSServer {
        get throws {
            guard let server = TestTLSServer.current else { throw TestPostgres.NotConfigured() }
            return server
        }
    }

    /// Runs `body` with an adapter on a schema of its own, closed and dropped afterwards.
    func withAdapter(
        _ name: String, _ settings: PostgresAdapterSettings, _ body: (PostgresAdapter) async throws -> Void
    ) async throws {
        let adapter = PostgresAdapter(linkName: "tls-\(name)", settings: settings)
        do {
            try await body(adapter)
        } catch {
            await adapter.close()
            throw error
        }
        await adapter.close()
        let schema = settings.schema
        try await tlsServer.admin { db in await db.dropSchema(schema) }
    }

    @Test func verifyFullViaLocalhostAppliesABatchOverTLS() async throws {
        let server = try tlsServer
        try await server.useServerCertificate(server.serverCertificate)
        let settings = server.settings(
            host: "localhost", schema: TestPostgres.uniqueSchema("full"),
            tls: PostgresTLSSettings(mode: .verifyFull, rootCertificateFile: server.certificates.caFile))
        try await withAdapter("full", settings) { adapter in
            try await adapter.open()
            try await adapter.apply(batch([entry(0, .insert, "k1", ["Name": "Ada"]), entry(1, .upsert, "k2", ["Name": "Grace"])]))
            #expect(try await adapter.appliedPosition()?.offset == 1)
            let session = try await server.sessionTLS(applicationName: "orgsync:tls-full")
            #expect(session?.ssl == true, "the adapter's session is encrypted: \(String(describing: session))")
            #expect(session?.clientDN == "", "no client certificate was configured")
            let rows = try await server.admin { db in try await db.count(schema: settings.schema, table: "Contact") }
            #expect(rows == 2)
        }
    }

    @Test func verifyFullVia127001FailsAsAConnectionFailureNamingTheHostName() async throws {
        let server = try tlsServer
        try await server.useServerCertificate(server.serverCertificate)
        let settings = server.settings(
            host: "127.0.0.1", schema: TestPostgres.uniqueSchema("hostname"),
            tls: PostgresTLSSettings(mode: .verifyFull, rootCertificateFile: server.certificates.caFile))
        try await withAdapter("hostname", settings) { adapter in
            let error = await adapterError { try await adapter.probe() }
            #expect(error?.kind == .connection)
            #expect(error?.message.contains("TLS: host name 127.0.0.1 does not match the server's certificate") == true, "\(String(describing: error))")
            // verify-ca checks the CA only, so the same server via the same address passes it.
            var caOnly = settings
            caOnly.tls.mode = .verifyCA
            let verifyCA = PostgresAdapter(linkName: "tls-hostname-ca", settings: caOnly)
            try await verifyCA.probe()
            await verifyCA.close()
        }
    }

    @Test func aServerCertificateOfAnotherCAFailsAsUnknownCA() async throws {
        let server = try tlsServer
        try await server.useServerCertificate(server.serverCertificate)
        let otherCAFile = server.otherCA.caFile
        let settings = server.settings(
            host: "localhost", schema: TestPostgres.uniqueSchema("unknownca"),
            tls: PostgresTLSSettings(mode: .verifyCA, rootCertificateFile: otherCAFile))
        try await withAdapter("unknownca", settings) { adapter in
            let error = await adapterError { try await adapter.open() }
            #expect(error?.kind == .connection)
            #expect(
                error?.message.contains("TLS: certificate verify failed: unknown CA: the server's certificate is not signed by a CA in sslrootcert=\(otherCAFile)") == true,
                "\(String(describing: error))")
        }
        // verify-full without sslrootcert trusts the system's store, which does not know the test CA.
        var system = settings
        system.tls = PostgresTLSSettings(mode: .verifyFull)
        let adapter = PostgresAdapter(linkName: "tls-system", settings: system)
        let error = await adapterError { try await adapter.probe() }
        #expect(error?.kind == .connection)
        #expect(error?.message.contains("unknown CA: the server's certificate is not signed by a CA in the system's trust store") == true, "\(String(describing: error))")
        await adapter.close()
    }

    /// The reason names the expiry; once a valid certificate is in place the same adapter's
    /// probe succeeds (what the link's probes do before it resumes) and a batch applies.
    @Test func anExpiredServerCertificateFailsWithItsExpiryAndTheProbeSucceedsOnceItIsReplaced() async throws {
        let server = try tlsServer
        let settings = server.settings(
            host: "localhost", schema: TestPostgres.uniqueSchema("expired"),
            tls: PostgresTLSSettings(mode: .verifyFull, rootCertificateFile: server.certificates.caFile))
        try await server.useServerCertificate(server.expiredCertificate)
        do {
            try await withAdapter("expired", settings) { adapter in
                let error = await adapterError { try await adapter.probe() }
                #expect(error?.kind == .connection)
                #expect(error?.message.contains("TLS: certificate verify failed: the server's certificate expired at ") == true, "\(String(describing: error))")
                let applyError = await adapterError { try await adapter.apply(batch([entry(0, .insert, "k", ["N": 1])])) }
                #expect(applyError?.kind == .connection, "a batch against the expired certificate suspends, it is not rejected")

                try await server.useServerCertificate(server.serverCertificate)
                try await adapter.probe()
                try await adapter.open()
                try await adapter.apply(batch([entry(0, .insert, "k", ["N": 1])]))
                #expect(try await adapter.appliedPosition()?.offset == 0)
            }
        } catch {
            try? await server.useServerCertificate(server.serverCertificate)
            throw error
        }
    }

    @Test func requireAndPreferEncryptWithoutCheckingAndDisableDoesNot() async throws {
        let server = try tlsServer
        try await server.useServerCertificate(server.serverCertificate)
        // 127.0.0.1 and no CA: neither mode checks the certificate.
        for (mode, encrypted) in [(PostgresTLSSettings.Mode.require, true), (.prefer, true), (.disable, false)] {
            let name = "mode-\(mode.rawValue)"
            let settings = server.settings(host: "127.0.0.1", schema: TestPostgres.uniqueSchema("mode"), tls: PostgresTLSSettings(mode: mode))
            try await withAdapter(name, settings) { adapter in
                try await adapter.probe()
                let session = try await server.sessionTLS(applicationName: "orgsync:tls-\(name)")
                #expect(session?.ssl == encrypted, "sslmode=\(mode.rawValue): \(String(describing: session))")
            }
        }
        #expect(PostgresTLSSettings().mode == .prefer, "the default is libpq's")
    }

    /// The shared server of `.ci/postgres.sh` runs without TLS.
    @Test func requireAgainstAServerWithoutTLSFailsSayingSo() async throws {
        var settings = try TestPostgres.settings(schema: "public")
        settings.tls = PostgresTLSSettings(mode: .require)
        let adapter = PostgresAdapter(linkName: "tls-nossl", settings: settings)
        let error = await adapterError { try await adapter.probe() }
        #expect(error?.kind == .connection)
        #expect(error?.message.contains("TLS: the server does not offer TLS, and sslmode=require requires it") == true, "\(String(describing: error))")
        await adapter.close()
        // prefer falls back to a plain connection there.
        settings.tls = PostgresTLSSettings(mode: .prefer)
        let prefer = PostgresAdapter(linkName: "tls-nossl-prefer", settings: settings)
        try await prefer.probe()
        await prefer.close()
    }

    /// The client role may log in with its certificate only (`hostssl … cert`): with sslcert and
    /// sslkey it opens and applies, and the server saw the certificate's name; without, the
    /// server refuses it, as a connection failure.
    @Test func aConfiguredClientCertificateIsSentAndAuthenticates() async throws {
        let server = try tlsServer
        try await server.useServerCertificate(server.serverCertificate)
        var settings = server.settings(
            host: "localhost", schema: TestPostgres.uniqueSchema("client"),
            tls: PostgresTLSSettings(
                mode: .verifyFull, rootCertificateFile: server.certificates.caFile, certificateFile: server.clientCertificate.certificateFile,
                keyFile: server.clientCertificate.keyFile))
        settings.user = TestTLSServer.clientRole
        settings.password = nil
        try await withAdapter("client", settings) { adapter in
            try await adapter.open()
            try await adapter.apply(batch([entry(0, .insert, "k", ["N": 1])]))
            let session = try await server.sessionTLS(applicationName: "orgsync:tls-client")
            #expect(session?.ssl == true)
            #expect(session?.clientDN == "/CN=\(TestTLSServer.clientRole)", "\(String(describing: session))")
        }
        var without = settings
        without.tls.certificateFile = nil
        without.tls.keyFile = nil
        let adapter = PostgresAdapter(linkName: "tls-client-none", settings: without)
        let error = await adapterError { try await adapter.probe() }
        #expect(error?.kind == .connection)
        #expect(error?.targetCode == "28000", "\(String(describing: error))")
        await adapter.close()
    }
}
