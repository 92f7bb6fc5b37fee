import Foundation
import OrgSyncCore
import OrgSyncLog
import Yams

/// The broker's configuration file (YAML). Every field, its default and its unit is documented
/// in `data/orgsync.example.yaml`; this type is the single source of the defaults.
public struct BrokerConfiguration: Sendable, Codable, Hashable {
    /// Directory for streams, cursors, sync logs and SQLite targets. Relative paths resolve
    /// against the directory `orgsync serve` runs in.
    public var dataDir: String = "data/state"
    public var server = Server()
    public var log = Log()
    public var auth = Auth()
    public var streams: [Stream] = [Stream()]
    public var links: [Link] = []
    /// Databases whose committed changes are captured into a stream (`kind: postgres`).
    public var sources: [Source] = []
    /// Directory of out-of-process adapter plugins (one subdirectory with a plugin.json each).
    public var pluginsDir: String? = nil
    /// How long out-of-process plugins may take to answer (every plugin process of the broker).
    public var pluginLimits = PluginLimits()
    /// Operators' webhooks told of link events (suspended, resumed, held down, ...).
    public var notifications: [Notification] = []
    /// Present: this broker is a member of a cluster on NATS JetStream (``Cluster``).
    public var cluster: Cluster? = nil

    /// `notifications[]`: one webhook target (Standard Webhooks 1.0: signed with the secret in
    /// `secret_env`). Durations in milliseconds; defaults in `NotificationSettings`.
    public struct Notification: Sendable, Codable, Hashable {
        public var name: String
        public var url: String
        /// Environment variable holding the secret, `whsec_` + base64 of 24 to 64 bytes.
        public var secretEnv: String
        /// Event types to send (`link.suspended`, ...); all when left out.
        public var events: [String]?
        public var timeoutMs: Int64?
        public var backoffBaseMs: Int64?
        public var backoffCapMs: Int64?
        public var giveUpAfterMs: Int64?
        public var stableAfterMs: Int64?
        public var rejectedSummaryMs: Int64?
    }

    /// `plugin_limits`: a plugin that does not answer within its bound is a connection failure of
    /// its link (killed, reaped, restarted with the link's backoff).
    public struct PluginLimits: Sendable, Codable, Hashable {
        /// The handshake after the process starts. 100 ms...1 h.
        public var handshakeTimeoutMs: Int = 10_000
        /// `open`, `probe`, `appliedPosition`, `setAppliedPosition`, `close`. 100 ms...1 h.
        public var requestTimeoutMs: Int = 30_000
        /// One `apply` (a whole batch). 100 ms...1 day.
        public var applyTimeoutMs: Int = 120_000
    }

    /// The limits every plugin process runs under.
    public var pluginProcessLimits: PluginProcessLimits {
        PluginProcessLimits(handshakeTimeoutMs: pluginLimits.handshakeTimeoutMs, requestTimeoutMs: pluginLimits.requestTimeoutMs,
                            applyTimeoutMs: pluginLimits.applyTimeoutMs)
    }

    public init() {}

    public struct Server: Sendable, Codable, Hashable {
        /// Address to listen on. Use 127.0.0.1 unless a proxy or firewall protects the port.
        public var host: String = "127.0.0.1"
        public var port: Int = 7070
        /// Largest request body accepted (checked while reading it).
        public var bodyBytesMax: Int = 16 << 20
        /// Largest single entry accepted (one JSON body or one NDJSON line).
        public var entryBytesMax: Int = 1 << 20
        /// Most entries in one NDJSON request.
        public var requestEntriesMax: Int = 100_000
        /// How long a client has to send a request's header block: from accepting the connection,
        /// or from the first byte of the next request on a kept-alive one. 100 ms...1 h.
        public var headerTimeoutMs: Int = 10_000
        /// How long a connection may sit with no request (or with a request body that stopped
        /// arriving) before it is closed. 100 ms...1 day.
        public var idleTimeoutMs: Int = 60_000
        /// Most client connections open at once; one more is closed as soon as it is accepted.
        /// 1...1 000 000.
        public var connectionsMax: Int = 1_000
        /// Request-body bytes all requests together may hold in memory; a request that would pass
        /// it waits briefly for room, then gets 503 with Retry-After. body_bytes_max...1 TiB.
        public var inflightBodyBytesMax: Int = 64 << 20
        /// Serve a non-loopback `host` with auth off. Refused unless set: only for a port that a
        /// proxy or firewall protects.
        public var allowUnauthenticatedRemote: Bool = false
        /// HTTPS for the API; nil serves plain HTTP (refused on a non-loopback `host` unless
        /// ``allowPlaintext``).
        public var tls: TLS? = nil
        /// Serve a non-loopback `host` without TLS. Refused unless set: only for a network that
        /// is private, or a proxy in front that terminates TLS.
        public var allowPlaintext: Bool = false
        public init() {}
    }

