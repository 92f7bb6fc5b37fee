#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import GRDB
import OrgSyncPluginAPI
import Synchronization

/// Makes ``SQLiteOrgAdapter``s: the embedded default target, registered as `sqlite`.
///
/// Settings of a link using it:
///
/// | setting | default | meaning |
/// | --- | --- | --- |
/// | `path` | required | database file; relative paths resolve against the broker's data directory. Its directory must exist. |
/// | `busy_timeout_ms` | `5000` | how long a write waits for another connection's lock before the batch fails as *retryable* |
/// | `journal_mode` | `wal` | `wal` or `delete` (SQLite's rollback journal) |
/// | `primary_key` | `key` | `key`: the entry's key alone identifies a record; `org_key`: the pair (org, key) does, for streams that carry several tenant orgs whose keys may collide |
/// | `key_column`, `org_column`, `ts_column` | `key`, `org`, `ts` | the names of the adapter's own columns (``BookkeepingColumns``): rename them when the entries carry fields with those names (a captured table's own `key` column, say), which are refused otherwise |
/// | `cache_kib` | `512` | SQLite's page cache for the link's connection, KiB (SQLite's own default is 2000): what a link holds while it works; given back when it stands still |
public struct SQLiteAdapterFactory: OrgAdapterFactory {
    public let name = "sqlite"
    public let version = "1.0.0"
    /// `owner_epoch` in `orgsync_offsets`, checked in each batch's transaction.
    public let fencesOwnerEpochs = true
    /// The settings in the table above; anything else in a link's `settings` stops start-up.
    public let settings = AdapterSettingsDeclaration([
        .required("path"), .optional("busy_timeout_ms"), .optional("journal_mode"), .optional("primary_key"), .optional("cache_kib"),
        .optional("key_column"), .optional("org_column"), .optional("ts_column"),
    ])

    public init() {}

    public func makeAdapter(_ configuration: AdapterConfiguration) throws -> any OrgAdapter {
        let settings = try SQLiteAdapterSettings(configuration)
        return SQLiteOrgAdapter(linkName: configuration.linkName, streamName: configuration.streamName, settings: settings)
    }
}

/// The validated settings of one ``SQLiteOrgAdapter``.
public struct SQLiteAdapterSettings: Sendable, Hashable {
    public var path: String
    public var busyTimeoutMs: Int
    public var journalModeWAL: Bool
    public var primaryKey: SQLitePrimaryKey
    /// SQLite's page cache for the connection, KiB (`PRAGMA cache_size = -cacheKiB`).
    public var cacheKiB: Int
    /// The names of the columns the adapter keeps beside the fields.
    public var ownColumns: BookkeepingColumns = .standard

    /// The default `cache_kib`: ten working links hold 5 MiB of pages, not SQLite's 20, at no
    /// measured cost to the apply rate (the leaves an upsert touches are spread over the file
    /// either way; the interior pages fit).
    public static let cacheKiBDefault = 512

    public init(
        path: String, busyTimeoutMs: Int = 5000, journalModeWAL: Bool = true, primaryKey: SQLitePrimaryKey = .key,
        cacheKiB: Int = SQLiteAdapterSettings.cacheKiBDefault
    ) {
        self.path = path
        self.busyTimeoutMs = busyTimeoutMs
        self.journalModeWAL = journalModeWAL
        self.primaryKey = primaryKey
        self.cacheKiB = cacheKiB
    }

