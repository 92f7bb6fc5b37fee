import Foundation

extension BrokerConfiguration {
    /// `cluster:` — present, it makes the broker a member of a cluster whose streams live in NATS
    /// JetStream (replicated file streams) instead of this machine's segment log.
    public struct Cluster: Sendable, Codable, Hashable {
        /// This member's name, unique in the cluster (letters, digits, `-`, `_`).
        public var node: String
        /// NATS servers of the cluster, `nats://host:port`, `tls://host:port` or `host:port`; the
        /// first that answers is used, the others when it fails.
        public var natsUrls: [String]
        /// JetStream replicas of every stream: 3 (an acknowledged append is on a quorum of 2)
        /// unless the NATS cluster is smaller.
        public var replicas: Int = 3
        /// How long a member's lease on a link lasts unless renewed, ms.
        public var leaseMs: Int = 10_000
        /// How long one JetStream call may take before it fails, ms.
        public var requestTimeoutMs: Int = 5_000
        /// TLS to the NATS servers (nats-server's `tls {}`); a `tls://` URL turns it on with
        /// the system's roots. Nil and no `tls://`: plain TCP.
        public var tls: ClusterTLS?
        /// NATS user (nats-server's `authorization { user, password }`), with exactly one of
        /// `password` and `password_env`.
        public var user: String?
        /// The user's password, inline. Prefer `password_env`.
        public var password: String?
        public var passwordEnv: String?
        /// A NATS token (`authorization { token }`), instead of a user: inline, or (preferred)
        /// `token_env`.
        public var token: String?
        public var tokenEnv: String?
        /// Reach a NATS server that is not on this machine without TLS. Refused unless set: only
        /// for a network that is private.
        public var allowPlaintext: Bool = false

        public init(node: String, natsUrls: [String]) {
            self.node = node
            self.natsUrls = natsUrls
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case node, natsUrls, replicas, leaseMs, requestTimeoutMs, tls, user, password, passwordEnv, token, tokenEnv, allowPlaintext
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            node = try c.decode(String.self, forKey: .node)
            natsUrls = try c.decode([String].self, forKey: .natsUrls)
            replicas = try c.value(.replicas, 3)
            leaseMs = try c.value(.leaseMs, 10_000)
            requestTimeoutMs = try c.value(.requestTimeoutMs, 5_000)
            tls = try c.decodeIfPresent(ClusterTLS.self, forKey: .tls)
            user = try c.decodeIfPresent(String.self, forKey: .user)
            password = try c.decodeIfPresent(String.self, forKey: .password)
            passwordEnv = try c.decodeIfPresent(String.self, forKey: .passwordEnv)
            token = try c.decodeIfPresent(String.self, forKey: .token)
            tokenEnv = try c.decodeIfPresent(String.self, forKey: .tokenEnv)
            allowPlaintext = try c.value(.allowPlaintext, false)
        }

        /// `cluster.tls`: how a member checks the NATS servers and, when they check clients,
        /// which certificate it shows. Paths are relative to where `orgsync serve` runs.
        public struct ClusterTLS: Sendable, Codable, Hashable {
            /// PEM CA certificates the servers' certificates must be signed by; nil: the system's.
            public var caFile: String?
            /// PEM client certificate chain, for servers that verify clients (`verify: true`).
            public var certFile: String?
            /// PEM private key of `cert_file`.
            public var keyFile: String?

            public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
                self.caFile = caFile
                self.certFile = certFile
                self.keyFile = keyFile
            }

            enum CodingKeys: String, CodingKey, CaseIterable { case caFile, certFile, keyFile }
        }

        /// Whether the connections to NATS are TLS: `tls:` is set, or a URL is `tls://`.
        public var usesTLS: Bool { tls != nil || natsUrls.contains { $0.hasPrefix("tls://") } }

        /// What the member authenticates to NATS with, secrets resolved from the environment.
        public enum Credentials: Sendable, Hashable {
            case none
            case user(String, password: String)
            case token(String)
        }