    /// `server.tls`: the API over HTTPS. Paths are relative to where `orgsync serve` runs.
    public struct TLS: Sendable, Codable, Hashable {
        /// PEM certificate chain, the server's certificate first. Reloaded on SIGHUP.
        public var certFile: String
        /// PEM private key of that certificate. Reloaded on SIGHUP.
        public var keyFile: String
        /// PEM CA certificates: a client that presents a certificate must have one they signed,
        /// and a certificate listed in `auth.client_certificates` authenticates as its role.
        /// Read at start only.
        public var clientCAFile: String?

        public init(certFile: String, keyFile: String, clientCAFile: String? = nil) {
            self.certFile = certFile
            self.keyFile = keyFile
            self.clientCAFile = clientCAFile
        }
    }

    public struct Log: Sendable, Codable, Hashable {
        /// trace, debug, info, notice, warning, error or critical.
        public var level: String = "info"
        public init() {}
    }

    public struct Auth: Sendable, Codable, Hashable {
        /// Bearer-token authentication. Turn off only on a trusted machine: every endpoint
        /// is then open.
        public var enabled: Bool = true
        public var tokens: [Token] = []
        /// `/health/live` and `/health/ready` without a token.
        public var openHealth: Bool = true
        /// `/metrics` without a token.
        public var openMetrics: Bool = false
        /// Client certificates (signed by `server.tls.client_ca_file`) that authenticate as a
        /// role, like a token; a request with a bearer token is judged by the token alone.
        public var clientCertificates: [ClientCertificate] = []
        public init() {}
    }

    /// `auth.client_certificates[]`: a verified client certificate whose subject common name is
    /// `commonName` has `role`.
    public struct ClientCertificate: Sendable, Codable, Hashable {
        /// A name for logs.
        public var name: String
        /// The certificate's subject CN, compared exactly.
        public var commonName: String
        public var role: Role

        public init(name: String, commonName: String, role: Role) {
            self.name = name
            self.commonName = commonName
            self.role = role
        }
    }

    public struct Token: Sendable, Codable, Hashable {
        /// A name for logs (the token itself is never logged).
        public var name: String
        /// `produce` (append, read) or `admin` (everything).
        public var role: Role
        /// The token, inline. Prefer `tokenEnv`.
        public var token: String?
        /// Name of an environment variable holding the token.
        public var tokenEnv: String?

        public init(name: String, role: Role, token: String? = nil, tokenEnv: String? = nil) {
            self.name = name
            self.role = role
            self.token = token
            self.tokenEnv = tokenEnv
        }
    }

    public enum Role: String, Sendable, Codable, Hashable, Comparable {
        case produce
        case admin

        public static func < (lhs: Role, rhs: Role) -> Bool { lhs == .produce && rhs == .admin }
    }

    public struct Stream: Sendable, Codable, Hashable {
        public var name: String = "events"
        public var segmentBytesMax: Int?
        public var segmentAgeMsMax: Int64?
        /// zlib level 0...9, or -1 for no compression.
        public var compressionLevel: Int?
        /// `always` (durable; default) or `interval` (NOT durable against a machine crash).
        public var fsync: String?
        public var fsyncIntervalMs: Int?
        public var retentionBytesMax: Int64?
        public var retentionAgeMsMax: Int64?
        public var retentionDropsUnconsumed: Bool?
        public var queuedAppendsMax: Int?
        public var queuedBytesMax: Int?
        public init() {}
    }

    public struct Link: Sendable, Codable, Hashable {
        public var name: String
        public var stream: String
        /// Registered adapter name: sqlite, postgres, webhook, or a plugin's name.
        public var adapter: String
        /// Adapter settings. A key ending in `_env` names an environment variable whose value
        /// becomes the setting without the suffix (`password_env: PGPASSWORD` → `password`).
        public var settings: [String: String] = [:]
        /// The link's supervisor settings (see `data/orgsync.example.yaml`); unset ones keep
        /// the defaults of `LinkSupervisorConfiguration`.
        public var supervisor = Supervisor()
        public var stopOnReject: Bool?
        /// In a cluster: the member that runs this link (``Cluster/node``).
        public var node: String?

