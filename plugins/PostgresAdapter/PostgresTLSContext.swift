import NIOSSL
import OrgSyncPluginAPI
import PostgresNIO

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Turns ``PostgresTLSSettings`` into postgres-nio's TLS mode, reading `sslrootcert`, `sslcert`
/// and `sslkey`. The factory calls it once when the adapter is made, so that a missing or bad
/// file stops start-up naming its setting; the adapter calls it again for every new connection
/// (as libpq reads the files on every connection), so a CA file or client certificate replaced
/// on disk is used from the next connection on, without a restart.
///
/// | `sslmode` | postgres-nio | swift-nio-ssl `certificateVerification` |
/// | --- | --- | --- |
/// | `disable` | `.disable` | — |
/// | `prefer` | `.prefer` | `.none` |
/// | `require` | `.require` | `.none` |
/// | `verify-ca` | `.require` | `.noHostnameVerification`, trust roots from `sslrootcert` |
/// | `verify-full` | `.require` | `.fullVerification` (SNI and host name: `host`), trust roots from `sslrootcert` or the system's |
enum PostgresTLSContext {
    /// TLS 1.2 is PostgreSQL's own minimum since version 14 (`ssl_min_protocol_version`).
    static let minimumVersion = TLSVersion.tlsv12

    static func make(_ settings: PostgresTLSSettings) throws(AdapterConfigurationError) -> PostgresConnection.Configuration.TLS {
        if let problem = settings.problem { throw problem }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = minimumVersion
        switch settings.mode {
        case .disable: return .disable
        case .prefer, .require: configuration.certificateVerification = .none
        case .verifyCA: configuration.certificateVerification = .noHostnameVerification
        case .verifyFull: configuration.certificateVerification = .fullVerification
        }
        if let path = settings.rootCertificateFile {
            configuration.trustRoots = .certificates(try certificates(path, setting: "sslrootcert"))
        }
        if let certificatePath = settings.certificateFile, let keyPath = settings.keyFile {
            configuration.certificateChain = try certificates(certificatePath, setting: "sslcert").map { .certificate($0) }
            configuration.privateKey = .privateKey(try privateKey(keyPath))
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            // The files each parsed; what is left to fail is the pair (or the system's trust store).
            if let certificatePath = settings.certificateFile, let keyPath = settings.keyFile {
                throw AdapterConfigurationError(
                    setting: "sslkey", problem: "\(keyPath) is not the private key of the certificate in sslcert=\(certificatePath) (\(error))")
            }
            throw AdapterConfigurationError(setting: "sslmode", problem: "TLS could not be set up for sslmode=\(settings.mode.rawValue) (\(error))")
        }
        return settings.mode == .prefer ? .prefer(context) : .require(context)
    }

    /// The PEM certificates in `path`, at least one.
    static func certificates(_ path: String, setting: String) throws(AdapterConfigurationError) -> [NIOSSLCertificate] {
        let bytes = try read(path, setting: setting)
        let certificates = try? NIOSSLCertificate.fromPEMBytes(bytes)
        guard let certificates, !certificates.isEmpty else {
            throw AdapterConfigurationError(setting: setting, problem: "names \(path), which holds no PEM certificate")
        }
        return certificates
    }

    static func privateKey(_ path: String) throws(AdapterConfigurationError) -> NIOSSLPrivateKey {
        let bytes = try read(path, setting: "sslkey")
        do {
            return try NIOSSLPrivateKey(bytes: bytes, format: .pem)
        } catch {
            // Never the file's content: it is a secret.
            throw AdapterConfigurationError(
                setting: "sslkey", problem: "names \(path), which holds no unencrypted PEM private key")
        }
    }

    private static func read(_ path: String, setting: String) throws(AdapterConfigurationError) -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw AdapterConfigurationError(setting: setting, problem: "names \(path), which does not exist")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AdapterConfigurationError(setting: setting, problem: "names \(path), which cannot be read by this process")
        }
        return Array(data)
    }
}
