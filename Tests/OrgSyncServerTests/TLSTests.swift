import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
@testable import OrgSyncBroker
@testable import OrgSyncServer
import OrgSyncTestCertificates
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// An HTTPS client for the tests: trusting only the CA files given (the system's roots when
/// none), presenting `certificate` when given. Shut down after `body`, also when it throws.
func withTLSClient<T>(
    trusting roots: [String] = [], certificate: TestCertificates.Issued? = nil,
    _ body: (HTTPClient) async throws -> T
) async throws -> T {
    var tls = TLSConfiguration.makeClientConfiguration()
    if !roots.isEmpty { tls.trustRoots = .certificates(try roots.flatMap { try NIOSSLCertificate.fromPEMFile($0) }) }
    if let certificate {
        tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate.certificateFile).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: certificate.keyFile, format: .pem))
    }
    var configuration = HTTPClient.Configuration(tlsConfiguration: tls, timeout: .init(connect: .seconds(10), read: .seconds(30)))
    // A refused handshake fails the request at once (not retried until the connect timeout).
    configuration.connectionPool.retryConnectionEstablishment = false
    let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    do {
        let result = try await body(client)
        try await client.shutdown()
        return result
    } catch {
        try? await client.shutdown()
        throw error
    }
}

/// One request; its status and body.
func call(
    _ client: HTTPClient, _ method: HTTPMethod, _ url: String, body: String? = nil, token: String? = nil
) async throws -> (status: Int, body: String) {
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let body {
        request.body = .bytes(ByteBuffer(string: body))
        request.headers.add(name: "Content-Type", value: "application/json")
    }
    if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    let response = try await client.execute(request, timeout: .seconds(30))
    let bytes = try await response.body.collect(upTo: 1 << 20)
    return (Int(response.status.code), String(buffer: bytes))
}

/// The error `body` throws, or nil.
func errorOf(_ body: () async throws -> Void) async -> (any Error)? {
    do {
        try await body()
        return nil
    } catch {
        return error
    }
}

/// Whether `error` is a failed TLS handshake (as the client sees it).
func isTLSFailure(_ error: (any Error)?) -> Bool {
    guard let error else { return false }
    if error is NIOSSLError || error is BoringSSLError { return true }
    return "\(error)".contains("SSL") || "\(error)".contains("handshake")
}

func temporaryCertificateDirectory() throws -> String {
    let directory = FileManager.default.temporaryDirectory.path + "/orgsync-tls-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    return directory
}

/// Copies a certificate and key over the files a broker serves (as an operator rotating them).
func install(_ issued: TestCertificates.Issued, certFile: String, keyFile: String) throws {
    for (from, to) in [(issued.certificateFile, certFile), (issued.keyFile, keyFile)] {
        let staged = to + ".new"
        try? FileManager.default.removeItem(atPath: staged)
        try FileManager.default.copyItem(atPath: from, toPath: staged)
        guard rename(staged, to) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }
}

@Suite struct TLSTests {
    @Test func theAPIServesHTTPSWithTheConfiguredCertificateOnly() async throws {
        let directory = try temporaryCertificateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let authority = try TestCertificates(directory: directory)
        let server = try authority.issue("server", hosts: ["127.0.0.1"])
        let certificate = try ServerCertificate(.init(certFile: server.certificateFile, keyFile: server.keyFile))
        #expect(certificate.summary.subject.contains("server"))
        #expect(!certificate.summary.isExpired)
        try await withLiveBroker(yaml: liveYAML(""), certificate: certificate) { port, t in
            let answer = try await withTLSClient(trusting: [authority.caFile]) { client in
                try await call(client, .POST, "https://127.0.0.1:\(port)/v1/streams/events/entries", body: entryJSON(1))
            }
            #expect(answer.status == 201, "\(answer.body)")
            #expect(t.end == 1)
            // A client that trusts only the system's roots refuses this server's certificate.
            let untrusted = await errorOf {
                _ = try await withTLSClient { client in
                    try await call(client, .POST, "https://127.0.0.1:\(port)/v1/streams/events/entries", body: entryJSON(2))
                }
            }
            #expect(isTLSFailure(untrusted), "\(String(describing: untrusted))")
            // Plain HTTP on the TLS port gets no HTTP answer.
            let plain = await errorOf {
                _ = try await withTLSClient { client in try await call(client, .GET, "http://127.0.0.1:\(port)/health/live") }
            }
            #expect(plain != nil)
            #expect(t.end == 1)
        }
    }

