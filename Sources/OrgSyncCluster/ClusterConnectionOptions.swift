import Foundation
import NIOSSL
import OrgSyncBroker
import OrgSyncNATS

extension BrokerConfiguration.Cluster {
    /// How a member connects to the cluster's NATS servers: every address of `nats_urls` (the
    /// first that answers, the others when it fails), reconnecting without end, TLS when
    /// ``usesTLS`` (TLS 1.2 at least; the servers' certificates checked against `cluster.tls.ca_file`
    /// or the system's roots, and against their host), and the credentials.
    ///
    /// - Throws: ``ConfigurationError`` naming the field: no server, credentials that do not
    ///   resolve, a PEM file that cannot be read or a key that is not the certificate's.
    public func connectionOptions(environment: [String: String]) throws -> NATSConnectionOptions {
        guard let first = addresses.first else {
            throw ConfigurationError(field: "cluster.nats_urls", problem: "needs at least one NATS server")
        }
        var options = NATSConnectionOptions(host: first.host, port: first.port)
        options.alternates = addresses.dropFirst().map { ($0.host, $0.port) }
        options.name = "orgsync-" + node
        options.reconnect = NATSReconnectPolicy()
        options.connectTimeoutMs = requestTimeoutMs
        switch try credentials(environment: environment) {
        case .none: break
        case .user(let user, let password):
            options.user = user
            options.password = password
        case .token(let token): options.token = token
        }
        if usesTLS { options.tls = try tlsConfiguration() }
        return options
    }

    /// The client side of TLS to NATS, its files read now.
    func tlsConfiguration() throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        if let caFile = tls?.caFile {
            configuration.trustRoots = .certificates(try Self.certificates(caFile, field: "cluster.tls.ca_file"))
        }
        if let certFile = tls?.certFile, let keyFile = tls?.keyFile {
            let chain = try Self.certificates(certFile, field: "cluster.tls.cert_file")
            let key: NIOSSLPrivateKey
            do {
                key = try NIOSSLPrivateKey(bytes: Array(try Self.pemText(keyFile, field: "cluster.tls.key_file").utf8), format: .pem)
            } catch let error as ConfigurationError {
                throw error
            } catch {
                throw ConfigurationError(field: "cluster.tls.key_file", problem: "\(keyFile) is not a PEM private key (\(error))")
            }
            configuration.certificateChain = chain.map { .certificate($0) }
            configuration.privateKey = .privateKey(key)
        }
        // BoringSSL checks here what a handshake would find later: a key that is not the
        // certificate's, unusable roots.
        do {
            _ = try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigurationError(field: "cluster.tls", problem: "its files do not make a TLS client (a key_file not of cert_file?): \(error)")
        }
        return configuration
    }

    /// A PEM file is small; anything past this is not one.
    static let pemFileBytesMax = 1 << 20

    static func certificates(_ path: String, field: String) throws -> [NIOSSLCertificate] {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(Array(try pemText(path, field: field).utf8))
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError(field: field, problem: "\(path) holds no readable PEM certificate (\(error))")
        }
        guard !certificates.isEmpty else { throw ConfigurationError(field: field, problem: "\(path) holds no PEM certificate") }
        return certificates
    }

    static func pemText(_ path: String, field: String) throws -> String {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError(field: field, problem: "\(path) cannot be read (\(error.localizedDescription))")
        }
        guard data.count <= pemFileBytesMax else {
            throw ConfigurationError(field: field, problem: "\(path) is \(data.count) bytes, more than a PEM file's \(pemFileBytesMax)")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ConfigurationError(field: field, problem: "\(path) is not PEM text") }
        return text
    }
}