        public init(name: String, stream: String, adapter: String, settings: [String: String] = [:]) {
            self.name = name
            self.stream = stream
            self.adapter = adapter
            self.settings = settings
        }
    }
}

extension BrokerConfiguration {
    /// `sources[]`: a database captured into a stream, supervised like a link's target.
    public struct Source: Sendable, Codable, Hashable {
        public var name: String
        /// The source's kind: `postgres` (logical decoding).
        public var kind: String
        /// The stream its changes are appended to.
        public var stream: String
        /// The kind's settings; `x_env` as for links.
        public var settings: [String: String] = [:]
        /// Suspension and probing, as `links[].supervisor` (`batch_entries_max`,
        /// `retryable_*` and `dead_letters_max` do not apply to a source).
        public var supervisor = Supervisor()
        /// In a cluster: the member that runs this source (``Cluster/node``).
        public var node: String?

        public init(name: String, kind: String, stream: String, settings: [String: String] = [:]) {
            self.name = name
            self.kind = kind
            self.stream = stream
            self.settings = settings
        }
    }

    /// `links[].supervisor`: a link's supervisor settings, each optional (unset: the default of
    /// `LinkSupervisorConfiguration`, whose `validate()` checks the ranges). Durations in ms.
    public struct Supervisor: Sendable, Codable, Hashable {
        public var probeThreshold: Int?
        public var verifyIntervalMs: UInt64?
        public var verifyWindowMs: UInt64?
        public var backoffBaseMs: UInt64?
        public var backoffCapMs: UInt64?
        public var jitterRatio: Double?
        public var flapLimit: Int?
        public var flapWindowMs: UInt64?
        public var holdDownMs: UInt64?
        public var retryableAttemptsMax: Int?
        public var retryableBackoffBaseMs: UInt64?
        public var batchEntriesMax: Int?
        public var syncLogRecordsMax: Int?
        public var deadLettersMax: Int?

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case probeThreshold, verifyIntervalMs, verifyWindowMs, backoffBaseMs, backoffCapMs, jitterRatio, flapLimit,
                 flapWindowMs, holdDownMs, retryableAttemptsMax, retryableBackoffBaseMs, batchEntriesMax,
                 syncLogRecordsMax, deadLettersMax
        }
    }
}

/// A configuration that cannot be used: names the field and the problem.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var field: String
    public var problem: String
    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }
    public var description: String { field.isEmpty ? "configuration: \(problem)" : "configuration field \(field): \(problem)" }
}

extension BrokerConfiguration {
    /// The configuration `orgsync serve` runs with no `--config`, compiled into the binary so it
    /// runs from any directory. `data/orgsync.example.yaml` is its documented copy (a test keeps
    /// the two equal).
    public static let embeddedDefaultYAML = EmbeddedFiles.orgsyncExampleYaml

    /// How syntax errors name the embedded default.
    public static let embeddedDefaultName = "<embedded default configuration>"