    public init(_ configuration: AdapterConfiguration) throws(AdapterConfigurationError) {
        path = try configuration.path("path")
        busyTimeoutMs = try configuration.int("busy_timeout_ms", default: 5000, in: 0...600_000)
        switch configuration.string("journal_mode", default: "wal").lowercased() {
        case "wal": journalModeWAL = true
        case "delete": journalModeWAL = false
        case let other:
            throw AdapterConfigurationError(setting: "journal_mode", problem: "must be wal or delete, not \"\(other)\"")
        }
        let key = configuration.string("primary_key", default: "key")
        guard let primaryKey = SQLitePrimaryKey(rawValue: key) else {
            throw AdapterConfigurationError(setting: "primary_key", problem: "must be key or org_key, not \"\(key)\"")
        }
        self.primaryKey = primaryKey
        cacheKiB = try configuration.int("cache_kib", default: Self.cacheKiBDefault, in: 64...1_048_576)
        ownColumns = try BookkeepingColumns(configuration, ignoringCase: true) { name in
            SQLiteNames.isValidColumn(name) ? nil : "is not 1-63 ASCII letters, digits or _ starting with a letter or _"
        }
    }
}

/// What identifies a record in an object's table.
public enum SQLitePrimaryKey: String, Sendable, Hashable {
    /// `key TEXT PRIMARY KEY`: keys are unique across orgs (the default).
    case key
    /// `PRIMARY KEY (org, key)`: one stream carries several orgs whose keys may collide.
    case orgKey = "org_key"

    /// The primary-key columns among `own`, in order.
    func columns(_ own: BookkeepingColumns) -> [String] { self == .key ? [own.key] : [own.org, own.key] }
}

/// Applies entries to one SQLite database file, with GRDB.
///
/// ## Mapping
///
/// - One table per entry `object`, named exactly like it (quoted). An object name must be
///   1–63 ASCII letters, digits or `_`, start with a letter, and not start with `sqlite_` or
///   `orgsync_`; otherwise the entry is *rejected*.
/// - Columns `key TEXT PRIMARY KEY` (or `PRIMARY KEY (org, key)` with `primary_key = org_key`),
///   `org TEXT`, `ts TEXT`, then one column per field name ever
///   seen, added with `ALTER TABLE … ADD COLUMN` when first seen. A field name must be 1–63 ASCII
///   letters, digits or `_`, not start with a digit, not be `key`, `org` or `ts` (or the names
///   `key_column`, `org_column`, `ts_column` give those columns), and not differ
///   from another field of the same entry only by case (SQLite column names ignore case);
///   otherwise the entry is rejected.
/// - A new column's declared type comes from the first value seen: JSON string → `TEXT`,
///   integer → `INTEGER`, other number → `REAL`, boolean → `INTEGER` (0/1), array or object →
///   `TEXT` holding the value as JSON (sorted keys), null → no declared type. Values are stored
///   with the same conversion; SQLite's column affinity applies to later values of another type.
/// - `insert` inserts the row; an existing key is *rejected* with SQLite's own extended result
///   code (`1555`, SQLITE_CONSTRAINT_PRIMARYKEY). `upsert` inserts the row or updates `org`, `ts`
///   and only the fields the entry carries. `delete` removes the row (a missing row or table is
///   not an error).
///
/// ## Exactly-once
///
/// A batch is one transaction that also writes `orgsync_offsets(link, stream, applied_offset,
/// updated_at, stream_id, epoch, owner_epoch)`: the position, the stream identity it belongs to
/// and the owner epoch of the broker that applied it. Entries at or below a stored position of
/// the same identity are skipped, so re-applying a batch already committed changes nothing; a
/// position of another stream (or a later epoch) is a `positionConflict` (the link diverges);
/// one stored by a later owner is `fenced`. A table written before identities or owner epochs
/// is upgraded in place when the adapter opens (columns added in one transaction).
///
/// ## Errors
///
/// `SQLITE_BUSY`/`SQLITE_LOCKED` → retryable; a file that cannot be opened, an I/O error, a full
/// disk, a corrupt or read-only database, or a database file removed or replaced since
/// ``open()`` → connection; a constraint, type or size violation, or an unmappable name →
/// rejected, naming the entry's offset. `targetCode` is SQLite's extended result code.
public final class SQLiteOrgAdapter: OrgAdapter {
    public let linkName: String
    /// Written to `orgsync_offsets.stream` (informational; the identity is `stream_id`).
    public let streamName: String
    public let settings: SQLiteAdapterSettings
    private let state = Mutex(State())

