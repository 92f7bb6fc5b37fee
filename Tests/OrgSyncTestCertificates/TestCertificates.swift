import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate authority made at test time, and the certificates the TLS tests need, written
/// as PEM files into a directory of the test's own. Nothing is read from the repository or the
/// machine: every run makes new keys (P-256, ECDSA with SHA-256).
///
/// ```swift
/// let certificates = try TestCertificates(directory: dir)
/// let server = try certificates.issue("server", hosts: ["127.0.0.1", "localhost"])
/// // server.certificateFile, server.keyFile, certificates.caFile
/// ```
public struct TestCertificates: Sendable {
    /// A certificate and its key, as PEM files.
    public struct Issued: Sendable {
        public var certificateFile: String
        public var keyFile: String
        public var certificatePEM: String
        public var keyPEM: String
    }

    public let directory: String
    /// The authority's certificate (PEM): the trust root for everything ``issue(_:hosts:commonName:validity:)`` makes.
    public let caFile: String
    public let caPEM: String
    private let caKey: P256.Signing.PrivateKey
    private let caName: DistinguishedName

    /// A new authority named `name`, its certificate written to `<directory>/<file>-ca.pem`.
    public init(directory: String, name: String = "orgsync test CA", file: String = "test") throws {
        self.directory = directory
        let key = P256.Signing.PrivateKey()
        let caName = try DistinguishedName { CommonName(name) }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now - 3_600, notValidAfter: now + 86_400,
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
        caKey = key
        self.caName = caName
        caPEM = try certificate.serializeAsPEM().pemString
        caFile = directory + "/\(file)-ca.pem"
        try Self.write(caPEM, to: caFile)
    }

    /// When an issued certificate is valid.
    public enum Validity: Sendable {
        /// From an hour ago to a day from now.
        case current
        /// Ended a day ago (valid for one day before that).
        case expired
    }

    /// A certificate signed by this authority for `hosts` (IP addresses and DNS names, as subject
    /// alternative names), usable by a server and a client, written to `<directory>/<name>.pem`
    /// and `<directory>/<name>-key.pem` (the key readable by its owner only).
    public func issue(
        _ name: String, hosts: [String] = [], commonName: String? = nil, validity: Validity = .current
    ) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let now = Date()
        let (notBefore, notAfter) = switch validity {
        case .current: (now - 3_600, now + 86_400)
        case .expired: (now - 2 * 86_400, now - 86_400)
        }
        let alternativeNames: [GeneralName] = hosts.map { host in
            if let address = Self.ipv4Bytes(host) { return .ipAddress(ASN1OctetString(contentBytes: address[...])) }
            return .dnsName(host)
        }
        let subject = try DistinguishedName { CommonName(commonName ?? name) }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: notBefore, notValidAfter: notAfter,
            issuer: caName, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                if !alternativeNames.isEmpty { SubjectAlternativeNames(alternativeNames) }
            },
            issuerPrivateKey: .init(caKey))
        let certificatePEM = try certificate.serializeAsPEM().pemString
        let keyPEM = key.pemRepresentation
        let certificateFile = directory + "/\(name).pem"
        let keyFile = directory + "/\(name)-key.pem"
        try Self.write(certificatePEM, to: certificateFile)
        try Self.write(keyPEM, to: keyFile, permissions: 0o600)
        return Issued(certificateFile: certificateFile, keyFile: keyFile, certificatePEM: certificatePEM, keyPEM: keyPEM)
    }

    private static func write(_ text: String, to path: String, permissions: Int = 0o644) throws {
        try Data((text + "\n").utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        try FileManager.default.setAttributes([.posixPermissions: permissions], ofItemAtPath: path)
    }

    /// The four bytes of a dotted IPv4 address, or nil for anything else (a DNS name).
    static func ipv4Bytes(_ host: String) -> [UInt8]? {
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let bytes = parts.compactMap { UInt8($0) }
        return bytes.count == 4 ? bytes : nil
    }
}