    /// Reads and validates a YAML file. Unknown fields are errors (a typo must not be ignored).
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> BrokerConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(field: "", problem: "cannot read \(path)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(field: "", problem: "\(path) is not UTF-8")
        }
        return try parse(yaml: text, environment: environment, file: path)
    }

    /// Parses and validates YAML text; `file` names it in syntax errors (`file:line:column`).
    public static func parse(yaml: String, environment: [String: String] = [:], file: String = "<configuration>") throws -> BrokerConfiguration {
        let config: BrokerConfiguration
        do {
            try rejectUnknownKeys(yaml)
            // YAML → JSON → JSONDecoder: snake_case keys and typed errors with their paths.
            let object = try Yams.load(yaml: yaml) ?? [String: Any]()
            guard JSONSerialization.isValidJSONObject(object), object is [String: Any] else {
                throw ConfigurationError(field: "", problem: "the configuration must be a mapping of fields")
            }
            let json = try JSONSerialization.data(withJSONObject: object)
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            config = try decoder.decode(BrokerConfiguration.self, from: json)
        } catch let error as DecodingError {
            throw ConfigurationError(decoding: error)
        } catch let error as ConfigurationError {
            throw error
        } catch let error as YamlError {
            throw ConfigurationError(yaml: error, file: file)
        } catch {
            throw ConfigurationError(field: "", problem: "\(file): not valid YAML: \(error)")
        }
        try config.validate(environment: environment)
        return config
    }

    /// Checks values that decoding cannot: ranges, references, names.
    public func validate(environment: [String: String]) throws {
        func fail(_ field: String, _ problem: String) -> ConfigurationError { ConfigurationError(field: field, problem: problem) }
        try validateRangesAndExposure()
        guard (0...65535).contains(server.port) else { throw fail("server.port", "must be 0...65535") }
        guard (100...3_600_000).contains(pluginLimits.handshakeTimeoutMs) else {
            throw fail("plugin_limits.handshake_timeout_ms", "must be 100...3600000 (100 ms to 1 h)")
        }
        guard (100...3_600_000).contains(pluginLimits.requestTimeoutMs) else {
            throw fail("plugin_limits.request_timeout_ms", "must be 100...3600000 (100 ms to 1 h)")
        }
        guard (100...86_400_000).contains(pluginLimits.applyTimeoutMs) else {
            throw fail("plugin_limits.apply_timeout_ms", "must be 100...86400000 (100 ms to 1 day)")
        }
        guard server.bodyBytesMax >= 1024 else { throw fail("server.body_bytes_max", "must be at least 1024") }
        guard server.entryBytesMax >= 64 && server.entryBytesMax <= server.bodyBytesMax else {
            throw fail("server.entry_bytes_max", "must be 64...body_bytes_max")
        }
        guard server.requestEntriesMax >= 1 else { throw fail("server.request_entries_max", "must be positive") }
        guard (100...3_600_000).contains(server.headerTimeoutMs) else {
            throw fail("server.header_timeout_ms", "must be 100...3600000 (100 ms to 1 h)")
        }
        guard (100...86_400_000).contains(server.idleTimeoutMs) else {
            throw fail("server.idle_timeout_ms", "must be 100...86400000 (100 ms to 1 day)")
        }
        guard (1...1_000_000).contains(server.connectionsMax) else { throw fail("server.connections_max", "must be 1...1000000") }
        guard server.inflightBodyBytesMax >= server.bodyBytesMax && server.inflightBodyBytesMax <= 1 << 40 else {
            throw fail("server.inflight_body_bytes_max", "must be body_bytes_max...1099511627776 (1 TiB): one request of the largest size must fit")
        }
        guard logLevel != nil else { throw fail("log.level", "must be one of trace, debug, info, notice, warning, error, critical") }
        var streamNames = Set<String>()
        for (i, stream) in streams.enumerated() {
            guard streamNames.insert(stream.name).inserted else { throw fail("streams[\(i)].name", "duplicate stream \(stream.name)") }
            do { _ = try logConfiguration(for: stream) } catch let error as LogError {
                if case .invalidConfiguration(let field, let problem) = error { throw fail("streams[\(i)].\(snakeCase(field))", problem) }
                throw fail("streams[\(i)]", "\(error)")
            }
            guard isValidStreamName(stream.name) else { throw fail("streams[\(i)].name", "use letters, digits, '.', '_', '-' (at most 128)") }
        }
        var linkNames = Set<String>()
        for (i, link) in links.enumerated() {
            guard isValidStreamName(link.name) else { throw fail("links[\(i)].name", "use letters, digits, '.', '_', '-' (at most 128)") }
            guard linkNames.insert(link.name).inserted else { throw fail("links[\(i)].name", "duplicate link \(link.name)") }
            guard streamNames.contains(link.stream) else { throw fail("links[\(i)].stream", "no stream named \(link.stream)") }
            do { _ = try supervisorConfiguration(for: link) } catch let error as ConfigurationError {
                throw fail("links[\(i)].supervisor.\(error.field)", error.problem)
            }
            for (key, variable) in link.settings where key.hasSuffix("_env") {
                _ = try Self.environmentValue(of: variable, field: "links[\(i)].settings.\(key)", environment: environment)
            }
        }
        var sourceNames = Set<String>()
        for (i, source) in sources.enumerated() {
            guard isValidStreamName(source.name) else { throw fail("sources[\(i)].name", "use letters, digits, '.', '_', '-' (at most 128)") }
            guard sourceNames.insert(source.name).inserted else { throw fail("sources[\(i)].name", "duplicate source \(source.name)") }
            guard streamNames.contains(source.stream) else { throw fail("sources[\(i)].stream", "no stream named \(source.stream)") }
            // A source keeps its position hint as a cursor of its stream named `source.<name>`.
            if let link = links.first(where: { $0.stream == source.stream && $0.name == "source." + source.name }) {
                throw fail("sources[\(i)].name", "link \(link.name) on stream \(source.stream) has the name this source's position cursor takes: rename one")
            }
            do { _ = try supervisorConfiguration(source.supervisor, stopOnReject: nil) } catch let error as ConfigurationError {
                throw fail("sources[\(i)].supervisor.\(error.field)", error.problem)
            }
            for (key, variable) in source.settings where key.hasSuffix("_env") {
                _ = try Self.environmentValue(of: variable, field: "sources[\(i)].settings.\(key)", environment: environment)
            }
        }
        _ = try notificationSettings(environment: environment)
        if let cluster { try validateCluster(cluster, environment: environment) }
        try validatePlacement()
        if auth.enabled {
            guard !auth.tokens.isEmpty || !auth.clientCertificates.isEmpty else {
                throw fail("auth.tokens", "auth is enabled but no token (nor client certificate) is configured (add tokens, or set auth.enabled: false on a trusted machine)")
            }
            for (i, token) in auth.tokens.enumerated() {
                switch (token.token, token.tokenEnv) {
                case (let inline?, nil):
                    guard inline.utf8.count >= 16 else { throw fail("auth.tokens[\(i)].token", "must be at least 16 characters") }
                case (nil, let variable?):
                    let value = try Self.environmentValue(of: variable, field: "auth.tokens[\(i)].token_env", environment: environment)
                    guard value.utf8.count >= 16 else { throw fail("auth.tokens[\(i)].token_env", "the token in \(variable) must be at least 16 characters") }
                default:
                    throw fail("auth.tokens[\(i)]", "set exactly one of token and token_env")
                }
            }
        }
    }

    public var logLevel: LogLevelName? { LogLevelName(rawValue: log.level) }

    /// The log settings of a stream, with the broker's defaults for what it leaves out.
    public func logConfiguration(for stream: Stream) throws -> LogConfiguration {
        var config = LogConfiguration()
        if let value = stream.segmentBytesMax { config.segmentBytesMax = value }
        if let value = stream.segmentAgeMsMax { config.segmentAgeMsMax = value }
        if let value = stream.compressionLevel { config.compressionLevel = value < 0 ? nil : Int32(clamping: value) }
        switch stream.fsync ?? "always" {
        case "always": config.fsyncPolicy = .always
        case "interval": config.fsyncPolicy = .interval(intervalMs: stream.fsyncIntervalMs ?? 100)
        default: throw LogError.invalidConfiguration(field: "fsync", problem: "must be always or interval")
        }
        config.retentionBytesMax = stream.retentionBytesMax
        config.retentionAgeMsMax = stream.retentionAgeMsMax
        if let value = stream.retentionDropsUnconsumed { config.retentionDropsUnconsumed = value }
        if let value = stream.queuedAppendsMax { config.queuedAppendsMax = value }
        if let value = stream.queuedBytesMax { config.queuedBytesMax = value }
        config.entryBytesMax = max(config.entryBytesMax, server.entryBytesMax)
        try config.validate()
        return config
    }

    /// The one `_env` rule of the configuration: a field `x_env: VAR` (`password_env`,
    /// `token_env`, `secret_env`, any adapter setting ending in `_env`) takes its value from the
    /// environment variable `VAR`, which must be set and not empty. The error names the field and
    /// the variable, never a value.
    static func environmentValue(of variable: String, field: String, environment: [String: String]) throws -> String {
        guard let value = environment[variable], !value.isEmpty else {
            throw ConfigurationError(field: field, problem: "environment variable \(variable) is not set (or is empty)")
        }
        return value
    }

    /// Resolves `*_env` settings of a link from the environment (checked by `validate`).
    public func resolvedSettings(_ link: Link, environment: [String: String]) -> [String: String] {
        resolvedSettings(link.settings, environment: environment)
    }

    /// Resolves `*_env` settings (of a link or a source) from the environment.
    public func resolvedSettings(_ written: [String: String], environment: [String: String]) -> [String: String] {
        var settings: [String: String] = [:]
        for (key, value) in written {
            if key.hasSuffix("_env") {
                if let resolved = try? Self.environmentValue(of: value, field: key, environment: environment) {
                    settings[String(key.dropLast(4))] = resolved
                }
            } else {
                settings[key] = value
            }
        }
        return settings
    }

    /// Tokens with their secrets resolved.
    public func resolvedTokens(environment: [String: String]) -> [(name: String, role: Role, secret: [UInt8])] {
        auth.tokens.compactMap { token in
            guard let secret = token.token
                ?? token.tokenEnv.flatMap({ try? Self.environmentValue(of: $0, field: "token_env", environment: environment) })
            else { return nil }
            return (token.name, token.role, Array(secret.utf8))
        }
    }
}