    private struct State {
        var database: DatabaseQueue?
        /// The file the connection opened, to tell when it is removed or replaced under us.
        var fileIdentity: FileIdentity?
    }

    private struct FileIdentity: Equatable {
        var device: UInt64
        var inode: UInt64
    }

    /// The columns per table (lowercased), as committed. Only touched from inside the write
    /// transaction; cleared whenever a transaction fails (its DDL rolled back).
    private let schema = Mutex<[String: TableColumns]>([:])
    /// Prepared statements per object and op, for tables that exist as committed; at most
    /// ``preparedStatementsMax``, the least recently used go. Cleared with ``schema``.
    private let statements = PreparedStatements(capacity: SQLiteOrgAdapter.preparedStatementsMax)

    public init(linkName: String, streamName: String = "", settings: SQLiteAdapterSettings) {
        self.linkName = linkName
        self.streamName = streamName
        self.settings = settings
    }

    public func open() async throws {
        await close()
        var configuration = Configuration()
        configuration.busyMode = .timeout(TimeInterval(settings.busyTimeoutMs) / 1000)
        configuration.journalMode = settings.journalModeWAL ? .wal : .default
        configuration.label = "orgsync.sqlite.\(linkName)"
        let database: DatabaseQueue
        do {
            database = try DatabaseQueue(path: settings.path, configuration: configuration)
            // A commit must survive a power cut, or the link (whose cursor is already past it)
            // never applies those entries again. GRDB's WAL mode sets synchronous=NORMAL, which
            // does not fsync the WAL at commit: a power cut took committed batches (found by the
            // harness's power-loss scenario). FULL fsyncs the WAL at every commit; with the
            // rollback journal, EXTRA also fsyncs the directory after the journal's unlink (the
            // commit itself), which FULL leaves to chance (Tests/harness/test_powerfs.py).
            let level = settings.journalModeWAL ? "FULL" : "EXTRA"
            let cacheKiB = settings.cacheKiB
            let applied = try await database.writeWithoutTransaction { db -> Int in
                try db.execute(sql: "PRAGMA cache_size = -\(cacheKiB)")
                try db.execute(sql: "PRAGMA synchronous = \(level)")
                return try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
            }
            guard applied == (settings.journalModeWAL ? 2 : 3) else {
                try? database.close()
                throw AdapterError.connection("SQLite database \(settings.path): PRAGMA synchronous = \(level) did not take (\(applied))")
            }
            try await database.write { db in
                try db.execute(
                    sql: """
                        CREATE TABLE IF NOT EXISTS orgsync_offsets (
                            link TEXT PRIMARY KEY NOT NULL,
                            stream TEXT NOT NULL,
                            applied_offset INTEGER NOT NULL,
                            updated_at TEXT NOT NULL,
                            stream_id TEXT,
                            epoch INTEGER,
                            owner_epoch INTEGER)
                        """)
                // A table from before stream identities: add the columns (same transaction).
                let columns = Set(try Row.fetchAll(db, sql: "PRAGMA table_info(orgsync_offsets)").compactMap { ($0["name"] as String?)?.lowercased() })
                if !columns.contains("stream_id") { try db.execute(sql: "ALTER TABLE orgsync_offsets ADD COLUMN stream_id TEXT") }
                if !columns.contains("epoch") { try db.execute(sql: "ALTER TABLE orgsync_offsets ADD COLUMN epoch INTEGER") }
                if !columns.contains("owner_epoch") { try db.execute(sql: "ALTER TABLE orgsync_offsets ADD COLUMN owner_epoch INTEGER") }
            }
        } catch {
            throw Self.classify(error, offset: nil, path: settings.path)
        }
        guard let identity = Self.identity(of: settings.path) else {
            try? database.close()
            throw AdapterError.connection("SQLite database \(settings.path) vanished while it was being opened")
        }
        schema.withLock { $0 = [:] }
        statements.invalidate()
        state.withLock {
            $0.database = database
            $0.fileIdentity = identity
        }
    }