    @Test func clientCertificatesAuthenticateAsTheirRoleAndATokenWins() async throws {
        let directory = try temporaryCertificateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let authority = try TestCertificates(directory: directory)
        let server = try authority.issue("server", hosts: ["127.0.0.1"])
        let producer = try authority.issue("producer", commonName: "producer.test")
        let stranger = try authority.issue("stranger", commonName: "stranger.test")
        let otherAuthority = try TestCertificates(directory: directory, name: "another CA", file: "other")
        let impostor = try otherAuthority.issue("impostor", commonName: "producer.test")
        let certificate = try ServerCertificate(.init(
            certFile: server.certificateFile, keyFile: server.keyFile, clientCAFile: authority.caFile))
        let yaml = """
            auth:
              enabled: true
              tokens:
                - { name: a, role: admin, token_env: TEST_ADMIN_TOKEN }
              client_certificates:
                - { name: producer-cert, common_name: producer.test, role: produce }
            server:
              tls: { cert_file: \(server.certificateFile), key_file: \(server.keyFile), client_ca_file: \(authority.caFile) }
            streams:
              - name: events
            """
        try await withLiveBroker(yaml: yaml, certificate: certificate) { port, t in
            let base = "https://127.0.0.1:\(port)"
            try await withTLSClient(trusting: [authority.caFile], certificate: producer) { client in
                let answer1 = try await call(client, .POST, base + "/v1/streams/events/entries", body: entryJSON(1))
                #expect(answer1.status == 201)
                let answer2 = try await call(client, .GET, base + "/v1/whoami")
                #expect(answer2.body.contains(#""role":"produce""#))
                let answer3 = try await call(client, .POST, base + "/v1/links/any/suspend")
                #expect(answer3.status == 403, "produce may not operate links")
                // A token is judged alone, whatever certificate the connection has.
                let answer4 = try await call(client, .GET, base + "/v1/whoami", token: TestBroker.adminToken)
                #expect(answer4.body.contains(#""role":"admin""#))
                let answer5 = try await call(client, .GET, base + "/v1/whoami", token: "not-a-token-0123456789")
                #expect(answer5.status == 401)
            }
            try await withTLSClient(trusting: [authority.caFile]) { client in
                let answer = try await call(client, .POST, base + "/v1/streams/events/entries", body: entryJSON(2))
                #expect(answer.status == 401, "no certificate, no token")
                #expect(answer.body.contains("client certificate"), "\(answer.body)")
            }
            try await withTLSClient(trusting: [authority.caFile], certificate: stranger) { client in
                let answer = try await call(client, .POST, base + "/v1/streams/events/entries", body: entryJSON(3))
                #expect(answer.status == 401, "signed by the CA but not listed")
                #expect(answer.body.contains("not listed"), "\(answer.body)")
            }
            let refused = await errorOf {
                _ = try await withTLSClient(trusting: [authority.caFile], certificate: impostor) { client in
                    try await call(client, .POST, base + "/v1/streams/events/entries", body: entryJSON(4))
                }
            }
            #expect(refused != nil, "a certificate of another CA, with a listed name, ends the handshake")
            #expect(t.end == 1)
        }
    }