public enum LogLevelName: String, Sendable {
    case trace, debug, info, notice, warning, error, critical
}

extension ConfigurationError {
    init(decoding error: DecodingError) {
        func path(_ keys: [any CodingKey]) -> String {
            String(keys.map { key in key.intValue.map { "[\($0)]" } ?? ".\(snakeCase(key.stringValue))" }.joined().dropFirst(keys.first?.intValue == nil ? 1 : 0))
        }
        switch error {
        case .keyNotFound(let key, let context):
            self.init(field: path(context.codingPath + [key]), problem: "is required")
        case .typeMismatch(let type, let context):
            self.init(field: path(context.codingPath), problem: "must be \(describe(type))")
        case .valueNotFound(let type, let context):
            self.init(field: path(context.codingPath), problem: "must be \(describe(type)), not null")
        case .dataCorrupted(let context):
            self.init(field: path(context.codingPath), problem: context.debugDescription)
        @unknown default:
            self.init(field: "", problem: "\(error)")
        }
    }
}

private func describe(_ type: Any.Type) -> String {
    switch type {
    case is Int.Type, is Int64.Type: "an integer"
    case is Bool.Type: "true or false"
    case is String.Type: "a string"
    default: "a \(type)"
    }
}


/// Stream and link names become file names: the log's rule decides what is allowed.
func isValidStreamName(_ name: String) -> Bool { StreamLog.isValidName(name) }

