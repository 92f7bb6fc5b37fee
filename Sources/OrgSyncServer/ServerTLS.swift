import OrgSyncBroker
import Foundation
import NIOCore
import NIOSSL
import SwiftASN1
import Synchronization
import X509

/// Why the API's TLS could not be set up or reloaded: the setting, its file, what was wrong.
public struct TLSSetupError: Error, Sendable, CustomStringConvertible {
    public var field: String
    public var path: String
    public var problem: String
    public var description: String { "\(field) (\(path)): \(problem)" }
}

/// The API's certificate and key (`server.tls`), read from their files at start and again on
/// every ``reload()`` (SIGHUP): each new connection's handshake uses what was read last, and a
/// connection already open keeps what it started with, so a rotation drops nothing. A reload
/// that fails keeps the previous pair.
public final class ServerCertificate: Sendable {
    /// A certificate chain and its key, checked to belong together.
    struct Pair: Sendable {
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
        /// Subject and end of validity of the first certificate, for logs.
        var summary: CertificateSummary
    }

    /// What the log says about a certificate.
    public struct CertificateSummary: Sendable, CustomStringConvertible {
        public var subject: String
        public var notValidAfter: Date
        public var isExpired: Bool { notValidAfter < Date() }
        public var description: String { "\(subject), valid until \(notValidAfter)" }
    }

    public let settings: BrokerConfiguration.TLS
    private let current: Mutex<Pair>
    private let clientRoots: [NIOSSLCertificate]?

    /// Reads the files of `settings` (paths already absolute or relative to the working
    /// directory).
    public init(_ settings: BrokerConfiguration.TLS) throws(TLSSetupError) {
        self.settings = settings
        current = Mutex(try Self.readPair(settings))
        if let file = settings.clientCAFile {
            let roots = try Self.readCertificates(file, field: "server.tls.client_ca_file")
            clientRoots = roots
        } else {
            clientRoots = nil
        }
    }

    /// The certificate new connections are served.
    public var summary: CertificateSummary { current.withLock { $0.summary } }

    /// Reads the certificate and key files again; on success new handshakes use them.
    @discardableResult
    public func reload() throws(TLSSetupError) -> CertificateSummary {
        let pair = try Self.readPair(settings)
        current.withLock { $0 = pair }
        return pair.summary
    }

    /// The server side of TLS: the current certificate for every handshake, TLS 1.2 at least,
    /// and with `client_ca_file` a client certificate verified when one is presented (a client
    /// without one still connects, and must then present a token).
    public func serverConfiguration() -> TLSConfiguration {
        let pair = current.withLock { $0 }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: pair.chain.map { .certificate($0) }, privateKey: .privateKey(pair.key))
        configuration.minimumTLSVersion = .tlsv12
        if let clientRoots {
            configuration.trustRoots = .certificates(clientRoots)
            configuration.certificateVerification = .optionalVerification
        }
        configuration.sslContextCallback = { [self] _, promise in
            let pair = current.withLock { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = pair.chain.map { .certificate($0) }
            override.privateKey = .privateKey(pair.key)
            promise.succeed(override)
        }
        return configuration
    }

    // MARK: Reading the files

    static func readPair(_ settings: BrokerConfiguration.TLS) throws(TLSSetupError) -> Pair {
        let chain = try readCertificates(settings.certFile, field: "server.tls.cert_file")
        let keyPEM = try readText(settings.keyFile, field: "server.tls.key_file")
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        } catch {
            throw TLSSetupError(field: "server.tls.key_file", path: settings.keyFile, problem: "not a PEM private key (\(error))")
        }
        // BoringSSL refuses a key that does not match the certificate when a context is made.
        do {
            _ = try NIOSSLContext(configuration: .makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
        } catch {
            throw TLSSetupError(field: "server.tls.key_file", path: settings.keyFile,
                                problem: "does not belong to the certificate in \(settings.certFile) (\(error))")
        }
        return Pair(chain: chain, key: key, summary: try summarize(chain[0], file: settings.certFile))
    }

    static func readCertificates(_ path: String, field: String) throws(TLSSetupError) -> [NIOSSLCertificate] {
        let pem = try readText(path, field: field)
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8))
        } catch {
            throw TLSSetupError(field: field, path: path, problem: "not PEM certificates (\(error))")
        }
        guard !certificates.isEmpty else {
            throw TLSSetupError(field: field, path: path, problem: "holds no PEM certificate")
        }
        return certificates
    }

    /// A PEM file is small; anything past this is not one.
    static let pemFileBytesMax = 1 << 20

    static func readText(_ path: String, field: String) throws(TLSSetupError) -> String {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw TLSSetupError(field: field, path: path, problem: "cannot be read (\(error.localizedDescription))")
        }
        guard data.count <= pemFileBytesMax else {
            throw TLSSetupError(field: field, path: path, problem: "is \(data.count) bytes, more than a PEM file's \(pemFileBytesMax)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TLSSetupError(field: field, path: path, problem: "is not PEM text")
        }
        return text
    }

    static func summarize(_ certificate: NIOSSLCertificate, file: String) throws(TLSSetupError) -> CertificateSummary {
        do {
            let parsed = try Certificate(derEncoded: try certificate.toDERBytes())
            return CertificateSummary(subject: parsed.subject.description, notValidAfter: parsed.notValidAfter)
        } catch {
            throw TLSSetupError(field: "server.tls.cert_file", path: file, problem: "the certificate cannot be parsed (\(error))")
        }
    }
}

/// The subject common name of the client certificate a TLS connection presented — verified
/// against `server.tls.client_ca_file` by the handshake, or the connection would not exist — or
/// nil (no TLS, no certificate, no common name).
func peerCommonName(of channel: any Channel) async -> String? {
    let der = try? await channel.eventLoop.submit { () throws -> [UInt8]? in
        try channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate?.toDERBytes()
    }.get()
    guard let der, let certificate = try? Certificate(derEncoded: der) else { return nil }
    for name in certificate.subject {
        for attribute in name where attribute.type == .RDNAttributeType.commonName {
            return String(attribute.value)
        }
    }
    return nil
}
