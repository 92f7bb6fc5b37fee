import Logging
import NIOCore
import OrgSyncPluginAPI
import PostgresNIO

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A capture source's initial copy (`snapshot: initial`): every row of the published tables,
/// read in one `REPEATABLE READ` transaction (one consistent snapshot), appended as upserts
/// before streaming starts.
///
/// The slot exists before the snapshot is taken, so every change committed after it is both in
/// the slot and possibly in the snapshot: the stream replays those transactions after the
/// snapshot's rows, with inserts as upserts up to the snapshot's LSN, and the target converges
/// to the source however the two overlap.
///
/// Snapshot rows record the position `(commit 0, change <table index>)` — below any LSN — and
/// `snapshot: true`. A snapshot cut short (a crash, a lost connection) resumes in a new
/// snapshot from the table it was in, after the last key the stream holds (tables in name
/// order, rows in key order), so no row is appended twice; a table keyed by `REPLICA IDENTITY
/// FULL` has no order to resume by and is read again from its start.
struct PostgresSnapshot {
    let sourceName: String
    let publication: String
    let chunk: CaptureChunk
    let logger: Logger

    /// The commit position of snapshot rows.
    static let commit: UInt64 = 0

    /// Where a snapshot cut short resumes: the table (index in name order) and the key of the
    /// last row appended from it.
    struct Resume: Sendable, Hashable {
        var table: Int
        var afterKey: String?
    }

    /// One published table: its columns as the stream maps them, and what orders its rows.
    struct Table {
        var relation: PgOutputRelation
        /// The key columns with their SQL types, in key order; empty for REPLICA IDENTITY FULL.
        var orderColumns: [(name: String, type: String)]
    }