/// Unknown keys are errors: walk the YAML and compare with the known field names.
private func rejectUnknownKeys(_ yaml: String) throws {
    guard let node = try Yams.compose(yaml: yaml) else { return }
    try rejectNonScalarKeys(node, path: "")
    // The field names are the decoders' own CodingKeys, in the configuration's snake_case: one
    // list of fields per section, so a field cannot be decoded yet called unknown, or the reverse.
    func fields<Key: CodingKey & CaseIterable>(_: Key.Type) -> Set<String> { Set(Key.allCases.map { snakeCase($0.stringValue) }) }
    typealias C = BrokerConfiguration
    let top = fields(C.CodingKeys.self)
    let known: [String: Set<String>] = [
        "server": fields(C.Server.CodingKeys.self),
        "server.tls": fields(C.TLS.CodingKeys.self),
        "log": fields(C.Log.CodingKeys.self),
        "plugin_limits": fields(C.PluginLimits.CodingKeys.self),
        "auth": fields(C.Auth.CodingKeys.self),
        "auth.tokens[]": fields(C.Token.CodingKeys.self),
        "auth.client_certificates[]": fields(C.ClientCertificate.CodingKeys.self),
        "streams[]": fields(C.Stream.CodingKeys.self),
        "links[]": fields(C.Link.CodingKeys.self),
        "links[].supervisor": fields(C.Supervisor.CodingKeys.self),
        "sources[]": fields(C.Source.CodingKeys.self),
        "sources[].supervisor": fields(C.Supervisor.CodingKeys.self),
        "notifications[]": fields(C.Notification.CodingKeys.self),
        "cluster": fields(C.Cluster.CodingKeys.self),
        "cluster.tls": fields(C.Cluster.ClusterTLS.CodingKeys.self),
    ]
    func check(_ node: Node, allowed: Set<String>, path: String, template: String) throws {
        guard let mapping = node.mapping else { return }
        for (key, value) in mapping {
            guard let name = key.string else { continue }
            let field = path.isEmpty ? name : path + "." + name
            guard allowed.contains(name) else {
                throw ConfigurationError(field: field, problem: "unknown field (known: \(allowed.sorted().joined(separator: ", ")))")
            }
            let childTemplate = template.isEmpty ? name : template + "." + name
            if let allowedChild = known[childTemplate] {
                try check(value, allowed: allowedChild, path: field, template: childTemplate)
            } else if let allowedItems = known[childTemplate + "[]"], let items = value.sequence {
                for (i, item) in items.enumerated() {
                    try check(item, allowed: allowedItems, path: "\(field)[\(i)]", template: childTemplate + "[]")
                }
            }
        }
    }
    try check(node, allowed: top, path: "", template: "")
}

