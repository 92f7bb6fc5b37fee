import NIOSSL
import OrgSyncPluginAPI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The TLS settings of a `webhook` link, for an `https://` URL.
///
/// | setting | default | meaning |
/// | --- | --- | --- |
/// | `ca_file` | the system's trust roots | PEM file of the CAs trusted for the receiver's certificate, instead of the system's |
/// | `cert_file` | none | PEM file of the client certificate (chain) sent to a receiver that asks for one; needs `key_file` |
/// | `key_file` | none | PEM file of the client certificate's private key (not encrypted); needs `cert_file` |
/// | `insecure_skip_verify` | `false` | `true` turns certificate and host-name verification off (a warning is logged when the adapter starts) |
///
/// The receiver's certificate is verified, host name included, unless `insecure_skip_verify`
/// is true. The files are read when the adapter is made (a missing, unreadable or unparsable
/// file stops start-up naming the setting and the path) and again each time the adapter makes
/// its HTTP client (at every `open`, so a renewed file is picked up after the next failure).
public struct WebhookTLSSettings: Sendable, Hashable {
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    public var insecureSkipVerify: Bool

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, insecureSkipVerify: Bool = false) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.insecureSkipVerify = insecureSkipVerify
    }

    /// A PEM file bigger than this is refused (a large CA bundle is a few hundred KiB).
    static let pemFileBytesMax = 4 << 20

    /// The TLS settings that change anything (`insecure_skip_verify: false` does not), by name.
    var givenSettings: [String] {
        [caFile.map { _ in "ca_file" }, certificateFile.map { _ in "cert_file" }, keyFile.map { _ in "key_file" },
         insecureSkipVerify ? "insecure_skip_verify" : nil].compactMap { $0 }
    }

    /// Reads and checks the settings (no file is opened here: see ``clientConfiguration()``).
    /// `urls` are the link's URLs by setting name, checked already to be http:// or https://.
    init(_ configuration: AdapterConfiguration, urls: [(setting: String, url: String)]) throws(AdapterConfigurationError) {
        func optionalPath(_ setting: String) throws(AdapterConfigurationError) -> String? {
            try configuration.settings[setting] == nil ? nil : configuration.path(setting)
        }
        caFile = try optionalPath("ca_file")
        certificateFile = try optionalPath("cert_file")
        keyFile = try optionalPath("key_file")
        switch configuration.settings["insecure_skip_verify"]?.lowercased() {
        case nil, "false": insecureSkipVerify = false
        case "true": insecureSkipVerify = true
        case let other?:
            throw AdapterConfigurationError(setting: "insecure_skip_verify", problem: "must be true or false, not \"\(other)\"")
        }
        if certificateFile != nil, keyFile == nil {
            throw AdapterConfigurationError(setting: "key_file", problem: "is required with cert_file (the client certificate's private key)")
        }
        if keyFile != nil, certificateFile == nil {
            throw AdapterConfigurationError(setting: "cert_file", problem: "is required with key_file (the client certificate for that key)")
        }
        if insecureSkipVerify, caFile != nil {
            throw AdapterConfigurationError(
                setting: "ca_file", problem: "is not used when insecure_skip_verify is true (nothing is verified); remove one of them")
        }
        guard let given = givenSettings.first else { return }
        for (setting, url) in urls where !url.lowercased().hasPrefix("https://") {
            throw AdapterConfigurationError(
                setting: given, problem: "applies to https:// only, but \(setting) is \(url); use an https:// URL or remove the TLS settings")
        }
    }

    /// What ``description`` shows: which settings are given, with their paths (no secret:
    /// a key file's path, never its contents).
    var summary: String {
        var parts: [String] = []
        if let caFile { parts.append("ca_file=\(caFile)") }
        if let certificateFile { parts.append("cert_file=\(certificateFile)") }
        if let keyFile { parts.append("key_file=\(keyFile)") }
        if insecureSkipVerify { parts.append("insecure_skip_verify=true") }
        return parts.joined(separator: " ")
    }

    /// Where the receiver's certificate is trusted from, in an operator's words.
    var trustSource: String {
        if let caFile { return "ca_file=\(caFile)" }
        return "the system's trust roots; set ca_file to trust a private CA"
    }

    /// The client's TLS configuration, with the PEM files read now. Throws naming the setting
    /// and the path of a file that is missing, unreadable, too big or holds no usable PEM.
    func clientConfiguration() throws(AdapterConfigurationError) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = insecureSkipVerify ? .none : .fullVerification
        if let caFile {
            configuration.trustRoots = .certificates(try Self.certificates(setting: "ca_file", path: caFile))
        }
        if let certificateFile, let keyFile {
            configuration.certificateChain = try Self.certificates(setting: "cert_file", path: certificateFile).map { .certificate($0) }
            let bytes = try Self.contents(setting: "key_file", path: keyFile)
            let key: NIOSSLPrivateKey
            do {
                key = try NIOSSLPrivateKey(bytes: bytes, format: .pem)
            } catch {
                throw AdapterConfigurationError(
                    setting: "key_file", problem: "\(keyFile) holds no usable PEM private key (an encrypted key is not supported)")
            }
            configuration.privateKey = .privateKey(key)
            try Self.checkKeyMatchesCertificate(configuration, keyFile: keyFile, certificateFile: certificateFile)
        }
        return configuration
    }

    private static func certificates(setting: String, path: String) throws(AdapterConfigurationError) -> [NIOSSLCertificate] {
        let bytes = try contents(setting: setting, path: path)
        let certificates = (try? NIOSSLCertificate.fromPEMBytes(bytes)) ?? []
        guard !certificates.isEmpty else {
            throw AdapterConfigurationError(setting: setting, problem: "\(path) holds no PEM certificate")
        }
        return certificates
    }

    private static func contents(setting: String, path: String) throws(AdapterConfigurationError) -> [UInt8] {
        let files = FileManager.default
        guard files.fileExists(atPath: path) else {
            throw AdapterConfigurationError(setting: setting, problem: "names \(path), which does not exist")
        }
        let attributes = (try? files.attributesOfItem(atPath: path)) ?? [:]
        let size = (attributes[.size] as? Int) ?? (attributes[.size] as? UInt64).map { Int(clamping: $0) } ?? 0
        guard size <= pemFileBytesMax else {
            throw AdapterConfigurationError(setting: setting, problem: "names \(path), which is bigger than \(pemFileBytesMax) bytes")
        }
        guard let data = files.contents(atPath: path) else {
            throw AdapterConfigurationError(setting: setting, problem: "names \(path), which cannot be read")
        }
        guard data.count <= pemFileBytesMax else {
            throw AdapterConfigurationError(setting: setting, problem: "names \(path), which is bigger than \(pemFileBytesMax) bytes")
        }
        return Array(data)
    }

    /// BoringSSL refuses a private key that does not belong to the certificate when a context
    /// is made; made here with no trust roots, so the system's store is not read for this check.
    private static func checkKeyMatchesCertificate(
        _ configuration: TLSConfiguration, keyFile: String, certificateFile: String
    ) throws(AdapterConfigurationError) {
        var check = configuration
        check.trustRoots = .certificates([])
        do {
            _ = try NIOSSLContext(configuration: check)
        } catch {
            throw AdapterConfigurationError(
                setting: "key_file", problem: "\(keyFile) is not the private key of the certificate in cert_file \(certificateFile)")
        }
    }
}
