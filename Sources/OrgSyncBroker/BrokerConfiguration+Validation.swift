import OrgSyncLog
import Yams

/// Ranges of the configuration's numeric fields that the broker itself decides (the log's and
/// the supervisor's are checked by `LogConfiguration.validate()` and
/// `LinkSupervisorConfiguration.validate()`), and the refusal to serve a remote address without
/// authentication. Every range is documented in `data/orgsync.example.yaml` and the README.
extension BrokerConfiguration {
    /// Largest `server.body_bytes_max`: 1 GiB.
    public static let bodyBytesMaxLimit = 1 << 30
    /// Largest `server.request_entries_max`.
    public static let requestEntriesMaxLimit = 1_000_000
    /// `streams[].compression_level`: -1 is none, 0...9 are zlib's levels.
    public static let compressionLevels = -1...9

    func validateRangesAndExposure() throws(ConfigurationError) {
        func fail(_ field: String, _ problem: String) -> ConfigurationError { ConfigurationError(field: field, problem: problem) }
        guard server.bodyBytesMax <= Self.bodyBytesMaxLimit else {
            throw fail("server.body_bytes_max", "must be at most \(Self.bodyBytesMaxLimit)")
        }
        guard server.requestEntriesMax <= Self.requestEntriesMaxLimit else {
            throw fail("server.request_entries_max", "must be 1...\(Self.requestEntriesMaxLimit)")
        }
        for (i, stream) in streams.enumerated() {
            if let level = stream.compressionLevel, !Self.compressionLevels.contains(level) {
                throw fail("streams[\(i)].compression_level", "must be -1 (no compression) or a zlib level 0...9, not \(level)")
            }
            if let interval = stream.fsyncIntervalMs, !(1...LogConfiguration.fsyncIntervalMsMax).contains(interval) {
                throw fail("streams[\(i)].fsync_interval_ms", "must be 1...\(LogConfiguration.fsyncIntervalMsMax)")
            }
            if let bytes = stream.retentionBytesMax, bytes < 0 {
                throw fail("streams[\(i)].retention_bytes_max", "must not be negative")
            }
        }
        if !auth.enabled, !server.allowUnauthenticatedRemote, !Self.isLoopback(host: server.host) {
            throw fail("server.host", """
                \(server.host) is not a loopback address and auth.enabled is false: anyone who can reach \
                the port could append and operate links. Turn auth on with tokens, listen on 127.0.0.1, \
                or, behind a proxy or firewall that authenticates, set server.allow_unauthenticated_remote: true
                """)
        }
        if server.tls == nil, !server.allowPlaintext, !Self.isLoopback(host: server.host) {
            throw fail("server.tls", """
                \(server.host) is not a loopback address and server.tls is not set: tokens and entries                 would cross the network in clear text. Set server.tls (cert_file, key_file), listen on                 127.0.0.1, or, on a private network or behind a proxy that terminates TLS, set                 server.allow_plaintext: true
                """)
        }
        if let tls = server.tls {
            if tls.certFile.isEmpty { throw fail("server.tls.cert_file", "must name a PEM certificate file") }
            if tls.keyFile.isEmpty { throw fail("server.tls.key_file", "must name a PEM private key file") }
            if tls.clientCAFile?.isEmpty == true { throw fail("server.tls.client_ca_file", "must name a PEM CA file, or be left out") }
        }
        var certificateNames = Set<String>()
        var commonNames = Set<String>()
        for (i, certificate) in auth.clientCertificates.enumerated() {
            guard server.tls?.clientCAFile != nil else {
                throw fail("auth.client_certificates", "needs server.tls.client_ca_file: only certificates that CA signed are trusted")
            }
            if certificate.commonName.isEmpty { throw fail("auth.client_certificates[\(i)].common_name", "must not be empty") }
            guard certificateNames.insert(certificate.name).inserted else {
                throw fail("auth.client_certificates[\(i)].name", "\(certificate.name) is used twice")
            }
            guard commonNames.insert(certificate.commonName).inserted else {
                throw fail("auth.client_certificates[\(i)].common_name", "\(certificate.commonName) is listed twice")
            }
        }
    }

    /// Whether `host` only accepts connections from this machine: `localhost`, 127.0.0.0/8 or ::1.
    public static func isLoopback(host: String) -> Bool {
        var name = host.lowercased()
        if name.hasPrefix("["), name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        if name == "localhost" || name == "::1" || name == "0:0:0:0:0:0:0:1" { return true }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts.allSatisfy({ part in UInt8(part) != nil }) else { return false }
        return parts[0] == "127"
    }
}

extension ConfigurationError {
    /// A YAML syntax error as `file:line:column: problem`, the form editors and terminals link.
    init(yaml error: YamlError, file: String) {
        let location: (line: Int, column: Int)?
        let problem: String
        switch error {
        case .scanner(let context, let text, let mark, _), .parser(let context, let text, let mark, _),
             .composer(let context, let text, let mark, _):
            location = (mark.line, mark.column)
            problem = context.map { "\(text) (\($0.text))" } ?? text
        case .reader(let text, let offset, _, let yaml):
            location = offset.map { Self.lineAndColumn(of: $0, in: yaml) }
            problem = text
        case .duplicatedKeysInMapping(let duplicates, let context):
            location = (context.mark.line, context.mark.column)
            problem = "duplicate key \(duplicates.joined(separator: ", ")) in a mapping"
        default:
            location = nil
            problem = "\(error)"
        }
        let place = location.map { "\(file):\($0.line):\($0.column)" } ?? file
        self.init(field: "", problem: "\(place): not valid YAML: \(problem)")
    }

    /// 1-based line and column (in Unicode scalars) of a scalar offset.
    private static func lineAndColumn(of offset: Int, in text: String) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        for scalar in text.unicodeScalars.prefix(max(0, offset)) {
            if scalar == "\n" {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return (line, column)
    }
}
