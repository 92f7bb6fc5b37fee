import Foundation
import NIOSSL
@testable import OrgSyncNATS
import OrgSyncTestCertificates
import OrgSyncTestNATS
import OrgSyncTestSupport
import Testing

/// TLS and credentials against a real nats-server (its `--tls`, `--tlsverify`, `--user`/`--pass`,
/// `--auth`): what a cluster member uses to reach NATS on other machines. Each server is made
/// for its test; the certificates are made at test time.
extension NATSServerTests {
    struct TLSFiles {
        var authority: TestCertificates
        /// For 127.0.0.1 and localhost.
        var server: TestCertificates.Issued
        var client: TestCertificates.Issued
    }

    static func tlsFiles() throws -> TLSFiles {
        let directory = try makeTemporaryDirectory("orgsync-nats-tls")
        let authority = try TestCertificates(directory: directory)
        return TLSFiles(
            authority: authority, server: try authority.issue("server", hosts: ["127.0.0.1", "localhost"]),
            client: try authority.issue("client", commonName: "orgsync-member"))
    }

    static func serverTLSArguments(_ files: TLSFiles, certificate: TestCertificates.Issued? = nil) -> [String] {
        let certificate = certificate ?? files.server
        return ["--tls", "--tlscert", certificate.certificateFile, "--tlskey", certificate.keyFile]
    }