    public func apply(_ batch: EntryBatch) async throws {
        guard let lastOffset = batch.lastOffset else { return }
        let database = try checkedDatabase()
        let link = linkName
        let stream = batch.stream
        do {
            try await database.write { db in
                let stored = try Self.storedPosition(db, link: link)
                let skipThrough: Offset?
                switch StoredPositionVerdict.decide(stored: stored, batch: batch) {
                case .conflict(let reason): throw AdapterError.positionConflict(reason)
                case .fenced(let reason): throw AdapterError.fenced(reason)
                case .apply(let through): skipThrough = through
                }
                for entry in batch.entries {
                    if let skipThrough, entry.offset <= skipThrough { continue }
                    do {
                        try self.applyEntry(entry, db)
                    } catch let error as DatabaseError {
                        throw EntryFailure(offset: entry.offset, error: error)
                    }
                }
                guard Int64(exactly: lastOffset.rawValue) != nil else {
                    throw AdapterError.rejected(offset: lastOffset, "offset \(lastOffset) does not fit SQLite's INTEGER")
                }
                let next = StoredPositionVerdict.positionAfter(batch, stored: stored)
                if let next, next != stored { try Self.storePosition(next, db, link: link, stream: stream) }
            }
        } catch {
            // The transaction rolled back, and with it any table or column it created.
            schema.withLock { $0 = [:] }
            statements.invalidate()
            if let failure = error as? EntryFailure {
                throw Self.classify(failure.error, offset: failure.offset, path: settings.path)
            }
            throw Self.classify(error, offset: nil, path: settings.path)
        }
    }

    public func probe() async throws {
        let database = try checkedDatabase()
        do {
            // Reads page 1 of the file: fails on a corrupt, truncated or unreadable database.
            _ = try await database.read { db in
                try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master")
            }
        } catch {
            throw Self.classify(error, offset: nil, path: settings.path)
        }
    }

    public func appliedPosition() async throws -> AppliedPosition? {
        let database = try checkedDatabase()
        let link = linkName
        do {
            return try await database.read { db in try Self.storedPosition(db, link: link) }
        } catch {
            throw Self.classify(error, offset: nil, path: settings.path)
        }
    }

    public func setAppliedPosition(_ position: AppliedPosition?) async throws {
        let database = try checkedDatabase()
        let link = linkName
        let stream = streamName
        do {
            try await database.write { db in
                guard let position else {
                    return try db.execute(sql: "DELETE FROM orgsync_offsets WHERE link = ?", arguments: [link])
                }
                try Self.storePosition(position, db, link: link, stream: stream)
            }
        } catch {
            throw Self.classify(error, offset: nil, path: settings.path)
        }
    }

    /// This link's row of `orgsync_offsets`, checked: a value that cannot be a position is a
    /// connection failure (the link suspends rather than guess).
    static func storedPosition(_ db: Database, link: String) throws -> AppliedPosition? {
        guard let row = try Row.fetchOne(
            db, sql: "SELECT applied_offset, stream_id, epoch, owner_epoch FROM orgsync_offsets WHERE link = ?", arguments: [link])
        else { return nil }
        guard let offset = row["applied_offset"] as Int64?, offset >= 0 else {
            throw AdapterError.connection("orgsync_offsets holds an applied_offset that is not a non-negative integer for link \(link)")
        }
        let streamID = row["stream_id"] as String?
        let epoch = row["epoch"] as Int64?
        let ownerEpoch = row["owner_epoch"] as Int64? ?? 0
        guard ownerEpoch >= 0 else {
            throw AdapterError.connection("orgsync_offsets holds a negative owner_epoch for link \(link)")
        }
        switch (streamID, epoch) {
        case (nil, nil):
            return AppliedPosition(identity: nil, offset: Offset(UInt64(offset)), ownerEpoch: UInt64(ownerEpoch))
        case (let id?, let epoch?) where epoch >= 1 && !id.isEmpty:
            return AppliedPosition(
                identity: StreamIdentity(streamID: id, epoch: UInt64(epoch)), offset: Offset(UInt64(offset)), ownerEpoch: UInt64(ownerEpoch))
        default:
            throw AdapterError.connection("orgsync_offsets holds an incomplete stream identity for link \(link)")
        }
    }