    /// Reads and appends; returns the rows appended and the snapshot's LSN (every transaction
    /// committed at or before it may be in the snapshot).
    func run(
        _ connection: PostgresConnection, resume: Resume?, into sink: any CaptureSink, started: @Sendable (UInt64) async -> Void
    ) async throws -> (rows: Int, lsn: UInt64) {
        let tables = try await publishedTables(connection)
        _ = try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger).collect()
        do {
            // The first statement takes the snapshot; the WAL position read in it is at or after it.
            var lsnText: String?
            var startedMicros: Int64 = 0
            let rows = try await connection.query(
                "SELECT pg_current_wal_lsn()::text, ((extract(epoch FROM now()) - 946684800) * 1000000)::bigint", logger: logger)
            for try await (text, micros) in rows.decode((String, Int64).self) { (lsnText, startedMicros) = (text, micros) }
            guard let lsn = lsnText.flatMap(ChangeMapper.lsn) else { throw PostgresSourceError("the server did not say its WAL position") }
            await started(lsn)
            let ts = ChangeMapper.timestamp(postgresMicros: startedMicros)
            var appended = 0
            var chunk = self.chunk
            for (index, table) in tables.enumerated() where index >= (resume?.table ?? 0) {
                let afterKey = index == resume?.table ? resume?.afterKey : nil
                appended += try await copy(table, index: index, afterKey: afterKey, ts: ts, connection, chunk: &chunk, into: sink)
            }
            try await chunk.flush(into: sink)
            _ = try await connection.query("COMMIT", logger: logger).collect()
            return (appended, lsn)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger).collect()
            throw error
        }
    }

    /// Appends the rows of one table (after `afterKey`, in key order).
    private func copy(
        _ table: Table, index: Int, afterKey: String?, ts: String, _ connection: PostgresConnection,
        chunk: inout CaptureChunk, into sink: any CaptureSink
    ) async throws -> Int {
        let relation = table.relation
        guard let tableIndex = UInt32(exactly: index) else { throw PostgresSourceError("more than \(UInt32.max) tables") }
        let position = SourcePosition(commit: Self.commit, change: tableIndex)
        let columns = relation.columns.map { TableMapping.quoted($0.name) + "::text" }.joined(separator: ", ")
        let name = TableMapping.quoted(relation.namespace) + "." + TableMapping.quoted(relation.name)
        var sql = "SELECT \(columns) FROM \(name) AS source"
        var binds = PostgresBindings()
        if !table.orderColumns.isEmpty {
            // Qualified: a bare name in ORDER BY would mean the output column, its text.
            let order = table.orderColumns.map { "source." + TableMapping.quoted($0.name) }.joined(separator: ", ")
            if let afterKey {
                let parts = try Self.keyParts(afterKey, count: table.orderColumns.count)
                var placeholders: [String] = []
                for (i, (part, column)) in zip(parts, table.orderColumns).enumerated() {
                    binds.append(part)
                    placeholders.append("CAST($\(i + 1) AS \(column.type))")
                }
                sql += " WHERE (\(order)) > (\(placeholders.joined(separator: ", ")))"
            }
            sql += " ORDER BY \(order)"
        } else if afterKey != nil {
            logger.warning("snapshot of \(relation.qualifiedName) starts again from its first row: a REPLICA IDENTITY FULL table has no key to resume after")
        }
        let rows = try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger)
        var count = 0
        for try await row in rows {
            var values: [PgOutputValue] = []
            values.reserveCapacity(relation.columns.count)
            for cell in row { values.append(cell.bytes.map { .text(String(buffer: $0)) } ?? .null) }
            let entry = try ChangeMapper.entry(
                sourceName: sourceName, relation, op: .upsert, key: try ChangeMapper.key(relation, values), values: values, ts: ts,
                extra: ["lsn": .string(ChangeMapper.lsnText(Self.commit)), "change": .int(Int64(tableIndex)), "snapshot": .bool(true)])
            if !chunk.fits([entry.raw]) { try await chunk.flush(into: sink) }
            chunk.add([entry.raw], through: position)
            count += 1
        }
        return count
    }

    /// The text values of a key as the mapper wrote it (``ChangeMapper/key(_:_:)``): one value,
    /// or a JSON array of them — for one column too when its value is empty or starts with `[`
    /// (a stream written before that rule holds such a value as it is: taken as it is).
    static func keyParts(_ key: String, count: Int) throws -> [String] {
        if count == 1 {
            guard key.hasPrefix("["), case .array(let items)? = try? JSONDecoder().decode(JSONValue.self, from: Data(key.utf8)),
                  items.count == 1, case .string(let only) = items[0]
            else { return [key] }
            return [only]
        }
        guard case .array(let items)? = try? JSONDecoder().decode(JSONValue.self, from: Data(key.utf8)), items.count == count else {
            throw PostgresSourceError("the stream's last snapshot key \(key.prefix(80)) is not a key of \(count) columns")
        }
        return try items.map { item in
            guard case .string(let text) = item else {
                throw PostgresSourceError("the stream's last snapshot key \(key.prefix(80)) has a NULL part: cannot resume after it")
            }
            return text
        }
    }

    /// The publication's tables in name order, with their columns and key.
    func publishedTables(_ connection: PostgresConnection) async throws -> [Table] {
        var tables: [Table] = []
        for table in try await PostgresSource.publishedRelations(connection, publication: publication, logger: logger) {
            // Columns in table order, and which belong to the replica identity's index (the
            // primary key by default), in that index's order.
            let columnRows = try await connection.query("""
                SELECT a.attname::text, a.atttypid::int8, format_type(a.atttypid, a.atttypmod),
                       array_position(i.indkey::int2[], a.attnum)
                FROM pg_attribute a
                LEFT JOIN pg_index i ON i.indrelid = a.attrelid
                    AND ((\(table.identity) = 'd' AND i.indisprimary) OR (\(table.identity) = 'i' AND i.indisreplident))
                    AND a.attnum = ANY (i.indkey::int2[])
                WHERE a.attrelid = \(table.oid)::oid AND a.attnum > 0 AND NOT a.attisdropped
                ORDER BY a.attnum
                """, logger: logger)
            var columns: [PgOutputRelation.Column] = []
            var keyed: [(position: Int32, name: String, type: String)] = []
            let full = table.identity == "f"
            for try await (name, oid, type, keyPosition) in columnRows.decode((String, Int64, String, Int32?).self) {
                columns.append(.init(name: name, typeOID: UInt32(truncatingIfNeeded: oid), isKey: full || keyPosition != nil))
                if let keyPosition { keyed.append((keyPosition, name, type)) }
            }
            let relation = PgOutputRelation(
                id: UInt32(truncatingIfNeeded: table.oid), namespace: table.schema, name: table.name,
                replicaIdentity: table.identity.utf8.first ?? 0, columns: columns)
            guard columns.contains(where: \.isKey) else { throw PostgresSourceError(ChangeMappingError.noKey(relation.qualifiedName).description) }
            tables.append(Table(relation: relation, orderColumns: full ? [] : keyed.sorted { $0.position < $1.position }.map { ($0.name, $0.type) }))
        }
        return tables
    }
}