        /// The credentials, with `password_env`/`token_env` read from `environment` (the
        /// configuration's one `_env` rule).
        ///
        /// - Throws: ``ConfigurationError`` naming the field: a user without a password, both a
        ///   user and a token, a secret set twice or its variable unset.
        public func credentials(environment: [String: String]) throws -> Credentials {
            func fail(_ field: String, _ problem: String) -> ConfigurationError { ConfigurationError(field: "cluster.\(field)", problem: problem) }
            func secret(_ inline: String?, _ variable: String?, _ name: String) throws -> String? {
                switch (inline, variable) {
                case (nil, nil): return nil
                case (let value?, nil):
                    guard !value.isEmpty else { throw fail(name, "must not be empty") }
                    return value
                case (nil, let variable?):
                    return try BrokerConfiguration.environmentValue(of: variable, field: "cluster.\(name)_env", environment: environment)
                default: throw fail(name, "set one of \(name) and \(name)_env, not both")
                }
            }
            let password = try secret(self.password, passwordEnv, "password")
            let token = try secret(self.token, tokenEnv, "token")
            switch (user, password, token) {
            case (nil, nil, nil): return .none
            case (let user?, let password?, nil):
                guard !user.isEmpty else { throw fail("user", "must not be empty") }
                return .user(user, password: password)
            case (nil, nil, let token?): return .token(token)
            case (_, _, _?): throw fail("token", "a token is instead of a user and password: set one or the other")
            case (_?, nil, nil): throw fail("user", "needs password or password_env")
            case (nil, _?, nil): throw fail("password", "needs user")
            }
        }

        /// Bounds of the settings.
        static let replicasRange = 1...5
        static let leaseMsRange = 1_000...600_000
        static let requestTimeoutMsRange = 100...600_000

        /// One NATS server's address.
        public struct Address: Sendable, Hashable {
            public var host: String
            public var port: Int
        }

        /// `nats://host:port`, `tls://host:port`, `host:port` or `host` (port 4222).
        public static func address(_ url: String) -> Address? {
            var rest = Substring(url)
            for scheme in ["nats://", "tls://"] where rest.hasPrefix(scheme) { rest = rest.dropFirst(scheme.count) }
            guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@") else { return nil }
            let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, let host = parts.first, !host.isEmpty else { return nil }
            guard parts.count == 2 else { return Address(host: String(host), port: 4222) }
            guard let port = Int(parts[1]), (1...65535).contains(port) else { return nil }
            return Address(host: String(host), port: port)
        }

        /// The servers' addresses, in the configured order.
        public var addresses: [Address] { natsUrls.compactMap(Self.address) }

        func validate(environment: [String: String]) throws {
            func fail(_ field: String, _ problem: String) -> ConfigurationError { ConfigurationError(field: "cluster.\(field)", problem: problem) }
            guard !node.isEmpty, node.utf8.count <= 64,
                  node.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) })
            else { throw fail("node", "use letters, digits, '-', '_' (at most 64)") }
            guard !natsUrls.isEmpty else { throw fail("nats_urls", "needs at least one NATS server") }
            for (i, url) in natsUrls.enumerated() where Self.address(url) == nil {
                throw fail("nats_urls[\(i)]", "must be nats://host:port, tls://host:port, host:port or host (no user or path: credentials go in cluster.user and cluster.password_env, or cluster.token_env)")
            }
            let credentials = try credentials(environment: environment)
            if let tls {
                for (field, path) in [("ca_file", tls.caFile), ("cert_file", tls.certFile), ("key_file", tls.keyFile)] where path?.isEmpty == true {
                    throw fail("tls.\(field)", "must name a PEM file, or be left out")
                }
                if (tls.certFile == nil) != (tls.keyFile == nil) {
                    throw fail(tls.certFile == nil ? "tls.cert_file" : "tls.key_file", "a client certificate needs both cert_file and key_file")
                }
            }
            if !usesTLS, !allowPlaintext, let remote = addresses.first(where: { !BrokerConfiguration.isLoopback(host: $0.host) }) {
                let what = credentials == .none ? "entries" : "entries and the NATS credentials"
                throw fail("tls", """
                    NATS server \(remote.host) is not on this machine and cluster.tls is not set: \(what) would \
                    cross the network in clear text. Set cluster.tls (ca_file for a private CA) with TLS on the \
                    nats-servers, or, on a network that is private, set cluster.allow_plaintext: true
                    """)
            }
            guard Self.replicasRange.contains(replicas) else { throw fail("replicas", "must be \(Self.replicasRange.lowerBound)...\(Self.replicasRange.upperBound)") }
            guard Self.leaseMsRange.contains(leaseMs) else {
                throw fail("lease_ms", "must be \(Self.leaseMsRange.lowerBound)...\(Self.leaseMsRange.upperBound) (1 s to 10 min)")
            }
            guard Self.requestTimeoutMsRange.contains(requestTimeoutMs) else {
                throw fail("request_timeout_ms", "must be \(Self.requestTimeoutMsRange.lowerBound)...\(Self.requestTimeoutMsRange.upperBound)")
            }
        }
    }
}