    static func storePosition(_ position: AppliedPosition, _ db: Database, link: String, stream: String) throws {
        guard let offset = Int64(exactly: position.offset.rawValue) else {
            throw AdapterError.connection("position \(position) does not fit SQLite's INTEGER")
        }
        let epoch: Int64? = position.identity.map { Int64(clamping: $0.epoch) }
        guard let ownerEpoch = Int64(exactly: position.ownerEpoch) else {
            throw AdapterError.connection("owner epoch \(position.ownerEpoch) does not fit SQLite's INTEGER")
        }
        try db.execute(
            sql: """
                INSERT INTO orgsync_offsets (link, stream, applied_offset, updated_at, stream_id, epoch, owner_epoch)
                VALUES (?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?, ?, ?)
                ON CONFLICT(link) DO UPDATE SET stream = excluded.stream, applied_offset = excluded.applied_offset,
                    updated_at = excluded.updated_at, stream_id = excluded.stream_id, epoch = excluded.epoch,
                    owner_epoch = excluded.owner_epoch
                """,
            arguments: [link, stream, offset, position.identity?.streamID, epoch, ownerEpoch])
    }

    public func close() async {
        let database = state.withLock { state -> DatabaseQueue? in
            defer {
                state.database = nil
                state.fileIdentity = nil
            }
            return state.database
        }
        // Statements belong to the connection: finalized on its queue before it closes (SQLite
        // does not close a connection with statements left).
        let statements = self.statements
        try? await database?.writeWithoutTransaction { _ in statements.removeAll() }
        try? database?.close()
    }

    /// Finalizes the kept statements and lets SQLite free its page cache (on the connection's
    /// queue); both fill again with the next batches. Ten links that caught up a backlog held
    /// ~25 MiB of them.
    public func releaseMemory() async {
        guard let database = state.withLock({ $0.database }) else { return }
        let statements = self.statements
        try? await database.writeWithoutTransaction { db in
            statements.removeAll()
            db.releaseMemory()
        }
    }

    // MARK: - Applying one entry

    private func applyEntry(_ entry: Entry, _ db: Database) throws {
        if entry.op == .delete {
            let key = StatementKey(table: entry.object, op: .delete)
            guard let delete = try statements.statement(for: key, { try deleteStatement(entry, db) }) else { return }
            return try delete.statement.execute(settings.primaryKey == .key ? [.text(entry.key)] : [.text(entry.org), .text(entry.key)])
        }
        let key = StatementKey(table: entry.object, op: entry.op)
        if let write = try statements.statement(for: key, { try writeStatement(entry, db) }), let values = write.values(for: entry) {
            return try write.statement.execute(values)
        }
        // A field the table's statement does not name (or names twice): check the names, add the
        // columns, and make the statement again with them.
        try validateFieldNames(entry)
        try ensureColumns(entry.object, entry.fields, db)
        statements.remove(key)
        guard let write = try statements.statement(for: key, { try writeStatement(entry, db) }), let values = write.values(for: entry) else {
            throw AdapterError.connection("table \(entry.object): its statement does not name the fields of entry \(entry.offset) after adding them")
        }
        try write.statement.execute(values)
    }

    /// The delete statement of an entry's table; nil when the table does not exist.
    private func deleteStatement(_ entry: Entry, _ db: Database) throws -> TableStatement? {
        try validateTableName(entry)
        guard try knownColumns(of: entry.object, db, create: false) != nil else { return nil }
        let own = settings.ownColumns
        let table = SQLiteNames.quote(entry.object)
        let sql = settings.primaryKey == .key
            ? "DELETE FROM \(table) WHERE \(SQLiteNames.quote(own.key)) = ?"
            : "DELETE FROM \(table) WHERE \(SQLiteNames.quote(own.org)) = ? AND \(SQLiteNames.quote(own.key)) = ?"
        return TableStatement(statement: try SQLiteStatement(sql: sql, db), fields: [])
    }