/// Mapping keys must be plain scalars: Yams' `load` force-unwraps a key as a string and traps
/// on a sequence or mapping used as a key (`[[]: 1]`, found by the `config` fuzz target), which
/// took the broker down on a malformed file instead of naming the problem.
private func rejectNonScalarKeys(_ node: Node, path: String) throws {
    switch node {
    case .scalar, .alias:
        return
    case .sequence(let items):
        for (i, item) in items.enumerated() { try rejectNonScalarKeys(item, path: "\(path)[\(i)]") }
    case .mapping(let mapping):
        for (key, value) in mapping {
            guard let name = key.scalar?.string else {
                throw ConfigurationError(field: path, problem: "a mapping key must be plain text, not a \(key.sequence != nil ? "sequence" : "mapping")")
            }
            try rejectNonScalarKeys(value, path: path.isEmpty ? name : path + "." + name)
        }
    }
}

// MARK: - Decoding with defaults: a field left out keeps the default above.

extension KeyedDecodingContainer {
    func value<T: Decodable>(_ key: Key, _ defaultValue: T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? defaultValue
    }
}

extension BrokerConfiguration {
    enum CodingKeys: String, CodingKey, CaseIterable { case dataDir, server, log, auth, streams, links, sources, pluginsDir, pluginLimits, notifications, cluster }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = BrokerConfiguration()
        dataDir = try c.value(.dataDir, d.dataDir)
        server = try c.value(.server, d.server)
        log = try c.value(.log, d.log)
        auth = try c.value(.auth, d.auth)
        streams = try c.value(.streams, d.streams)
        links = try c.value(.links, d.links)
        sources = try c.value(.sources, d.sources)
        pluginsDir = try c.decodeIfPresent(String.self, forKey: .pluginsDir)
        pluginLimits = try c.value(.pluginLimits, d.pluginLimits)
        notifications = try c.value(.notifications, d.notifications)
        cluster = try c.decodeIfPresent(Cluster.self, forKey: .cluster)
    }
}

extension BrokerConfiguration.Notification {
    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, url, secretEnv, events, timeoutMs, backoffBaseMs, backoffCapMs, giveUpAfterMs, stableAfterMs, rejectedSummaryMs
    }
}

extension BrokerConfiguration.PluginLimits {
    enum CodingKeys: String, CodingKey, CaseIterable { case handshakeTimeoutMs, requestTimeoutMs, applyTimeoutMs }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()
        handshakeTimeoutMs = try c.value(.handshakeTimeoutMs, d.handshakeTimeoutMs)
        requestTimeoutMs = try c.value(.requestTimeoutMs, d.requestTimeoutMs)
        applyTimeoutMs = try c.value(.applyTimeoutMs, d.applyTimeoutMs)
    }
}

extension BrokerConfiguration.Server {
    enum CodingKeys: String, CodingKey, CaseIterable {
        case host, port, bodyBytesMax, entryBytesMax, requestEntriesMax, headerTimeoutMs, idleTimeoutMs, connectionsMax, inflightBodyBytesMax
        case allowUnauthenticatedRemote, tls, allowPlaintext
    }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()
        host = try c.value(.host, d.host)
        port = try c.value(.port, d.port)
        bodyBytesMax = try c.value(.bodyBytesMax, d.bodyBytesMax)
        entryBytesMax = try c.value(.entryBytesMax, d.entryBytesMax)
        requestEntriesMax = try c.value(.requestEntriesMax, d.requestEntriesMax)
        headerTimeoutMs = try c.value(.headerTimeoutMs, d.headerTimeoutMs)
        idleTimeoutMs = try c.value(.idleTimeoutMs, d.idleTimeoutMs)
        connectionsMax = try c.value(.connectionsMax, d.connectionsMax)
        inflightBodyBytesMax = try c.value(.inflightBodyBytesMax, d.inflightBodyBytesMax)
        allowUnauthenticatedRemote = try c.value(.allowUnauthenticatedRemote, d.allowUnauthenticatedRemote)
        tls = try c.decodeIfPresent(BrokerConfiguration.TLS.self, forKey: .tls)
        allowPlaintext = try c.value(.allowPlaintext, d.allowPlaintext)
    }
}

extension BrokerConfiguration.TLS {
    enum CodingKeys: String, CodingKey, CaseIterable { case certFile, keyFile, clientCAFile = "clientCaFile" }
}