    @Test func aReloadServesNewConnectionsTheNewCertificateAndKeepsOpenOnes() async throws {
        let directory = try temporaryCertificateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let firstAuthority = try TestCertificates(directory: directory, name: "first CA", file: "first")
        let secondAuthority = try TestCertificates(directory: directory, name: "second CA", file: "second")
        let first = try firstAuthority.issue("first", hosts: ["127.0.0.1"])
        let second = try secondAuthority.issue("second", hosts: ["127.0.0.1"])
        let certFile = directory + "/live.pem", keyFile = directory + "/live-key.pem"
        try install(first, certFile: certFile, keyFile: keyFile)
        let certificate = try ServerCertificate(.init(certFile: certFile, keyFile: keyFile))
        try await withLiveBroker(yaml: liveYAML(""), certificate: certificate) { port, t in
            let url = "https://127.0.0.1:\(port)/v1/streams/events/entries"
            try await withTLSClient(trusting: [firstAuthority.caFile]) { old in
                try await withTLSClient(trusting: [secondAuthority.caFile]) { new in
                    let answer6 = try await call(old, .POST, url, body: entryJSON(1))
                    #expect(answer6.status == 201)
                    #expect(isTLSFailure(await errorOf { _ = try await call(new, .POST, url, body: entryJSON(2)) }))

                    // A key that is not PEM, or not the certificate's, is refused; nothing changes.
                    try install(second, certFile: certFile, keyFile: keyFile)
                    try Data("not a key".utf8).write(to: URL(fileURLWithPath: keyFile))
                    let notPEM = await errorOf { try certificate.reload() }
                    #expect((notPEM as? TLSSetupError)?.field == "server.tls.key_file", "\(String(describing: notPEM))")
                    try FileManager.default.removeItem(atPath: keyFile)
                    try FileManager.default.copyItem(atPath: first.keyFile, toPath: keyFile)
                    let mismatch = await errorOf { try certificate.reload() }
                    #expect((mismatch as? TLSSetupError)?.problem.contains("does not belong") == true, "\(String(describing: mismatch))")
                    #expect(certificate.summary.subject.contains("first"))

                    try install(second, certFile: certFile, keyFile: keyFile)
                    #expect(try certificate.reload().subject.contains("second"))
                    let answer7 = try await call(new, .POST, url, body: entryJSON(3))
                    #expect(answer7.status == 201, "a new connection gets the new certificate")
                    let answer8 = try await call(old, .POST, url, body: entryJSON(4))
                    #expect(answer8.status == 201, "the connection opened before is kept")
                }
            }
            let stale = await errorOf {
                _ = try await withTLSClient(trusting: [firstAuthority.caFile]) { client in
                    try await call(client, .POST, url, body: entryJSON(5))
                }
            }
            #expect(isTLSFailure(stale), "new connections no longer get the old certificate")
            #expect(t.end == 3)
        }
    }

    @Test func unreadableOrMismatchedFilesAreNamedAtStart() throws {
        let directory = try temporaryCertificateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let authority = try TestCertificates(directory: directory)
        let server = try authority.issue("server", hosts: ["127.0.0.1"])
        let other = try authority.issue("other", hosts: ["127.0.0.1"])
        func problem(_ settings: BrokerConfiguration.TLS) -> TLSSetupError? {
            do {
                _ = try ServerCertificate(settings)
                return nil
            } catch {
                return error
            }
        }
        let missing = problem(.init(certFile: directory + "/absent.pem", keyFile: server.keyFile))
        #expect(missing?.field == "server.tls.cert_file")
        #expect(missing?.path == directory + "/absent.pem")
        #expect(problem(.init(certFile: server.keyFile, keyFile: server.keyFile))?.field == "server.tls.cert_file", "a key is no certificate")
        #expect(problem(.init(certFile: server.certificateFile, keyFile: server.certificateFile))?.field == "server.tls.key_file")
        #expect(problem(.init(certFile: server.certificateFile, keyFile: other.keyFile))?.problem.contains("does not belong") == true)
        #expect(problem(.init(certFile: server.certificateFile, keyFile: server.keyFile, clientCAFile: directory + "/none.pem"))?.field
                == "server.tls.client_ca_file")
        #expect(problem(.init(certFile: server.certificateFile, keyFile: server.keyFile, clientCAFile: authority.caFile)) == nil)
        let expired = try authority.issue("expired", hosts: ["127.0.0.1"], validity: .expired)
        let loaded = try ServerCertificate(.init(certFile: expired.certificateFile, keyFile: expired.keyFile))
        #expect(loaded.summary.isExpired, "loaded, and said to be expired (the log says so)")
    }
}