    /// The insert or upsert statement of an entry's table, naming every field column the table
    /// has (creating the table first if it does not exist).
    private func writeStatement(_ entry: Entry, _ db: Database) throws -> TableStatement? {
        try validateTableName(entry)
        let columns = try knownColumns(of: entry.object, db, create: true) ?? .empty
        let sql = TableStatement.writeSQL(
            table: entry.object, upsert: entry.op == .upsert, fields: columns.fields, own: settings.ownColumns,
            primaryKey: settings.primaryKey)
        return TableStatement(statement: try SQLiteStatement(sql: sql, db), fields: columns.fields.map(\.name))
    }

    private func validateTableName(_ entry: Entry) throws {
        guard SQLiteNames.isValidTable(entry.object) else {
            throw AdapterError.rejected(
                offset: entry.offset,
                "object \"\(entry.object)\" cannot be mapped to a SQLite table (1-63 ASCII letters, digits or _, starting with a letter, not sqlite_* or orgsync_*)"
            )
        }
    }

    /// Rejects an entry whose field names cannot be columns of the table.
    private func validateFieldNames(_ entry: Entry) throws {
        var folded = Set<String>()
        for name in entry.fields.keys.sorted() {
            guard SQLiteNames.isValidColumn(name), !settings.ownColumns.contains(name, ignoringCase: true) else {
                let own = settings.ownColumns.names.joined(separator: "/")
                throw AdapterError.rejected(
                    offset: entry.offset,
                    "field \"\(name.prefix(80))\" cannot be mapped to a SQLite column (1-63 ASCII letters, digits or _, not starting with a digit, not \(own): rename those with key_column, org_column, ts_column)"
                )
            }
            guard folded.insert(name.lowercased()).inserted else {
                throw AdapterError.rejected(
                    offset: entry.offset, "fields differ only by case near \"\(name)\"; SQLite column names ignore case")
            }
        }
    }

    /// Entries of one object and op share one statement.
    fileprivate struct StatementKey: Hashable {
        var table: String
        var op: EntryOperation
    }

    /// Bound on ``statements``, three per table (insert, upsert, delete): a prepared upsert of a
    /// wide table holds several KiB.
    static let preparedStatementsMax = 128

    /// The lowercased columns of `table` and its field columns, creating the table when `create`
    /// is set; nil when it does not exist and `create` is not set.
    private func knownColumns(of table: String, _ db: Database, create: Bool) throws -> TableColumns? {
        let tableKey = table.lowercased()
        if let columns = schema.withLock({ $0[tableKey] }) { return columns }
        let info = try Row.fetchAll(db, sql: "PRAGMA table_info(\(SQLiteNames.quote(table)))")
        var columns = TableColumns.empty
        for row in info {
            guard let name = row["name"] as String? else { continue }
            columns.names.insert(name.lowercased())
            // A column the adapter could not have named (not a valid name, or its own) never
            // carries a field: an entry naming it is rejected before any statement runs.
            if SQLiteNames.isValidColumn(name), !settings.ownColumns.contains(name, ignoringCase: true) {
                columns.fields.append(FieldColumn(name: name, defaultSQL: row["dflt_value"] as String?))
            }
        }
        if columns.names.isEmpty {
            guard create else { return nil }
            let own = settings.ownColumns
            let (key, org, ts) = (SQLiteNames.quote(own.key), SQLiteNames.quote(own.org), SQLiteNames.quote(own.ts))
            let keyColumn = settings.primaryKey == .key ? "\(key) TEXT PRIMARY KEY NOT NULL" : "\(key) TEXT NOT NULL"
            let tableKey = settings.primaryKey == .key ? "" : ", PRIMARY KEY (\(org), \(key))"
            try db.execute(
                sql: "CREATE TABLE \(SQLiteNames.quote(table)) (\(keyColumn), \(org) TEXT NOT NULL, \(ts) TEXT NOT NULL\(tableKey))")
            columns = TableColumns(names: Set(own.names.map { $0.lowercased() }), fields: [])
        } else {
            // A table made under the other primary_key setting would silently merge or split records.
            let primaryKey = info.filter { ($0["pk"] as Int? ?? 0) > 0 }.sorted { ($0["pk"] as Int? ?? 0) < ($1["pk"] as Int? ?? 0) }
                .compactMap { ($0["name"] as String?)?.lowercased() }
            guard primaryKey == settings.primaryKey.columns(settings.ownColumns).map({ $0.lowercased() }) else {
                throw AdapterError.connection(
                    "table \(table) has primary key (\(primaryKey.joined(separator: ", "))), but the link's primary_key setting is \(settings.primaryKey.rawValue)")
            }
        }
        schema.withLock { $0[tableKey] = columns }
        return columns
    }

