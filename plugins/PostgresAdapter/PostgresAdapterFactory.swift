import OrgSyncPluginAPI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Registers the PostgreSQL adapter under the name `postgres`.
public struct PostgresAdapterFactory: OrgAdapterFactory {
    public let name = "postgres"
    public let version = "0.1.0"
    /// `owner_epoch` in `orgsync_offsets`, checked under the position row's lock in each batch's transaction.
    public let fencesOwnerEpochs = true
    /// The settings of ``PostgresAdapterSettings``; anything else in a link's `settings` stops
    /// start-up (`password_env` counts as `password`).
    public let settings = AdapterSettingsDeclaration([
        .optional("host"), .optional("port"), .required("user"), .optional("password"), .required("database"),
        .optional("schema"), .optional("table_prefix"), .optional("primary_key"), .optional("connect_timeout_ms"),
        .optional("query_timeout_ms"), .optional("liveness_interval_ms"), .optional("liveness_timeout_ms"), .optional("batch_writes"),
        .optional("sslmode"), .optional("sslrootcert"), .optional("sslcert"), .optional("sslkey"), .optional("replication_origin"),
        .optional("key_column"), .optional("org_column"), .optional("ts_column"), .optional("prepared_statements"),
    ])
    /// Where `password_env` is looked up; the process environment unless a test gives its own.
    let environment: @Sendable () -> [String: String]

    public init() {
        self.environment = { ProcessInfo.processInfo.environment }
    }

    init(environment: @escaping @Sendable () -> [String: String]) {
        self.environment = environment
    }

    public func makeAdapter(_ configuration: AdapterConfiguration) throws -> any OrgAdapter {
        let settings = try PostgresAdapterSettings(configuration, environment: environment())
        // Read the TLS files now: a missing or bad one stops start-up naming its setting.
        _ = try PostgresTLSContext.make(settings.tls)
        return PostgresAdapter(linkName: configuration.linkName, settings: settings)
    }
}