    /// A client that trusts `caFile`, showing `certificate` when given.
    static func tlsClient(trusting caFile: String, certificate: TestCertificates.Issued? = nil) throws -> NATSConnectionOptions {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        if let certificate {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate.certificateFile).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: certificate.keyFile, format: .pem))
        }
        var options = NATSConnectionOptions()
        options.tls = tls
        options.connectTimeoutMs = 3_000
        return options
    }

    /// Connects with `options` and converses (``converse(_:)``).
    static func converse(with options: NATSConnectionOptions) async throws {
        let connection = try await NATSConnection.connect(options)
        do {
            try await converse(connection)
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
    }

    /// Publish → subscribe and a JetStream publish with its acknowledgement, on `connection`.
    static func converse(_ connection: NATSConnection) async throws {
        let subscription = try await connection.subscribe("greetings")
        try await connection.flush(timeoutMs: 5_000)
        try await connection.publish("greetings", payload: Array("hello over TLS".utf8))
        var iterator = subscription.makeAsyncIterator()
        #expect(try await iterator.next()?.payload == Array("hello over TLS".utf8))
        let jetStream = JetStream(connection: connection)
        _ = try await jetStream.createStream(JetStreamStreamConfig(name: "TLS", subjects: ["tls.>"], storage: "memory"))
        let ack = try await jetStream.publish("tls.one", payload: Array("stored".utf8))
        #expect(ack.stream == "TLS" && ack.sequence == 1)
        #expect(try await jetStream.message(stream: "TLS", sequence: 1).payload == Array("stored".utf8))
    }

    /// What connecting with `options` fails with.
    static func refusal(_ options: NATSConnectionOptions) async -> String {
        do {
            let connection = try await NATSConnection.connect(options)
            await connection.close()
            return "connected"
        } catch {
            return "\(error)"
        }
    }

    @Test func aTLSServerIsReachedOverTLSAndAPlainClientIsToldItRequiresTLS() async throws {
        let files = try Self.tlsFiles()
        let server = try await NATSTestServer(
            extraArguments: Self.serverTLSArguments(files), client: try Self.tlsClient(trusting: files.authority.caFile))
        defer { server.stop() }
        try await Self.converse(with: server.options())

        let plain = await Self.refusal(NATSConnectionOptions(port: server.port))
        #expect(plain.contains("requires TLS"), "\(plain)")
    }

    @Test func aServerCertificateOfAnotherAuthorityOrForAnotherHostIsRefused() async throws {
        let files = try Self.tlsFiles()
        let stranger = try TestCertificates(directory: files.authority.directory, name: "another CA", file: "other")
        let server = try await NATSTestServer(
            extraArguments: Self.serverTLSArguments(files), client: try Self.tlsClient(trusting: files.authority.caFile))
        defer { server.stop() }
        var options = try Self.tlsClient(trusting: stranger.caFile)
        options.port = server.port
        let untrusted = await Self.refusal(options)
        #expect(untrusted.contains("TLS with 127.0.0.1:\(server.port)") && untrusted.contains("not signed by a root this client trusts"), "\(untrusted)")

        // Signed by the trusted authority, for other hosts: the certificate must name the host
        // of the URL (a DNS name among its names), or hold the address connected to (NIOSSL
        // matches a certificate's IP addresses against the socket's peer, whatever the URL said).
        for (hosts, refusedAs, acceptedAs) in [(["10.9.9.9", "localhost"], "127.0.0.1", "localhost"), (["elsewhere.example"], "localhost", nil)] {
            let certificate = try files.authority.issue("for-\(hosts[0])", hosts: hosts)
            var unchecked = try Self.tlsClient(trusting: files.authority.caFile)
            unchecked.tls?.certificateVerification = .noHostnameVerification  // only to see it up
            let named = try await NATSTestServer(extraArguments: Self.serverTLSArguments(files, certificate: certificate), client: unchecked)
            defer { named.stop() }
            var client = try Self.tlsClient(trusting: files.authority.caFile)
            client.port = named.port
            client.host = refusedAs
            let refused = await Self.refusal(client)
            #expect(refused.contains("does not name \(refusedAs)"), "\(hosts): \(refused)")
            if let acceptedAs {
                client.host = acceptedAs
                #expect(await Self.refusal(client) == "connected", "\(hosts) by \(acceptedAs)")
            }
        }
    }

    @Test func aClientThatTakesOnlyTLSRefusesAPlainServerBeforeSendingItsCredentials() async throws {
        let files = try Self.tlsFiles()
        let server = try await NATSTestServer(extraArguments: ["--user", "orgsync", "--pass", "s3cret-pw"],
                                              client: { var o = NATSConnectionOptions(); o.user = "orgsync"; o.password = "s3cret-pw"; return o }())
        defer { server.stop() }
        var options = try Self.tlsClient(trusting: files.authority.caFile)
        options.port = server.port
        options.user = "orgsync"
        options.password = "s3cret-pw"
        let refused = await Self.refusal(options)
        #expect(refused.contains("offers no TLS"), "\(refused)")
        #expect(!refused.contains("s3cret-pw"))
    }

    @Test func aServerThatVerifiesClientsTakesOnlyACertifiedOne() async throws {
        let files = try Self.tlsFiles()
        let certified = try Self.tlsClient(trusting: files.authority.caFile, certificate: files.client)
        let server = try await NATSTestServer(
            extraArguments: Self.serverTLSArguments(files) + ["--tlsverify", "--tlscacert", files.authority.caFile], client: certified)
        defer { server.stop() }
        try await Self.converse(with: server.options())

        var anonymous = try Self.tlsClient(trusting: files.authority.caFile)
        anonymous.port = server.port
        let refused = await Self.refusal(anonymous)
        #expect(refused.contains("did not accept this client's certificate, or wants one"), "\(refused)")
    }

    @Test func theServerChecksAUsersPasswordAndATokenAndNoSecretIsShown() async throws {
        var user = NATSConnectionOptions()
        user.user = "orgsync"
        user.password = "s3cret-pw"
        let server = try await NATSTestServer(extraArguments: ["--user", "orgsync", "--pass", "s3cret-pw"], client: user)
        defer { server.stop() }
        try await Self.converse(with: server.options())
        var wrong = server.options()
        wrong.password = "wrong-pw-9"
        let refused = await Self.refusal(wrong)
        #expect(refused.contains("Authorization Violation"), "\(refused)")
        #expect(!refused.contains("wrong-pw-9"))
        let none = await Self.refusal(NATSConnectionOptions(port: server.port))
        #expect(none.contains("Authorization Violation"), "\(none)")

        var token = NATSConnectionOptions()
        token.token = "a-token-of-nats-01"
        let tokenServer = try await NATSTestServer(extraArguments: ["--auth", "a-token-of-nats-01"], client: token)
        defer { tokenServer.stop() }
        try await Self.converse(with: tokenServer.options())
        var wrongToken = tokenServer.options()
        wrongToken.token = "another-token-02"
        let refusedToken = await Self.refusal(wrongToken)
        #expect(refusedToken.contains("Authorization Violation") && !refusedToken.contains("another-token-02"), "\(refusedToken)")
    }
}
