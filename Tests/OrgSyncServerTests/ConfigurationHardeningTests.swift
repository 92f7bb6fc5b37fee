import Foundation
import OrgSyncNotifications
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
@testable import OrgSyncBroker
@testable import OrgSyncServer
import PostgresAdapter
import SQLiteAdapter
import Testing

/// Issue 12, configuration rows: every numeric field has a range checked at load, naming the
/// field; adapters' settings are declared and checked; a remote host needs auth; relative paths
/// stay in the data directory; YAML errors say where; the example's defaults are the code's.
@Suite struct ConfigurationHardeningTests {
    static func fieldOfError(_ yaml: String, environment: [String: String] = [:]) -> String? {
        do {
            _ = try BrokerConfiguration.parse(yaml: yaml, environment: environment)
            return nil
        } catch let error as ConfigurationError {
            return error.field
        } catch {
            return "unexpected \(error)"
        }
    }

    static let nearTwoTo64 = "18446744073709551615"
    static let int64Max = "9223372036854775807"

    /// (a field's YAML, the field the error must name). Every numeric field, past each end.
    static let outOfRange: [(String, String)] = [
        ("server: { port: 65536 }", "server.port"),
        ("server: { port: -1 }", "server.port"),
        ("server: { body_bytes_max: 1000 }", "server.body_bytes_max"),
        ("server: { body_bytes_max: \(int64Max) }", "server.body_bytes_max"),
        ("server: { entry_bytes_max: 10 }", "server.entry_bytes_max"),
        ("server: { request_entries_max: 0 }", "server.request_entries_max"),
        ("server: { request_entries_max: \(int64Max) }", "server.request_entries_max"),
        ("plugin_limits: { apply_timeout_ms: 0 }", "plugin_limits.apply_timeout_ms"),
        ("plugin_limits: { apply_timeout_ms: \(int64Max) }", "plugin_limits.apply_timeout_ms"),
        ("plugin_limits: { request_timeout_ms: 99 }", "plugin_limits.request_timeout_ms"),
        ("plugin_limits: { handshake_timeout_ms: 3600001 }", "plugin_limits.handshake_timeout_ms"),
        ("streams: [ { name: e, segment_bytes_max: 100 } ]", "streams[0].segment_bytes_max"),
        ("streams: [ { name: e, segment_bytes_max: \(int64Max) } ]", "streams[0].segment_bytes_max"),
        ("streams: [ { name: e, segment_age_ms_max: 0 } ]", "streams[0].segment_age_ms_max"),
        ("streams: [ { name: e, segment_age_ms_max: \(int64Max) } ]", "streams[0].segment_age_ms_max"),
        ("streams: [ { name: e, compression_level: -2 } ]", "streams[0].compression_level"),
        ("streams: [ { name: e, compression_level: 10 } ]", "streams[0].compression_level"),
        ("streams: [ { name: e, fsync: interval, fsync_interval_ms: 0 } ]", "streams[0].fsync_interval_ms"),
        ("streams: [ { name: e, fsync: interval, fsync_interval_ms: \(int64Max) } ]", "streams[0].fsync_interval_ms"),
        ("streams: [ { name: e, retention_bytes_max: -1 } ]", "streams[0].retention_bytes_max"),
        ("streams: [ { name: e, retention_age_ms_max: -1 } ]", "streams[0].retention_age_ms_max"),
        ("streams: [ { name: e, retention_age_ms_max: \(int64Max) } ]", "streams[0].retention_age_ms_max"),
        ("streams: [ { name: e, queued_appends_max: 0 } ]", "streams[0].queued_appends_max"),
        ("streams: [ { name: e, queued_appends_max: \(int64Max) } ]", "streams[0].queued_appends_max"),
        ("streams: [ { name: e, queued_bytes_max: 10 } ]", "streams[0].queued_bytes_max"),
        ("streams: [ { name: e, queued_bytes_max: \(int64Max) } ]", "streams[0].queued_bytes_max"),
    ] + supervisorOutOfRange

    static let supervisorOutOfRange: [(String, String)] = [
        ("probe_threshold", "0"), ("probe_threshold", "1001"),
        ("verify_interval_ms", "0"), ("verify_interval_ms", int64Max), ("verify_interval_ms", nearTwoTo64),
        ("verify_window_ms", int64Max),
        ("backoff_base_ms", "0"), ("backoff_base_ms", int64Max), ("backoff_base_ms", nearTwoTo64),
        ("backoff_cap_ms", int64Max), ("backoff_cap_ms", nearTwoTo64),
        ("jitter_ratio", "1"), ("jitter_ratio", "-0.1"),
        ("flap_limit", "-1"), ("flap_limit", "1001"),
        ("flap_window_ms", "0"), ("flap_window_ms", int64Max),
        ("hold_down_ms", "0"), ("hold_down_ms", int64Max), ("hold_down_ms", nearTwoTo64),
        ("retryable_attempts_max", "0"), ("retryable_attempts_max", "101"),
        ("retryable_backoff_base_ms", "0"), ("retryable_backoff_base_ms", int64Max),
        ("batch_entries_max", "0"), ("batch_entries_max", "1000001"),
        ("sync_log_records_max", "0"), ("sync_log_records_max", int64Max),
        ("dead_letters_max", "0"), ("dead_letters_max", int64Max),
    ].map { field, value in
        ("""
        streams: [ { name: e } ]
        links: [ { name: l, stream: e, adapter: sqlite, settings: { path: l.sqlite }, supervisor: { \(field): \(value) } } ]
        """, "links[0].supervisor.\(field)")
    }