extension BrokerConfiguration.Token {
    enum CodingKeys: String, CodingKey, CaseIterable { case name, role, token, tokenEnv }
}

extension BrokerConfiguration.ClientCertificate {
    enum CodingKeys: String, CodingKey, CaseIterable { case name, commonName, role }
}

extension BrokerConfiguration.Log {
    enum CodingKeys: String, CodingKey, CaseIterable { case level }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        level = try c.value(.level, Self().level)
    }
}

extension BrokerConfiguration.Auth {
    enum CodingKeys: String, CodingKey, CaseIterable { case enabled, tokens, openHealth, openMetrics, clientCertificates }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()
        enabled = try c.value(.enabled, d.enabled)
        tokens = try c.value(.tokens, d.tokens)
        openHealth = try c.value(.openHealth, d.openHealth)
        openMetrics = try c.value(.openMetrics, d.openMetrics)
        clientCertificates = try c.value(.clientCertificates, d.clientCertificates)
    }
}

extension BrokerConfiguration.Stream {
    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, segmentBytesMax, segmentAgeMsMax, compressionLevel, fsync, fsyncIntervalMs, retentionBytesMax,
             retentionAgeMsMax, retentionDropsUnconsumed, queuedAppendsMax, queuedBytesMax
    }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        segmentBytesMax = try c.decodeIfPresent(Int.self, forKey: .segmentBytesMax)
        segmentAgeMsMax = try c.decodeIfPresent(Int64.self, forKey: .segmentAgeMsMax)
        compressionLevel = try c.decodeIfPresent(Int.self, forKey: .compressionLevel)
        fsync = try c.decodeIfPresent(String.self, forKey: .fsync)
        fsyncIntervalMs = try c.decodeIfPresent(Int.self, forKey: .fsyncIntervalMs)
        retentionBytesMax = try c.decodeIfPresent(Int64.self, forKey: .retentionBytesMax)
        retentionAgeMsMax = try c.decodeIfPresent(Int64.self, forKey: .retentionAgeMsMax)
        retentionDropsUnconsumed = try c.decodeIfPresent(Bool.self, forKey: .retentionDropsUnconsumed)
        queuedAppendsMax = try c.decodeIfPresent(Int.self, forKey: .queuedAppendsMax)
        queuedBytesMax = try c.decodeIfPresent(Int.self, forKey: .queuedBytesMax)
    }
}

extension BrokerConfiguration.Link {
    enum CodingKeys: String, CodingKey, CaseIterable { case name, stream, adapter, settings, supervisor, stopOnReject, node }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        stream = try c.decode(String.self, forKey: .stream)
        adapter = try c.decode(String.self, forKey: .adapter)
        // Settings are strings for the adapter; accept YAML numbers and booleans too.
        let raw = try c.decodeIfPresent([String: SettingValue].self, forKey: .settings) ?? [:]
        settings = raw.mapValues(\.text)
        supervisor = try c.decodeIfPresent(BrokerConfiguration.Supervisor.self, forKey: .supervisor) ?? BrokerConfiguration.Supervisor()
        stopOnReject = try c.decodeIfPresent(Bool.self, forKey: .stopOnReject)
        node = try c.decodeIfPresent(String.self, forKey: .node)
    }
}

extension BrokerConfiguration.Source {
    enum CodingKeys: String, CodingKey, CaseIterable { case name, kind, stream, settings, supervisor, node }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        kind = try c.decode(String.self, forKey: .kind)
        stream = try c.decode(String.self, forKey: .stream)
        settings = (try c.decodeIfPresent([String: SettingValue].self, forKey: .settings) ?? [:]).mapValues(\.text)
        supervisor = try c.decodeIfPresent(BrokerConfiguration.Supervisor.self, forKey: .supervisor) ?? BrokerConfiguration.Supervisor()
        node = try c.decodeIfPresent(String.self, forKey: .node)
    }
}

/// A scalar adapter setting: string, number or boolean, kept as text.
struct SettingValue: Decodable {
    var text: String
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let value = try? c.decode(String.self) {
            text = value
        } else if let value = try? c.decode(Bool.self) {
            text = value ? "true" : "false"
        } else if let value = try? c.decode(Int64.self) {
            text = String(value)
        } else if let value = try? c.decode(Double.self) {
            text = String(value)
        } else {
            throw DecodingError.typeMismatch(String.self, .init(codingPath: decoder.codingPath, debugDescription: "a setting must be a string, number or boolean"))
        }
    }
}
