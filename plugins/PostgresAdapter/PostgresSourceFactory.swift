import Logging
import OrgSyncPluginAPI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Makes `kind: postgres` sources (``PostgresSource``).
public struct PostgresSourceFactory: ChangeSourceFactory {
    public let kind = "postgres"
    public let settings = AdapterSettingsDeclaration([
        .optional("host"), .optional("port"), .required("user"), .optional("password"), .required("database"),
        .optional("publication"), .optional("slot"), .optional("tables"), .optional("snapshot"), .optional("poll_ms"), .optional("heartbeat_ms"),
        .optional("round_changes_max"), .optional("connect_timeout_ms"), .optional("query_timeout_ms"),
        .optional("sslmode"), .optional("sslrootcert"), .optional("sslcert"), .optional("sslkey"),
    ])
    let environment: @Sendable () -> [String: String]

    public init() {
        self.environment = { ProcessInfo.processInfo.environment }
    }

    init(environment: @escaping @Sendable () -> [String: String]) {
        self.environment = environment
    }

    public func makeSource(_ configuration: AdapterConfiguration) throws -> any ChangeSource {
        let settings = try PostgresSourceSettings(configuration, environment: environment())
        _ = try PostgresTLSContext.make(settings.connection.tls)
        return PostgresSource(name: configuration.linkName, settings: settings)
    }
}

/// The settings of a `postgres` source, from its `settings` table.
///
/// | setting | default | meaning |
/// | --- | --- | --- |
/// | `host`, `port`, `user`, `password`/`password_env`, `database`, `connect_timeout_ms`, `query_timeout_ms`, `sslmode`, `sslrootcert`, `sslcert`, `sslkey` | as the `postgres` adapter | the source database's connection; the role needs the `REPLICATION` attribute (or superuser) |
/// | `publication` | `orgsync_<source>` | the publication to decode; created `FOR TABLE <tables>` (inserts, updates, deletes) when missing |
/// | `slot` | `orgsync_<source>` | the logical replication slot (pgoutput); created when missing, it holds the position |
/// | `tables` | none | comma-separated `schema.table` or `table` (in `public`): what a created publication holds, and what an existing one must hold |
/// | `snapshot` | `initial` | `initial`: before streaming, copy the published tables' rows (one consistent snapshot, as upserts; resumed by key after a crash); `never`: only changes from the slot's creation on |
/// | `poll_ms` | `200` | how long a caught-up source waits before asking again |
/// | `heartbeat_ms` | `10000` | how often an idle source writes a heartbeat so its slot can advance |
/// | `round_changes_max` | `10000` | changes one round reads (whole transactions: a larger one is read whole) |
struct PostgresSourceSettings: Sendable, Hashable {
    var connection: PostgresAdapterSettings
    var publication: String
    var slot: String
    var tables: [Table]
    var snapshot: SnapshotMode
    /// Where the initial snapshot's LSN is kept (`<data dir>/sources/<source>/snapshot.lsn`).
    var snapshotLSNFile: String?
    var pollMs: Int
    var heartbeatMs: Int
    var roundChangesMax: Int
    /// Most entries and bytes of one append (below the stream's own limits per append).
    var appendEntriesMax = 5_000
    var appendBytesMax = 4 << 20

    /// PostgreSQL's limit on a slot name, in bytes (NAMEDATALEN - 1).
    static let slotNameBytesMax = 63

    enum SnapshotMode: String, Sendable, Hashable {
        case initial, never
    }

    struct Table: Sendable, Hashable, CustomStringConvertible {
        var schema: String
        var name: String
        var description: String { schema + "." + name }
        var quoted: String { TableMapping.quoted(schema) + "." + TableMapping.quoted(name) }
    }

    init(_ configuration: AdapterConfiguration, environment: [String: String]) throws(AdapterConfigurationError) {
        connection = try PostgresAdapterSettings(configuration, environment: environment)
        let derived = Self.derivedName(configuration.linkName)
        publication = configuration.string("publication", default: derived)
        if let problem = TableMapping.identifierProblem(publication) {
            throw AdapterConfigurationError(setting: "publication", problem: problem)
        }
        slot = configuration.string("slot", default: derived)
        guard !slot.isEmpty, slot.utf8.count <= Self.slotNameBytesMax,
              slot.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F })
        else {
            throw AdapterConfigurationError(setting: "slot", problem: "must be 1–\(Self.slotNameBytesMax) lower-case letters, digits or underscores (PostgreSQL's rule for slot names), not \"\(slot)\"")
        }
        tables = []
        for item in configuration.string("tables", default: "").split(separator: ",") {
            let text = String(item.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
            guard !text.isEmpty else { continue }
            let parts = text.split(separator: ".", maxSplits: 1).map(String.init)
            let table = parts.count == 2 ? Table(schema: parts[0], name: parts[1]) : Table(schema: "public", name: text)
            for part in [table.schema, table.name] {
                if let problem = TableMapping.identifierProblem(part) {
                    throw AdapterConfigurationError(setting: "tables", problem: "\"\(text)\": \(problem)")
                }
            }
            tables.append(table)
        }
        let snapshotText = configuration.string("snapshot", default: SnapshotMode.initial.rawValue)
        guard let snapshot = SnapshotMode(rawValue: snapshotText) else {
            throw AdapterConfigurationError(setting: "snapshot", problem: "must be initial or never, not \(snapshotText)")
        }
        self.snapshot = snapshot
        snapshotLSNFile = configuration.dataDirectory + "/sources/" + configuration.linkName + "/snapshot.lsn"
        pollMs = try configuration.int("poll_ms", default: 200, in: 1...3_600_000)
        heartbeatMs = try configuration.int("heartbeat_ms", default: 10_000, in: 100...86_400_000)
        roundChangesMax = try configuration.int("round_changes_max", default: 10_000, in: 1...10_000_000)
    }

    /// `orgsync_` and the source's name in lower case, other characters as `_`: a valid slot
    /// and publication name.
    static func derivedName(_ source: String) -> String {
        let body = source.lowercased().unicodeScalars.map { scalar -> Character in
            let c = scalar.value
            return (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) ? Character(scalar) : "_"
        }
        return String(("orgsync_" + String(body)).prefix(slotNameBytesMax))
    }
}