    static let cluster = "cluster: { node: a, nats_urls: [\"nats://127.0.0.1:4222\"] }"

    /// (YAML, the field the error must name): the cluster section and what a cluster member's
    /// links, sources and streams must say.
    static let badClusters: [(String, String)] = [
        ("cluster: { node: \"a b\", nats_urls: [\"127.0.0.1\"] }", "cluster.node"),
        ("cluster: { node: a, nats_urls: [] }", "cluster.nats_urls"),
        ("cluster: { node: a, nats_urls: [\"nats://u:p@127.0.0.1:4222\"] }", "cluster.nats_urls[0]"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1:70000\"] }", "cluster.nats_urls[0]"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], replicas: 0 }", "cluster.replicas"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], lease_ms: 10 }", "cluster.lease_ms"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], request_timeout_ms: \(int64Max) }", "cluster.request_timeout_ms"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], leader: a }", "cluster.leader"),
        // NATS on another machine in clear text, unless said so; credentials and TLS files.
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\", \"nats://10.0.0.2:4222\"] }", "cluster.tls"),
        ("cluster: { node: a, nats_urls: [\"nats-1.example.net\"], user: u, password: p }", "cluster.tls"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], user: u }", "cluster.user"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], user: \"\", password: p }", "cluster.user"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], password: p }", "cluster.password"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], user: u, password: p, password_env: P }", "cluster.password"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], user: u, password: p, token: t }", "cluster.token"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], token_env: ORGSYNC_TEST_UNSET_TOKEN }", "cluster.token_env"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], tls: { cert_file: c.pem } }", "cluster.tls.key_file"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], tls: { key_file: k.pem } }", "cluster.tls.cert_file"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], tls: { ca_file: \"\" } }", "cluster.tls.ca_file"),
        ("cluster: { node: a, nats_urls: [\"127.0.0.1\"], tls: { verify: true } }", "cluster.tls.verify"),
        // Cursors share one bucket under `<stream>.<name>`: two streams' may not meet there.
        ("\(cluster)\nstreams: [ { name: events }, { name: events.x } ]\nlinks: [ { name: x.crm, stream: events, adapter: sqlite, settings: { path: a.sqlite } }, { name: crm, stream: events.x, adapter: sqlite, settings: { path: b.sqlite } } ]", "links[1].name"),
        ("\(cluster)\nstreams: [ { name: events }, { name: events.x } ]\nlinks: [ { name: x.source.crm, stream: events, adapter: sqlite, settings: { path: a.sqlite } } ]\nsources: [ { name: crm, kind: postgres, stream: events.x, settings: { host: h, database: d, user: u, tables: t } } ]", "sources[0].name"),
        ("\(cluster)\nstreams: [ { name: a.b }, { name: a_b } ]", "streams[1].name"),
        ("streams: [ { name: e } ]\nlinks: [ { name: l, stream: e, adapter: sqlite, node: a, settings: { path: x.sqlite } } ]", "links[0].node"),
        ("streams: [ { name: e } ]\nsources: [ { name: s, kind: postgres, stream: e, node: a, settings: { host: h, database: d, user: u, tables: t } } ]", "sources[0].node"),
        // A leased source's lease is keyed `source.<name>`: a leased link may not take that name.
        ("\(cluster)\nstreams: [ { name: e }, { name: f } ]\nlinks: [ { name: source.s, stream: f, adapter: sqlite, settings: { path: x.sqlite } } ]\nsources: [ { name: s, kind: postgres, stream: e, settings: { host: h, database: d, user: u, tables: t } } ]", "links[0].name"),
    ]

    @Test(arguments: badClusters)
    func aClusterMistakeIsRefusedNamingItsField(yaml: String, field: String) {
        #expect(Self.fieldOfError("auth: { enabled: false }\n" + yaml + "\n") == field, "\(yaml)")
    }

    @Test func aClusterMemberRunsItsPinnedLinksAndMayRunTheLeasedOnes() throws {
        let configuration = try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            cluster: { node: b, nats_urls: ["nats://10.0.0.1:4222", "10.0.0.2:4223", "n3"], allow_plaintext: true }
            streams: [ { name: e }, { name: f } ]
            links:
              - { name: one, stream: e, adapter: sqlite, node: a, settings: { path: one.sqlite } }
              - { name: two, stream: e, adapter: sqlite, node: b, settings: { path: two.sqlite } }
              - { name: three, stream: e, adapter: sqlite, settings: { path: /srv/three.sqlite } }
              - { name: source.crm, stream: f, adapter: sqlite, node: a, settings: { path: four.sqlite } }
            sources:
              - { name: crm, kind: postgres, stream: e, settings: { host: h, database: d, user: u, tables: t } }
              - { name: erp, kind: postgres, stream: e, node: a, settings: { host: h, database: d, user: u, tables: t } }
              - { name: hr, kind: postgres, stream: e, node: b, settings: { host: h, database: d, user: u, tables: t } }
            """)
        let cluster = try #require(configuration.cluster)
        #expect(cluster.replicas == 3 && cluster.leaseMs == 10_000, "R3 by default")
        #expect(cluster.addresses == [.init(host: "10.0.0.1", port: 4222), .init(host: "10.0.0.2", port: 4223), .init(host: "n3", port: 4222)])
        #expect(configuration.hostedHere.links.map(\.name) == ["two", "three"], "its pinned link and the leased one")
        #expect(configuration.leasedLinks.map(\.name) == ["three"])
        #expect(configuration.links.count == 4, "every member knows every link")
        #expect(configuration.hostedHere.sources.map(\.name) == ["crm", "hr"], "its pinned source and the leased one")
        #expect(configuration.leasedSources.map(\.name) == ["crm"])
        #expect(configuration.leaseKeys == ["three", "source.crm"], "a pinned link may have a source's lease key: it holds no lease")
    }

    @Test func aMemberReachesNATSOverTLSWithCredentialsFromTheEnvironment() throws {
        let environment = ["ORGSYNC_NATS_PASSWORD": "s3cret-pw"]
        let configuration = try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            cluster:
              node: a
              nats_urls: ["tls://nats-1.example.net:4222", "nats-2.example.net"]
              tls: { ca_file: ca.pem, cert_file: member.pem, key_file: member-key.pem }
              user: orgsync
              password_env: ORGSYNC_NATS_PASSWORD
            """, environment: environment)
        let cluster = try #require(configuration.cluster)
        #expect(cluster.usesTLS)
        #expect(cluster.addresses == [.init(host: "nats-1.example.net", port: 4222), .init(host: "nats-2.example.net", port: 4222)])
        #expect(try cluster.credentials(environment: environment) == .user("orgsync", password: "s3cret-pw"))
        #expect(cluster.tls == .init(caFile: "ca.pem", certFile: "member.pem", keyFile: "member-key.pem"))

        // A tls:// URL alone turns TLS on (the system's roots); a token instead of a user.
        let token = try #require(try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            cluster: { node: a, nats_urls: ["tls://10.0.0.1:4222"], token: a-token-of-nats }
            """).cluster)
        #expect(token.usesTLS && token.tls == nil)
        #expect(try token.credentials(environment: [:]) == .token("a-token-of-nats"))

        // On this machine, plain TCP and no credentials are the default.
        let local = try #require(try BrokerConfiguration.parse(yaml: "auth: { enabled: false }\n\(Self.cluster)\n").cluster)
        #expect(!local.usesTLS)
        #expect(try local.credentials(environment: [:]) == .none)
    }

    @Test func anUnsetPasswordVariableIsNamedAndNoSecretIsShown() {
        do {
            _ = try BrokerConfiguration.parse(yaml: """
                auth: { enabled: false }
                cluster: { node: a, nats_urls: ["127.0.0.1"], user: orgsync, password_env: ORGSYNC_NATS_PASSWORD }
                """, environment: ["OTHER": "s3cret-pw"])
            Issue.record("an unset password_env was taken")
        } catch {
            #expect("\(error)".contains("ORGSYNC_NATS_PASSWORD") && "\(error)".contains("cluster.password_env"), "\(error)")
            #expect(!"\(error)".contains("s3cret-pw"))
        }
    }

    @Test(arguments: outOfRange)
    func aValueOutOfRangeIsRefusedNamingItsField(yaml: String, field: String) {
        #expect(Self.fieldOfError("auth: { enabled: false }\n" + yaml + "\n") == field, "\(yaml)")
    }

    static let notifySecret = "whsec_" + Data((0..<32).map { UInt8($0) }).base64EncodedString()

    /// (a `notifications[0]` entry's fields, the field the error must name).
    static let badNotifications: [(String, String)] = [
        ("name: ops, url: 'ftp://h/x', secret_env: S", "notifications[0].url"),
        ("name: ops, url: 'http://', secret_env: S", "notifications[0].url"),
        ("name: ops, url: 'http://h/x', secret_env: MISSING", "notifications[0].secret_env"),
        ("name: ops, url: 'http://h/x', secret_env: NOT_WHSEC", "notifications[0].secret_env"),
        ("name: ops, url: 'http://h/x', secret_env: SHORT", "notifications[0].secret_env"),
        ("name: ops, url: 'http://h/x', secret_env: S, events: [link.exploded]", "notifications[0].events[0]"),
        ("name: ops, url: 'http://h/x', secret_env: S, events: []", "notifications[0].events"),
        ("name: ops, url: 'http://h/x', secret_env: S, timeout_ms: 99", "notifications[0].timeout_ms"),
        ("name: ops, url: 'http://h/x', secret_env: S, backoff_base_ms: 0", "notifications[0].backoff_base_ms"),
        ("name: ops, url: 'http://h/x', secret_env: S, backoff_base_ms: 5000, backoff_cap_ms: 4000", "notifications[0].backoff_cap_ms"),
        ("name: ops, url: 'http://h/x', secret_env: S, give_up_after_ms: \(nearTwoTo64)", "notifications[0].give_up_after_ms"),
        ("name: ops, url: 'http://h/x', secret_env: S, rejected_summary_ms: -1", "notifications[0].rejected_summary_ms"),
        ("name: 'a/b', url: 'http://h/x', secret_env: S", "notifications[0].name"),
        ("name: ops, url: 'http://h/x', secret_env: S, retries: 3", "notifications[0].retries"),
    ]

    /// One `_env` rule for every field that reads the environment: the variable must be set and
    /// not empty, and the error names the field.
    @Test func everyEnvFieldNeedsItsVariableSetAndNotEmpty() {
        let link = """
            auth: { enabled: false }
            streams: [ { name: e } ]
            links: [ { name: l, stream: e, adapter: sqlite, settings: { path: l.sqlite, path_env: V } } ]
            """
        let token = """
            auth: { enabled: true, tokens: [ { name: t, role: admin, token_env: V } ] }
            streams: [ { name: e } ]
            """
        let notification = """
            auth: { enabled: false }
            streams: [ { name: e } ]
            notifications: [ { name: ops, url: 'http://h/x', secret_env: V } ]
            """
        for (yaml, field) in [(link, "links[0].settings.path_env"), (token, "auth.tokens[0].token_env"),
                              (notification, "notifications[0].secret_env")] {
            #expect(Self.fieldOfError(yaml, environment: [:]) == field, "unset: \(field)")
            #expect(Self.fieldOfError(yaml, environment: ["V": ""]) == field, "empty: \(field)")
        }
    }

    /// The supervisor's settings are typed fields: a typo is an unknown field, a string where a
    /// number belongs is a type error, both named with their path.
    @Test func supervisorSettingsAreTypedFieldsNamedInErrors() throws {
        func link(_ supervisor: String) -> String {
            """
            auth: { enabled: false }
            streams: [ { name: e } ]
            links: [ { name: l, stream: e, adapter: sqlite, settings: { path: l.sqlite }, supervisor: { \(supervisor) } } ]
            """
        }
        #expect(Self.fieldOfError(link("probe_treshold: 3")) == "links[0].supervisor.probe_treshold")
        #expect(Self.fieldOfError(link("hold_down_ms: soon")) == "links[0].supervisor.hold_down_ms")
        #expect(Self.fieldOfError(link("jitter_ratio: [1]")) == "links[0].supervisor.jitter_ratio")
        let config = try BrokerConfiguration.parse(yaml: link("probe_threshold: 7, hold_down_ms: 5000, jitter_ratio: 0.5"), environment: [:])
        let supervisor = try config.supervisorConfiguration(for: config.links[0])
        #expect(supervisor.probeThreshold == 7)
        #expect(supervisor.holdDownMs == 5000)
        #expect(supervisor.jitterRatio == 0.5)
        #expect(supervisor.flapLimit == LinkSupervisorConfiguration().flapLimit, "an unset setting keeps its default")
    }

    /// `sources[]`: fields checked like a link's, its kind and settings against the registry's
    /// source factories, and the stream cursor its position hint takes kept free.
    @Test func sourcesAreCheckedNamingTheField() throws {
        func yaml(_ source: String, links: String = "[]") -> String {
            "auth: { enabled: false }\nstreams: [ { name: e } ]\nlinks: \(links)\nsources: [ { \(source) } ]\n"
        }
        let good = "name: crm, kind: postgres, stream: e, settings: { user: u, database: d, password_env: PW }"
        #expect(Self.fieldOfError(yaml(good + ", colour: blue")) == "sources[0].colour")
        #expect(Self.fieldOfError(yaml("name: crm, kind: postgres, stream: nope")) == "sources[0].stream")
        #expect(Self.fieldOfError(yaml(good + ", supervisor: { probe_treshold: 3 }"), environment: ["PW": "x"]) == "sources[0].supervisor.probe_treshold")
        #expect(Self.fieldOfError(yaml(good), environment: [:]) == "sources[0].settings.password_env", "the variable must be set")
        #expect(Self.fieldOfError(yaml(good, links: "[ { name: source.crm, stream: e, adapter: sqlite, settings: { path: x } } ]"),
                                  environment: ["PW": "x"]) == "sources[0].name")
        let config = try BrokerConfiguration.parse(yaml: yaml(good + ", supervisor: { probe_threshold: 5 }"), environment: ["PW": "x"])
        #expect(config.sources.first?.kind == "postgres")
        #expect(try config.supervisorConfiguration(config.sources[0].supervisor, stopOnReject: nil).probeThreshold == 5)
        // Kind and settings are the factory's to judge.
        let registry = PluginRegistry(builtins: [], sources: [PostgresSourceFactory()], logger: Logger(label: "test"))
        #expect(throws: Never.self) { try config.validateAdapterSettings(registry: registry) }
        for (source, field) in [("name: crm, kind: mysql, stream: e", "sources[0].kind"),
                                ("name: crm, kind: postgres, stream: e, settings: { user: u, database: d, slto: x }", "sources[0].settings.slto"),
                                ("name: crm, kind: postgres, stream: e, settings: { user: u }", "sources[0].settings.database")] {
            let bad = try BrokerConfiguration.parse(yaml: yaml(source), environment: [:])
            do {
                try bad.validateAdapterSettings(registry: registry)
                Issue.record("accepted: \(source)")
            } catch {
                #expect(error.field == field, "\(source): \(error)")
            }
        }
    }

    @Test(arguments: badNotifications)
    func aBadNotificationIsRefusedNamingItsFieldAndNeverItsSecret(fields: String, field: String) {
        let environment = ["S": Self.notifySecret, "NOT_WHSEC": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "SHORT": "whsec_YWJj"]
        let yaml = "auth: { enabled: false }\nnotifications: [ { \(fields) } ]\n"
        #expect(Self.fieldOfError(yaml, environment: environment) == field, "\(fields)")
        do {
            _ = try BrokerConfiguration.parse(yaml: yaml, environment: environment)
        } catch {
            #expect(!"\(error)".contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") && !"\(error)".contains(Self.notifySecret))
        }
    }

    @Test func aGoodNotificationGivesItsSettingsAndTwoWithOneNameAreRefused() throws {
        let environment = ["S": Self.notifySecret]
        let config = try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            notifications:
              - { name: ops, url: "https://hooks.example.com/x", secret_env: S, events: [link.suspended, entry.rejected], backoff_cap_ms: 2000, backoff_base_ms: 2000 }
            """, environment: environment)
        let settings = try config.notificationSettings(environment: environment)
        #expect(settings.count == 1)
        #expect(settings.first?.events == [.linkSuspended, .entryRejected])
        #expect(settings.first?.secret == (0..<32).map { UInt8($0) })
        #expect(settings.first?.backoffBaseMs == 2000 && settings.first?.backoffCapMs == 2000)
        #expect(settings.first?.giveUpAfterMs == NotificationSettings.defaultGiveUpAfterMs)
        #expect(Self.fieldOfError("""
            auth: { enabled: false }
            notifications:
              - { name: ops, url: "http://h/x", secret_env: S }
              - { name: ops, url: "http://h/y", secret_env: S }
            """, environment: environment) == "notifications[1].name")
    }

    /// The edges that are allowed stay allowed (0 where a field allows it, each range's ends).
    @Test func theEdgesOfEachRangeAreAccepted() throws {
        let config = try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            server: { port: 0, body_bytes_max: \(BrokerConfiguration.bodyBytesMaxLimit), inflight_body_bytes_max: \(BrokerConfiguration.bodyBytesMaxLimit), request_entries_max: 1000000 }
            streams:
              - { name: a, compression_level: -1, retention_bytes_max: 0, retention_age_ms_max: 0, fsync: interval, fsync_interval_ms: 60000 }
              - { name: b, compression_level: 9, segment_age_ms_max: \(LogConfiguration.durationMsMax) }
            links:
              - name: l
                stream: a
                adapter: sqlite
                settings: { path: l.sqlite }
                supervisor: { flap_limit: 0, jitter_ratio: 0, hold_down_ms: \(LinkSupervisorConfiguration.durationMsMax), backoff_cap_ms: \(LinkSupervisorConfiguration.durationMsMax) }
            """)
        #expect(try config.supervisorConfiguration(for: config.links[0]).holdDownMs == LinkSupervisorConfiguration.durationMsMax)
        #expect(try config.logConfiguration(for: config.streams[0]).compressionLevel == nil)
    }

    // MARK: - A remote host with auth off

    @Test(arguments: ["0.0.0.0", "192.168.1.10", "::", "example.org"])
    func aRemoteHostWithAuthOffIsRefused(host: String) {
        let field = Self.fieldOfError("auth: { enabled: false }\nserver: { host: \"\(host)\" }\n")
        #expect(field == "server.host")
    }

    @Test func aRemoteHostWithAuthOffNeedsTheExplicitFlag() throws {
        let config = try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            server: { host: 0.0.0.0, allow_unauthenticated_remote: true, allow_plaintext: true }
            """)
        #expect(config.server.allowUnauthenticatedRemote)
        for host in ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"] {
            #expect(Self.fieldOfError("auth: { enabled: false }\nserver: { host: \"\(host)\" }\n") == nil, "\(host)")
        }
        let tokens = "auth: { tokens: [ { name: a, role: admin, token: 0123456789abcdef } ] }\n"
        #expect(Self.fieldOfError(tokens + "server: { host: 0.0.0.0, allow_plaintext: true }\n") == nil, "auth on: any host")
    }

    // MARK: - A remote host without TLS

    @Test(arguments: ["0.0.0.0", "192.168.1.10", "::", "example.org"])
    func aRemoteHostWithoutTLSIsRefused(host: String) throws {
        let tokens = "auth: { tokens: [ { name: a, role: admin, token: 0123456789abcdef } ] }\n"
        #expect(Self.fieldOfError(tokens + "server: { host: \"\(host)\" }\n") == "server.tls")
        #expect(Self.fieldOfError(tokens + "server: { host: \"\(host)\", allow_plaintext: true }\n") == nil)
        #expect(Self.fieldOfError(tokens + "server: { host: \"\(host)\", tls: { cert_file: c.pem, key_file: k.pem } }\n") == nil)
        for loopback in ["127.0.0.1", "localhost", "::1"] {
            #expect(Self.fieldOfError(tokens + "server: { host: \"\(loopback)\" }\n") == nil, "\(loopback)")
        }
    }

    @Test func tlsAndClientCertificateFieldsAreChecked() throws {
        let tokens = "auth: { tokens: [ { name: a, role: admin, token: 0123456789abcdef } ] }\n"
        #expect(Self.fieldOfError(tokens + "server: { tls: { cert_file: c.pem } }\n") == "server.tls.key_file")
        #expect(Self.fieldOfError(tokens + "server: { tls: { cert_file: c.pem, key_file: \"\" } }\n") == "server.tls.key_file")
        #expect(Self.fieldOfError(tokens + "server: { tls: { cert_file: c.pem, key_file: k.pem, ca: x } }\n") == "server.tls.ca")
        let listed = "  client_certificates: [ { name: ops, common_name: ops.test, role: admin } ]\n"
        #expect(Self.fieldOfError("auth:\n" + listed + "server: { tls: { cert_file: c.pem, key_file: k.pem } }\n")
                == "auth.client_certificates", "a listed certificate needs client_ca_file")
        let withCA = "server: { tls: { cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem } }\n"
        let config = try BrokerConfiguration.parse(yaml: "auth:\n" + listed + withCA)
        #expect(config.auth.clientCertificates == [.init(name: "ops", commonName: "ops.test", role: .admin)])
        #expect(config.server.tls == .init(certFile: "c.pem", keyFile: "k.pem", clientCAFile: "ca.pem"))
        let twice = "  client_certificates: [ { name: a, common_name: x, role: admin }, { name: b, common_name: x, role: produce } ]\n"
        #expect(Self.fieldOfError("auth:\n" + twice + withCA) == "auth.client_certificates[1].common_name")
    }

    // MARK: - Adapter settings

    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    struct UndeclaredFactory: OrgAdapterFactory {
        let name = "legacy"
        let version = "1"
        func makeAdapter(_ configuration: AdapterConfiguration) throws -> any OrgAdapter {
            throw AdapterConfigurationError(setting: "x", problem: "not for this test")
        }
    }

    struct DeclaredFactory: OrgAdapterFactory {
        let name = "declared"
        let version = "1"
        let settings = AdapterSettingsDeclaration([.required("user"), .optional("password"), .family("header.")])
        func makeAdapter(_ configuration: AdapterConfiguration) throws -> any OrgAdapter {
            throw AdapterConfigurationError(setting: "x", problem: "not for this test")
        }
    }

    static func settingsError(adapter: String, settings: String, environment: [String: String] = [:]) throws -> ConfigurationError? {
        let config = try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            links: [ { name: l, stream: events, adapter: \(adapter), settings: \(settings) } ]
            """, environment: environment)
        let registry = PluginRegistry(builtins: [SQLiteAdapterFactory(), UndeclaredFactory(), DeclaredFactory()], logger: logger)
        do {
            try config.validateAdapterSettings(registry: registry)
            return nil
        } catch {
            return error
        }
    }

    @Test func anUnknownAdapterSettingStopsStartUpNamingIt() throws {
        let error = try #require(try Self.settingsError(adapter: "sqlite", settings: "{ path: x.sqlite, primary_kye: org_key }"))
        #expect(error.field == "links[0].settings.primary_kye")
        #expect(error.description.contains("primary_key"), "the message lists the known settings: \(error)")
        #expect(try Self.settingsError(adapter: "sqlite", settings: "{ path: x.sqlite, primary_key: org_key, busy_timeout_ms: 10 }") == nil)
    }

    @Test func aMissingRequiredSettingIsNamed() throws {
        let error = try #require(try Self.settingsError(adapter: "sqlite", settings: "{ primary_key: org_key }"))
        #expect(error.field == "links[0].settings.path")
    }

    @Test func envFormsCountAsTheirBaseNameAndFamiliesMatchByPrefix() throws {
        let environment = ["SECRET": "s", "WHO": "me"]
        #expect(try Self.settingsError(adapter: "declared", settings: "{ user_env: WHO, password_env: SECRET, header.X-Tenant: t }",
                                       environment: environment) == nil)
        let error = try #require(try Self.settingsError(adapter: "declared", settings: "{ user: me, pasword_env: SECRET }",
                                                        environment: environment))
        #expect(error.field == "links[0].settings.pasword_env")
    }

    /// What start-up says of a link `l` on `adapter`, leased or (with `node`) pinned, in a cluster.
    static func leasedLinkError(adapter: String, node: String?, registry: PluginRegistry) throws -> ConfigurationError? {
        let config = try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            cluster: { node: a, nats_urls: ["127.0.0.1"] }
            streams: [ { name: events } ]
            links: [ { name: l, stream: events, adapter: \(adapter)\(node.map { ", node: \($0)" } ?? ""), settings: { path: l.sqlite } } ]
            """)
        do {
            try config.validateAdapterSettings(registry: registry)
            return nil
        } catch {
            return error
        }
    }

    @Test func aLeasedLinkNeedsAPluginThatStoresOwnerEpochs() throws {
        func error(protocolVersion: Int, node: String?) throws -> ConfigurationError? {
            let plugin = ProcessAdapterFactory(
                manifest: PluginManifest(name: "old", version: "1", protocolVersion: protocolVersion, command: ["/bin/true"]),
                directory: "/tmp", logger: Self.logger)
            return try Self.leasedLinkError(adapter: "old", node: node, registry: PluginRegistry(builtins: [plugin], logger: Self.logger))
        }
        let refused = try #require(try error(protocolVersion: 2, node: nil))
        #expect(refused.field == "links[0].adapter" && refused.description.contains("needs protocol 3"), "\(refused)")
        #expect(try error(protocolVersion: 2, node: "a") == nil, "a link pinned to a member may use it")
        #expect(try error(protocolVersion: 3, node: nil) == nil)
    }

    /// The same for adapters compiled in: one that keeps no owner epoch at its target (the
    /// webhook adapter; here one that declares nothing) serves only pinned links.
    @Test func aLeasedLinkNeedsAnAdapterThatStoresOwnerEpochs() throws {
        let registry = PluginRegistry(builtins: [UndeclaredFactory(), SQLiteAdapterFactory()], logger: Self.logger)
        let refused = try #require(try Self.leasedLinkError(adapter: "legacy", node: nil, registry: registry))
        #expect(refused.field == "links[0].adapter" && refused.description.contains("does not store owner epochs"), "\(refused)")
        #expect(try Self.leasedLinkError(adapter: "legacy", node: "a", registry: registry) == nil, "a link pinned to a member may use it")
        #expect(try Self.leasedLinkError(adapter: "sqlite", node: nil, registry: registry) == nil, "SQLite stores owner epochs")
    }

    @Test func aFactoryThatDeclaresNothingAcceptsAnything() throws {
        #expect(try Self.settingsError(adapter: "legacy", settings: "{ anything: 1, at_all: two }") == nil)
        let unknown = try #require(try Self.settingsError(adapter: "nope", settings: "{}"))
        #expect(unknown.field == "links[0].adapter")
    }

    @Test func anUnknownSettingStopsTheBrokerBeforeAnyStreamOpens() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-settings-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            links: [ { name: l, stream: events, adapter: sqlite, settings: { path: l.sqlite, primary_kye: org_key } } ]
            """)
        let registry = PluginRegistry(builtins: [SQLiteAdapterFactory()], logger: Self.logger)
        #expect(throws: ConfigurationError.self) {
            _ = try Broker(configuration: config, dataDirectory: directory, metrics: BrokerMetrics(), logger: Self.logger, registry: registry)
        }
        #expect(!FileManager.default.fileExists(atPath: directory + "/streams"), "nothing was opened")
    }

    // MARK: - Paths stay in the data directory

    @Test(arguments: ["../../x.sqlite", "../x.sqlite", "a/../../x.sqlite", "./../x"])
    func aRelativeSQLitePathThatLeavesTheDataDirectoryIsRefused(path: String) async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-path-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try BrokerConfiguration.parse(yaml: """
            auth: { enabled: false }
            links: [ { name: l, stream: events, adapter: sqlite, settings: { path: "\(path)" } } ]
            """)
        let registry = PluginRegistry(builtins: [SQLiteAdapterFactory()], logger: Self.logger)
        do {
            let broker = try Broker(configuration: config, dataDirectory: directory, metrics: BrokerMetrics(), logger: Self.logger, registry: registry)
            await broker.close()
            Issue.record("\(path) was accepted")
        } catch let error as ConfigurationError {
            #expect(error.field == "links[0].settings.path")
        }
    }

    @Test func pathsInsideTheDataDirectoryAndAbsolutePathsAreAccepted() throws {
        for path in ["demo.sqlite", "sub/../demo.sqlite", "./a/b.sqlite", "/tmp/elsewhere.sqlite"] {
            let configuration = AdapterConfiguration(linkName: "l", streamName: "s", settings: ["path": path], dataDirectory: "/data")
            #expect(throws: Never.self, "\(path)") { _ = try SQLiteAdapterFactory().makeAdapter(configuration) }
        }
    }

    // MARK: - YAML syntax errors say where

    @Test func aYAMLSyntaxErrorNamesFileLineAndColumn() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-yaml-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/broken.yaml"
        try "auth:\n  enabled: false\nserver: { port: 7070\nlog: { level: info }\n".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try BrokerConfiguration.load(path: path, environment: [:])
            Issue.record("broken YAML was accepted")
        } catch let error as ConfigurationError {
            #expect(error.description.range(of: #"broken\.yaml:\d+:\d+: not valid YAML"#, options: .regularExpression) != nil,
                    "\(error)")
        }
    }

    // MARK: - The example's documented defaults are the code's

    /// Every `default N` the example documents for a supervisor or stream field, and every
    /// value it sets, is the code's default: the docs cannot drift from the code again.
    /// The default compiled into the binary is the documented copy, byte for byte (both are
    /// edited together: `cp data/orgsync.example.yaml Sources/OrgSyncServer/Embedded/`), and it
    /// loads.
    @Test func theEmbeddedDefaultIsTheDocumentedExample() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let documented = try String(contentsOfFile: root.appendingPathComponent("data/orgsync.example.yaml").path, encoding: .utf8)
        #expect(BrokerConfiguration.embeddedDefaultYAML == documented,
                "data/orgsync.example.yaml and Sources/OrgSyncBroker/Embedded/orgsync.example.yaml differ")
        let configuration = try BrokerConfiguration.parse(yaml: BrokerConfiguration.embeddedDefaultYAML)
        #expect(configuration.streams.map(\.name) == ["events"])
        #expect(configuration.links.map(\.name) == ["demo"])
    }

    @Test func theExampleDocumentsTheCodesDefaults() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOfFile: root.appendingPathComponent("data/orgsync.example.yaml").path, encoding: .utf8)
        let supervisor = LinkSupervisorConfiguration()
        let log = LogConfiguration()
        let server = BrokerConfiguration.Server()
        let plugins = BrokerConfiguration.PluginLimits()
        let codeDefaults: [String: String] = [
            "links.probe_threshold": "\(supervisor.probeThreshold)",
            "links.verify_interval_ms": "\(supervisor.verifyIntervalMs)",
            "links.verify_window_ms": "\(supervisor.verifyWindowMs)",
            "links.backoff_base_ms": "\(supervisor.backoffBaseMs)",
            "links.backoff_cap_ms": "\(supervisor.backoffCapMs)",
            "links.jitter_ratio": "\(supervisor.jitterRatio)",
            "links.flap_limit": "\(supervisor.flapLimit)",
            "links.flap_window_ms": "\(supervisor.flapWindowMs)",
            "links.hold_down_ms": "\(supervisor.holdDownMs)",
            "links.retryable_attempts_max": "\(supervisor.retryableAttemptsMax)",
            "links.retryable_backoff_base_ms": "\(supervisor.retryableBackoffBaseMs)",
            "links.batch_entries_max": "\(supervisor.batchEntriesMax)",
            "links.sync_log_records_max": "\(supervisor.syncLogRecordsMax)",
            "links.dead_letters_max": "\(supervisor.deadLettersMax)",
            "streams.segment_bytes_max": "\(log.segmentBytesMax)",
            "streams.segment_age_ms_max": "\(log.segmentAgeMsMax)",
            "streams.compression_level": "\(log.compressionLevel.map { Int($0) } ?? -1)",
            "streams.queued_appends_max": "\(log.queuedAppendsMax)",
            "streams.queued_bytes_max": "\(log.queuedBytesMax)",
            "server.port": "\(server.port)",
            "server.body_bytes_max": "\(server.bodyBytesMax)",
            "server.entry_bytes_max": "\(server.entryBytesMax)",
            "server.request_entries_max": "\(server.requestEntriesMax)",
            "server.allow_unauthenticated_remote": "\(server.allowUnauthenticatedRemote)",
            "server.header_timeout_ms": "\(server.headerTimeoutMs)",
            "server.idle_timeout_ms": "\(server.idleTimeoutMs)",
            "server.connections_max": "\(server.connectionsMax)",
            "server.inflight_body_bytes_max": "\(server.inflightBodyBytesMax)",
            "plugin_limits.handshake_timeout_ms": "\(plugins.handshakeTimeoutMs)",
            "plugin_limits.request_timeout_ms": "\(plugins.requestTimeoutMs)",
            "plugin_limits.apply_timeout_ms": "\(plugins.applyTimeoutMs)",
            "notifications.timeout_ms": "\(NotificationSettings.defaultTimeoutMs)",
            "notifications.backoff_base_ms": "\(NotificationSettings.defaultBackoffBaseMs)",
            "notifications.backoff_cap_ms": "\(NotificationSettings.defaultBackoffCapMs)",
            "notifications.give_up_after_ms": "\(NotificationSettings.defaultGiveUpAfterMs)",
            "notifications.stable_after_ms": "\(NotificationSettings.defaultStableAfterMs)",
            "notifications.rejected_summary_ms": "\(NotificationSettings.defaultRejectedSummaryMs)",
        ]
        // `name: value` lines, commented out or not (the supervisor block is commented out).
        let pattern = #/^[ \t#]*([a-z_]+):[ \t]+([-0-9.]+|true|false)[ \t]*(#.*)?$/#
        // Under the top-level section each is in (`backoff_base_ms` is in two).
        let section = #/^(?:# )?([a-z_]+):([ \t].*)?$/#
        var documented: [String: String] = [:]
        var current = ""
        for line in text.split(separator: "\n") {
            if let match = line.wholeMatch(of: section) { current = String(match.1) }
            guard let match = line.wholeMatch(of: pattern) else { continue }
            documented[current + "." + String(match.1)] = String(match.2)
        }
        for (field, value) in codeDefaults.sorted(by: { $0.key < $1.key }) {
            let shown = try #require(documented[field], "data/orgsync.example.yaml does not document \(field)")
            #expect(shown == value, "data/orgsync.example.yaml shows \(field): \(shown), the code's default is \(value)")
        }
    }
}