    /// Adds a column for each of `fields` the table does not have, typed by its value.
    private func ensureColumns(_ table: String, _ fields: [String: JSONValue], _ db: Database) throws {
        let names = fields.keys.sorted()
        var columns = try knownColumns(of: table, db, create: true) ?? .empty
        if names.contains(where: { !columns.names.contains($0.lowercased()) }) {
            // Before adding a column, look again: another writer may have added it since we cached
            // the table, and adding it twice would fail the entry for nothing.
            let tableKey = table.lowercased()
            schema.withLock { _ = $0.removeValue(forKey: tableKey) }
            columns = try knownColumns(of: table, db, create: true) ?? columns
        }
        var added = false
        for name in names where !columns.names.contains(name.lowercased()) {
            let type = SQLiteValues.declaredType(fields[name] ?? .null)
            try db.execute(sql: "ALTER TABLE \(SQLiteNames.quote(table)) ADD COLUMN \(SQLiteNames.quote(name)) \(type)")
            columns.names.insert(name.lowercased())
            columns.fields.append(FieldColumn(name: name, defaultSQL: nil))
            added = true
        }
        if added {
            let tableKey = table.lowercased()
            schema.withLock { $0[tableKey] = columns }
        }
    }

    // MARK: - Connection state

    private func checkedDatabase() throws(AdapterError) -> DatabaseQueue {
        let (database, identity) = state.withLock { ($0.database, $0.fileIdentity) }
        guard let database else {
            throw AdapterError.connection("SQLite adapter of link \(linkName) is not open")
        }
        guard let identity, Self.identity(of: settings.path) == identity else {
            throw AdapterError.connection(
                "SQLite database \(settings.path) was removed or replaced since it was opened")
        }
        return database
    }

    private static func identity(of path: String) -> FileIdentity? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    // MARK: - Error classification

    private struct EntryFailure: Error {
        var offset: Offset
        var error: DatabaseError
    }

    /// Maps any error from GRDB to an ``AdapterError``. `offset` is the entry being applied, if any.
    static func classify(_ error: any Error, offset: Offset?, path: String) -> any Error {
        if let error = error as? AdapterError { return error }
        if error is CancellationError { return error }
        guard let error = error as? DatabaseError else {
            return AdapterError.connection("SQLite database \(path): \(error)")
        }
        let code = String(error.extendedResultCode.rawValue)
        let message = "SQLite error \(error.extendedResultCode.rawValue): \(error.message ?? "no message")"
        switch error.resultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return AdapterError.retryable(message, targetCode: code)
        case .SQLITE_CONSTRAINT, .SQLITE_MISMATCH, .SQLITE_TOOBIG, .SQLITE_RANGE, .SQLITE_ERROR:
            // Statement-level errors are about the entry being applied; without one, they are
            // about the database itself (its schema, say) and the link cannot go on.
            if let offset { return AdapterError.rejected(offset: offset, message, targetCode: code) }
            return AdapterError.connection("\(message) (database \(path))", targetCode: code)
        default:
            // CANTOPEN, IOERR, FULL, CORRUPT, NOTADB, READONLY, PERM, AUTH, NOMEM, …: the target
            // is not usable now.
            return AdapterError.connection("\(message) (database \(path))", targetCode: code)
        }
    }
}

