import OrgSyncPluginAPI

/// How a `postgres` link protects its connection: libpq's `sslmode`, `sslrootcert`, `sslcert`
/// and `sslkey`, with libpq's meanings (https://www.postgresql.org/docs/15/libpq-ssl.html).
///
/// | `sslmode` | encrypted | server's certificate checked | protects against |
/// | --- | --- | --- | --- |
/// | `disable` | never | — | nothing |
/// | `prefer` (default) | when the server offers TLS | no | a passive eavesdropper, and only when the server offers TLS |
/// | `require` | always, or no connection | no | a passive eavesdropper |
/// | `verify-ca` | always | signed by a CA in `sslrootcert` | also an active attacker without a certificate from that CA |
/// | `verify-full` | always | signed by a trusted CA and issued for `host` | also an active attacker |
///
/// Invariants checked by ``problem``, each naming its setting: `verify-ca` has an `sslrootcert`
/// (with the system's public CAs, any certificate any public CA issued for any host would
/// pass); `sslrootcert` is not given with a mode that never reads it (libpq would quietly turn
/// `require` into `verify-ca` then; here one setting says one thing); `sslcert` and `sslkey` come
/// together, and not with `disable`.
public struct PostgresTLSSettings: Sendable, Hashable, CustomStringConvertible {
    /// libpq's `sslmode` values.
    public enum Mode: String, Sendable, Hashable, CaseIterable {
        case disable
        case prefer
        case require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"

        /// Whether the server's certificate is checked against trust roots.
        public var verifiesCertificate: Bool { self == .verifyCA || self == .verifyFull }
    }

    /// libpq's default: TLS when the server offers it, no certificate check. It keeps working
    /// against a server without TLS (a loopback or socket-only setup), and it encrypts against
    /// a passive eavesdropper when the server offers TLS — but an active attacker can answer
    /// "no TLS" or present any certificate. Across a network, use `verify-full`.
    public static let defaultMode = Mode.prefer

    public var mode: Mode
    /// `sslrootcert`: PEM file of the CAs the server's certificate must chain to. With
    /// `verify-full` and none, the system's trust store is used.
    public var rootCertificateFile: String?
    /// `sslcert`: PEM file of the client certificate (chain) sent to the server.
    public var certificateFile: String?
    /// `sslkey`: PEM file of the client certificate's private key (unencrypted).
    public var keyFile: String?

    public init(
        mode: Mode = Self.defaultMode, rootCertificateFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil
    ) {
        self.mode = mode
        self.rootCertificateFile = rootCertificateFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    /// Reads `sslmode`, `sslrootcert`, `sslcert` and `sslkey` (paths relative to the data
    /// directory) and checks that they fit together; throws naming the first bad setting.
    /// Reads no file: ``PostgresTLSContext`` does, when the adapter is made and on each connect.
    public init(_ configuration: AdapterConfiguration) throws(AdapterConfigurationError) {
        let modeText = configuration.string("sslmode", default: Self.defaultMode.rawValue)
        guard let mode = Mode(rawValue: modeText) else {
            let modes = Mode.allCases.map(\.rawValue).joined(separator: ", ")
            throw AdapterConfigurationError(setting: "sslmode", problem: "must be one of \(modes), not \"\(modeText)\"")
        }
        self.mode = mode
        rootCertificateFile = try Self.optionalPath("sslrootcert", configuration)
        certificateFile = try Self.optionalPath("sslcert", configuration)
        keyFile = try Self.optionalPath("sslkey", configuration)
        if let problem { throw problem }
    }

    private static func optionalPath(_ name: String, _ configuration: AdapterConfiguration) throws(AdapterConfigurationError)
        -> String?
    {
        guard let value = configuration.settings[name], !value.isEmpty else { return nil }
        return try configuration.path(name)
    }

    /// The first combination of settings that does not fit together, nil when they do.
    public var problem: AdapterConfigurationError? {
        if rootCertificateFile != nil, !mode.verifiesCertificate {
            return AdapterConfigurationError(
                setting: "sslrootcert",
                problem: "is only read with sslmode verify-ca or verify-full; with sslmode=\(mode.rawValue) the server's certificate is not checked")
        }
        if mode == .verifyCA, rootCertificateFile == nil {
            return AdapterConfigurationError(
                setting: "sslrootcert",
                problem: "is required with sslmode=verify-ca: with the system's public CAs, a certificate any of them issued for any host would pass (use verify-full for those)")
        }
        if certificateFile != nil, keyFile == nil {
            return AdapterConfigurationError(setting: "sslkey", problem: "is required with sslcert (the client certificate's private key)")
        }
        if keyFile != nil, certificateFile == nil {
            return AdapterConfigurationError(setting: "sslcert", problem: "is required with sslkey (the client certificate)")
        }
        if certificateFile != nil, mode == .disable {
            return AdapterConfigurationError(setting: "sslcert", problem: "is not sent with sslmode=disable")
        }
        return nil
    }

    /// File paths are not secrets (the key file's content is never read into a message).
    public var description: String {
        var text = "sslmode=\(mode.rawValue)"
        if let rootCertificateFile { text += " sslrootcert=\(rootCertificateFile)" }
        if let certificateFile { text += " sslcert=\(certificateFile)" }
        if let keyFile { text += " sslkey=\(keyFile)" }
        return text
    }
}