extension BrokerConfiguration {
    /// Where links and sources run. Outside a cluster none names a member (`node`). In one, a
    /// link or source that names a member is pinned to it (a SQLite file, a database reached
    /// only from that machine); one that does not is leased: the cluster places it on a live
    /// member and moves it when that one goes.
    func validatePlacement() throws {
        func fail(_ field: String, _ problem: String) -> ConfigurationError { ConfigurationError(field: field, problem: problem) }
        let placed = links.enumerated().map { ("links[\($0.offset)]", $0.element.node) }
            + sources.enumerated().map { ("sources[\($0.offset)]", $0.element.node) }
        for (field, node) in placed {
            if cluster == nil, let node {
                throw fail("\(field).node", "names member \(node), but this broker is not in a cluster (no cluster: section)")
            }
        }
        // Leases are keyed by link name, and by `source.<name>` for a source.
        let sourceKeys = Set(leasedSources.map { leaseKey(source: $0.name) })
        for (i, link) in links.enumerated() where link.node == nil && sourceKeys.contains(link.name) {
            throw fail("links[\(i)].name", "\(link.name) is the lease key of the leased source of that name: rename one")
        }
    }

    /// The key of a leased source's lease: `source.` and its name (a leased link's is its name).
    public func leaseKey(source: String) -> String { "source." + source }

    /// The keys of every lease the cluster places: the leased links' and sources'.
    public var leaseKeys: [String] { leasedLinks.map(\.name) + leasedSources.map { leaseKey(source: $0.name) } }

    /// What this broker may run: outside a cluster everything; in one, the links and sources
    /// pinned to its node and the leased ones (which run here only while it holds their lease).
    /// The streams are everyone's.
    public var hostedHere: BrokerConfiguration {
        guard let node = cluster?.node else { return self }
        var hosted = self
        hosted.links = links.filter { $0.node == node || $0.node == nil }
        hosted.sources = sources.filter { $0.node == node || $0.node == nil }
        return hosted
    }

    /// The links the cluster places by lease (none outside a cluster).
    public var leasedLinks: [Link] {
        guard cluster != nil else { return [] }
        return links.filter { $0.node == nil }
    }

    /// The capture sources the cluster places by lease (none outside a cluster).
    public var leasedSources: [Source] {
        guard cluster != nil else { return [] }
        return sources.filter { $0.node == nil }
    }

    /// The cluster's settings, and its streams' names.
    func validateCluster(_ cluster: Cluster, environment: [String: String]) throws {
        try cluster.validate(environment: environment)
        var jetStreamNames: [String: String] = [:]
        for (i, stream) in streams.enumerated() {
            // JetStream names cannot hold '.': it becomes '_', and two names may then meet.
            let mapped = stream.name.replacingOccurrences(of: ".", with: "_")
            if let other = jetStreamNames[mapped] {
                throw ConfigurationError(field: "streams[\(i)].name", problem: "\(stream.name) and \(other) are one JetStream stream in a cluster ('.' becomes '_'): rename one")
            }
            jetStreamNames[mapped] = stream.name
        }
        // Cursors share one bucket under `<stream>.<name>`: a link `x.crm` of stream `events` and a
        // link `crm` of stream `events.x` would share one cursor.
        var cursorKeys: [String: String] = [:]
        for (field, stream, cursor) in cursorNames {
            let key = stream + "." + cursor
            if let other = cursorKeys[key] {
                throw ConfigurationError(field: field, problem: "its cursor is kept as \(key) in the cluster, as \(other)'s is: rename one")
            }
            cursorKeys[key] = field
        }
    }

    /// Every cursor a stream keeps, with the field that makes it: its links', and its capture
    /// sources' position hints (`source.<name>`).
    var cursorNames: [(field: String, stream: String, cursor: String)] {
        links.enumerated().map { ("links[\($0.offset)].name", $0.element.stream, $0.element.name) }
            + sources.enumerated().map { ("sources[\($0.offset)].name", $0.element.stream, "source." + $0.element.name) }
    }

    /// The cursors of `stream` this configuration makes (``cursorNames``).
    public func cursorNames(of stream: String) -> Set<String> {
        Set(cursorNames.filter { $0.stream == stream }.map(\.cursor))
    }
}