/// The settings of a `postgres` link, from its `settings` table.
///
/// | setting | default | meaning |
/// | --- | --- | --- |
/// | `host` | `127.0.0.1` | server host name or address |
/// | `port` | `5432` | server TCP port |
/// | `user` | required | role to log in as |
/// | `password` | none | password; prefer `password_env` |
/// | `password_env` | none | name of an environment variable holding the password; it wins over `password` and must be set |
/// | `database` | required | database to connect to |
/// | `schema` | `public` | schema of the tables and of `orgsync_offsets` (created if missing) |
/// | `table_prefix` | empty | put before every object's name to make its table name |
/// | `primary_key` | `key` | `key`: `key TEXT PRIMARY KEY`, keys are unique across orgs; `org_key`: `PRIMARY KEY (org, key)`, for a stream that carries several orgs whose keys may collide (the shared workload does) |
/// | `connect_timeout_ms` | `10000` | bound on establishing a session (TCP connect, TLS, startup, authentication) |
/// | `query_timeout_ms` | `30000` | bound on one adapter call (a whole batch, a probe); also the server's `statement_timeout` |
/// | `liveness_interval_ms` | `500` | while a call is in flight, how often a second connection checks the server answers (`SELECT 1`); 0 turns the check off |
/// | `liveness_timeout_ms` | `1000` | how long that check may take: a server that does not answer it is dead (the call fails as a connection error), so a frozen or unreachable server is noticed within about interval + timeout whatever `query_timeout_ms` is |
/// | `sslmode` | `prefer` | `disable`, `prefer`, `require`, `verify-ca`, `verify-full`, as libpq: see ``PostgresTLSSettings`` |
/// | `sslrootcert` | none | PEM file of the CAs the server's certificate must chain to (verify-ca, verify-full) |
/// | `sslcert`, `sslkey` | none | PEM files of a client certificate and its key, both or neither |
/// | `key_column`, `org_column`, `ts_column` | `key`, `org`, `ts` | the names of the adapter's own columns (``BookkeepingColumns``): rename them when the entries carry fields with those names (a captured table's own `key` column, say), which are refused otherwise |
/// | `prepared_statements` | `true` | `false`: send every set statement unnamed (parsed and planned for each batch), for a connection pooler that cannot keep named prepared statements (PgBouncer in transaction pooling before 1.21) |
/// | `replication_origin` | `false` | `true`: tag the transactions the link applies with the replication origin `orgsync_<link>`, which a `postgres` capture source on this database skips (two-way sync without echo); needs superuser or the origin functions granted |
public struct PostgresAdapterSettings: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    /// Kept out of ``description``: settings get logged.
    public var password: String?
    public var database: String
    public var schema: String
    public var tablePrefix: String
    public var primaryKey: PrimaryKey
    /// Whether a batch writes every entry's row (what triggers on the target see) or one net
    /// write per record.
    public var batchWrites: BatchWrites = .perEntry
    public var connectTimeoutMs: Int
    public var queryTimeoutMs: Int
    /// While a call is in flight, how often a second connection checks the server; 0: never.
    public var livenessIntervalMs: Int = 500
    /// Bound on one such check.
    public var livenessTimeoutMs: Int = 1_000
    /// `sslmode`, `sslrootcert`, `sslcert`, `sslkey`.
    public var tls: PostgresTLSSettings
    /// The replication origin the link's transactions carry (`replication_origin: true`), or nil.
    public var replicationOrigin: String?
    /// The names of the columns the adapter keeps beside the fields.
    public var ownColumns: BookkeepingColumns = .standard
    /// Whether set statements whose text repeats run as named prepared statements
    /// (``PreparedStatementCache``).
    public var preparedStatements = true

    public init(
        host: String = "127.0.0.1", port: Int = 5432, user: String, password: String?, database: String,
        schema: String = "public", tablePrefix: String = "", primaryKey: PrimaryKey = .key, connectTimeoutMs: Int = 10_000, queryTimeoutMs: Int = 30_000,
        tls: PostgresTLSSettings = PostgresTLSSettings()
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.schema = schema
        self.tablePrefix = tablePrefix
        self.primaryKey = primaryKey
        self.connectTimeoutMs = connectTimeoutMs
        self.queryTimeoutMs = queryTimeoutMs
        self.tls = tls
    }

    /// Reads and checks the settings of a link; throws naming the first bad setting.
    public init(_ configuration: AdapterConfiguration, environment: [String: String]) throws(AdapterConfigurationError) {
        host = configuration.string("host", default: "127.0.0.1")
        port = try configuration.int("port", default: 5432, in: 1...65_535)
        user = try configuration.string("user")
        database = try configuration.string("database")
        schema = configuration.string("schema", default: "public")
        tablePrefix = configuration.string("table_prefix", default: "")
        let primaryKeyText = configuration.string("primary_key", default: "key")
        guard let primaryKey = PrimaryKey(rawValue: primaryKeyText) else {
            throw AdapterConfigurationError(setting: "primary_key", problem: "must be key or org_key, not \(primaryKeyText)")
        }
        self.primaryKey = primaryKey
        let batchWritesText = configuration.string("batch_writes", default: BatchWrites.perEntry.rawValue)
        guard let batchWrites = BatchWrites(rawValue: batchWritesText) else {
            throw AdapterConfigurationError(setting: "batch_writes", problem: "must be per_entry or per_record, not \(batchWritesText)")
        }
        self.batchWrites = batchWrites
        connectTimeoutMs = try configuration.int("connect_timeout_ms", default: 10_000, in: 1...3_600_000)
        queryTimeoutMs = try configuration.int("query_timeout_ms", default: 30_000, in: 1...86_400_000)
        livenessIntervalMs = try configuration.int("liveness_interval_ms", default: 500, in: 0...3_600_000)
        livenessTimeoutMs = try configuration.int("liveness_timeout_ms", default: 1_000, in: 1...3_600_000)
        tls = try PostgresTLSSettings(configuration)
        switch configuration.string("replication_origin", default: "false") {
        case "true": replicationOrigin = ChangeMapper.skippedOriginPrefix + "_" + String(PostgresSourceSettings.derivedName(configuration.linkName).dropFirst("orgsync_".count))
        case "false": replicationOrigin = nil
        case let other: throw AdapterConfigurationError(setting: "replication_origin", problem: "must be true or false, not \(other)")
        }
        switch configuration.string("prepared_statements", default: "true") {
        case "true": preparedStatements = true
        case "false": preparedStatements = false
        case let other: throw AdapterConfigurationError(setting: "prepared_statements", problem: "must be true or false, not \(other)")
        }
        password = configuration.settings["password"].flatMap { $0.isEmpty ? nil : $0 }
        if let variable = configuration.settings["password_env"], !variable.isEmpty {
            guard let value = environment[variable] else {
                throw AdapterConfigurationError(
                    setting: "password_env", problem: "names the environment variable \(variable), which is not set")
            }
            password = value
        }
        if let problem = TableMapping.identifierProblem(schema) {
            throw AdapterConfigurationError(setting: "schema", problem: problem)
        }
        if !tablePrefix.isEmpty, let problem = TableMapping.identifierProblem(tablePrefix) {
            throw AdapterConfigurationError(setting: "table_prefix", problem: problem)
        }
        ownColumns = try BookkeepingColumns(configuration, ignoringCase: false, nameProblem: TableMapping.identifierProblem)
    }

    /// How the writes of a batch reach the tables (both in one transaction, same end state).
    public enum BatchWrites: String, Sendable, Hashable {
        /// Every entry writes its row: a record written by three entries of a batch is changed
        /// three times, and row-level triggers on the target see each change.
        case perEntry = "per_entry"
        /// One net write per record per batch (upserts merged, a delete and a later write as a
        /// delete and an insert): fewer row changes, faster for records written often; triggers
        /// see only the net change.
        case perRecord = "per_record"
    }

    /// What identifies a record in a table.
    public enum PrimaryKey: String, Sendable, Hashable {
        /// `key TEXT PRIMARY KEY`: keys are unique across orgs.
        case key
        /// `PRIMARY KEY (org, key)`: the same key in two orgs is two records.
        case orgKey = "org_key"
    }

    public var description: String {
        "postgres://\(user)@\(host):\(port)/\(database) schema=\(schema) password=\(password == nil ? "none" : "<redacted>")"
            + " primary_key=\(primaryKey.rawValue) \(ownColumns.summary) batch_writes=\(batchWrites.rawValue) prepared_statements=\(preparedStatements) connect_timeout_ms=\(connectTimeoutMs) query_timeout_ms=\(queryTimeoutMs)"
            + " liveness_interval_ms=\(livenessIntervalMs) liveness_timeout_ms=\(livenessTimeoutMs) \(tls)"
    }
}