/// Which names map safely to SQLite identifiers, and how to quote them.
enum SQLiteNames {
    static func isValidTable(_ name: String) -> Bool {
        guard isIdentifier(name), let first = name.utf8.first, isLetter(first) else { return false }
        let lower = name.lowercased()
        return !lower.hasPrefix("sqlite_") && !lower.hasPrefix("orgsync_")
    }

    static func isValidColumn(_ name: String) -> Bool {
        guard isIdentifier(name), let first = name.utf8.first else { return false }
        return !isDigit(first)
    }

    /// 1–63 ASCII letters, digits and underscores.
    static func isIdentifier(_ name: String) -> Bool {
        let bytes = name.utf8
        guard (1...63).contains(bytes.count) else { return false }
        return bytes.allSatisfy { isLetter($0) || isDigit($0) || $0 == UInt8(ascii: "_") }
    }

    static func quote(_ name: String) -> String {
        guard name.utf8.contains(UInt8(ascii: "\"")) else { return "\"" + name + "\"" }
        return "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    private static func isLetter(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}

/// How JSON field values become SQLite values and column types.
enum SQLiteValues {
    static func declaredType(_ value: JSONValue) -> String {
        switch value {
        case .string, .array, .object: "TEXT"
        case .int, .bool: "INTEGER"
        case .double: "REAL"
        case .null: ""
        }
    }

    static func binding(_ value: JSONValue) -> SQLiteBinding {
        switch value {
        case .null: .null
        case .bool(let flag): .integer(flag ? 1 : 0)
        case .int(let number): .integer(number)
        case .double(let number): .real(number)
        case .string(let text): .text(text)
        case .array, .object: .text(json(value))
        }
    }

    static func json(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // A JSONValue parsed from JSON always encodes; fall back to JSON null rather than trap.
        guard let data = try? encoder.encode(value) else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }
}

/// The adapter's prepared statements, the least recently used evicted past `capacity`. Only
/// touched on the database's queue (inside its write closures, and when the adapter closes):
/// GRDB serializes those, and a statement belongs to that connection. ``invalidate()`` may come
/// from anywhere: the statements are dropped at the next use, on the queue.
private final class PreparedStatements: @unchecked Sendable {
    let capacity: Int
    private var entries: [SQLiteOrgAdapter.StatementKey: (statement: TableStatement, lastUse: UInt64)] = [:]
    private var uses: UInt64 = 0
    private let invalidated = Atomic<Bool>(false)

    init(capacity: Int) { self.capacity = max(1, capacity) }

    /// The statement for `key`, prepared by `prepare` when it is not kept (nil: nothing to run).
    func statement(
        for key: SQLiteOrgAdapter.StatementKey, _ prepare: () throws -> TableStatement?
    ) throws -> TableStatement? {
        dropIfInvalidated()
        uses &+= 1
        if let kept = entries[key] {
            entries[key] = (kept.statement, uses)
            return kept.statement
        }
        guard let statement = try prepare() else { return nil }
        if entries.count >= capacity, let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            entries[oldest] = nil
        }
        entries[key] = (statement, uses)
        return statement
    }

    /// Drops the statement of `key` (its table gained columns).
    func remove(_ key: SQLiteOrgAdapter.StatementKey) {
        dropIfInvalidated()
        entries[key] = nil
    }

    private func dropIfInvalidated() {
        if invalidated.exchange(false, ordering: .acquiringAndReleasing) { entries.removeAll() }
    }

    /// Drops every statement at the next use (a rolled-back transaction may have taken the
    /// columns they name with it).
    func invalidate() { invalidated.store(true, ordering: .releasing) }

    /// Finalizes every statement now (on the queue, before the connection closes).
    func removeAll() {
        entries.removeAll()
        invalidated.store(false, ordering: .releasing)
    }
}
