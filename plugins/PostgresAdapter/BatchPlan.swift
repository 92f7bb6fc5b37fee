import OrgSyncPluginAPI

/// What a batch will do to the target, decided before anything is sent. Pure: the table shapes
/// come in, the schema changes and the rows go out, so the rules are tested without a server.
///
/// The plan walks the entries in offset order with the shapes the batch has made so far, so a
/// column's type is the type of the first non-null value in the stream exactly as if the entries
/// went one by one, and a problem that can be seen without the server (a name that cannot map, a
/// value that does not fit its column) rejects the first entry that has it before any statement
/// is sent. For the set-based path, ``folded(primaryKey:)`` reduces the rows to one net write
/// per record (table and primary key), which ``SetStatement`` sends in one statement, and
/// ``layers(primaryKey:)`` splits them into sets in which every entry keeps its own write.
struct BatchPlan: Sendable {
    /// The adapter's own columns.
    let own: BookkeepingColumns
    /// DDL to run first, in order: each change made for the entry at `offset`.
    var schemaChanges: [SchemaChange] = []
    /// One per entry that writes something, in offset order (a delete from a table that was
    /// never made writes nothing and has no row).
    var rows: [PlannedRow] = []
    /// The shapes once the schema changes are made.
    var shapes: [String: TableShape] = [:]

    struct SchemaChange: Sendable, Hashable {
        var offset: Offset
        var table: String
        /// Make the table (with the adapter's own columns) before adding `newColumns`.
        var createsTable: Bool
        var newColumns: [NewColumn]
    }

    struct NewColumn: Sendable, Hashable {
        var name: String
        var kind: ColumnKind
    }

    /// Tables the batch names that `known` does not hold yet, each with the first entry naming
    /// it: the caller loads their shapes (or learns there is no such table) before planning.
    static func unknownTables(_ entries: some Sequence<Entry>, prefix: String, known: [String: TableShape]) -> [(String, Offset)] {
        var seen = Set<String>()
        var unknown: [(String, Offset)] = []
        for entry in entries {
            guard case .success(let table) = TableMapping.tableName(object: entry.object, prefix: prefix),
                known[table] == nil, seen.insert(table).inserted
            else { continue }
            unknown.append((table, entry.offset))
        }
        return unknown
    }

    /// Plans `entries` (already past the stored position) against `shapes`: every table of the
    /// target that the entries name (see ``unknownTables(_:prefix:known:)``); a table not in
    /// `shapes` does not exist. Throws ``AdapterError/rejected(offset:_:targetCode:)`` for the first entry that cannot
    /// apply whatever the server says.
    static func make(
        _ entries: some Sequence<Entry>, shapes: [String: TableShape], prefix: String, own: BookkeepingColumns = .standard
    ) throws(AdapterError) -> BatchPlan {
        var plan = BatchPlan(own: own, shapes: shapes)
        for entry in entries {
            guard let row = try plan.add(entry, prefix: prefix) else { continue }
            plan.rows.append(row)
        }
        return plan
    }

    /// The rows reduced to one net write per record, in the order each record first appears,
    /// with the same end state as the rows one by one:
    ///
    /// - upserts merge their fields, the last value of a field winning; `ts` (and, with
    ///   `primary_key: key`, `org`) are the last entry's;
    /// - a delete drops what came before; a write after it makes a fresh row, which is sent as
    ///   a delete and then an insert (``FoldedRecord/Write/replace``);
    /// - an insert as a record's first entry needs the record absent when the batch starts
    ///   (``FoldedRecord/mustBeAbsentFor``: the statement checks, and that entry is rejected if
    ///   it is there); an insert when an earlier entry of the batch has just written the record
    ///   is rejected here, as the server would reject it.
    ///
    /// A rejection found here may be later in the batch than one only the server can find
    /// (an insert of a record that exists); the link then applies the entries before it, where
    /// the earlier one is found, so the outcome is the same, only reached in one more step.
    func folded(primaryKey: PostgresAdapterSettings.PrimaryKey) throws(AdapterError) -> [FoldedRecord] {
        try Self.fold(rows, primaryKey: primaryKey)
    }

    /// ``folded(primaryKey:)`` of some of the rows.
    static func fold(_ rows: some Sequence<PlannedRow>, primaryKey: PostgresAdapterSettings.PrimaryKey) throws(AdapterError) -> [FoldedRecord] {
        var records: [FoldedRecord] = []
        var indexByRecord: [RecordKey: Int] = [:]
        var values: [[String: PlannedValue]] = []
        for row in rows {
            let recordKey = RecordKey(table: row.table, org: primaryKey == .orgKey ? row.org : "", key: row.key)
            guard let index = indexByRecord[recordKey] else {
                indexByRecord[recordKey] = records.count
                let write: FoldedRecord.Write = row.op == .delete ? .delete : row.op == .insert ? .insert : .upsert
                records.append(FoldedRecord(
                    table: row.table, key: row.key, org: row.org, ts: row.ts, lastOffset: row.offset, write: write, values: [],
                    mustBeAbsentFor: row.op == .insert ? row.offset : nil))
                values.append(Dictionary(uniqueKeysWithValues: row.values.map { ($0.column, $0) }))
                continue
            }
            var record = records[index]
            switch (row.op, record.write) {
            case (.delete, _):
                record.write = .delete
                values[index] = [:]
            case (.upsert, .delete), (.insert, .delete):
                record.write = .replace
                values[index] = Dictionary(uniqueKeysWithValues: row.values.map { ($0.column, $0) })
            case (.upsert, _):
                for value in row.values { values[index][value.column] = value }
            case (.insert, _):
                throw AdapterError.rejected(
                    offset: row.offset,
                    "duplicate key: an insert of a record that entry \(record.lastOffset) of the same batch has just written (table \(row.table))",
                    targetCode: "23505")
            }
            record.org = row.org
            record.ts = row.ts
            record.lastOffset = row.offset
            records[index] = record
        }
        for index in records.indices {
            records[index].values = values[index].values.sorted { $0.column < $1.column }
        }
        return records
    }

    /// The rows in layers for `batch_writes: per_entry`: layer n holds the n-th entry of every
    /// record that has n entries in the batch, in offset order. No record comes twice in a layer,
    /// so a layer folds to one write per entry and every entry writes its own row; a record's
    /// entries go in order, one layer after the other. Entries of different records may go in
    /// another order than their offsets inside the batch's transaction (seen only by triggers
    /// and by constraints across records; a statement the server refuses sends the batch again
    /// entry by entry). The workload's hot records make ~9 layers of a 500-entry batch, where
    /// runs in offset order with no record twice made ~24.
    func layers(primaryKey: PostgresAdapterSettings.PrimaryKey) -> [[PlannedRow]] {
        var layers: [[PlannedRow]] = []
        var entriesSoFar: [RecordKey: Int] = [:]
        for row in rows {
            let record = RecordKey(table: row.table, org: primaryKey == .orgKey ? row.org : "", key: row.key)
            let layer = entriesSoFar[record, default: 0]
            entriesSoFar[record] = layer + 1
            if layer == layers.count { layers.append([]) }
            layers[layer].append(row)
        }
        return layers
    }

    private struct RecordKey: Hashable {
        var table: String
        var org: String
        var key: String
    }

    /// Adds the schema changes `entry` needs and returns its row (nil: nothing to write).
    private mutating func add(_ entry: Entry, prefix: String) throws(AdapterError) -> PlannedRow? {
        let table: String
        switch TableMapping.tableName(object: entry.object, prefix: prefix) {
        case .success(let name): table = name
        case .failure(let problem): throw AdapterError.rejected(offset: entry.offset, problem.message)
        }
        var createsTable = false
        var shape: TableShape
        if let known = shapes[table] {
            let missing = known.missingOwnColumns(own)
            if !missing.isEmpty {
                throw AdapterError.rejected(
                    offset: entry.offset, "table \(table) exists without the column(s) \(missing.joined(separator: ", ")) the adapter needs")
            }
            shape = known
        } else if entry.op == .delete {
            return nil  // no such table: nothing to delete
        } else {
            createsTable = true
            shape = TableShape.ownColumnsOnly(own)
        }
        guard entry.op != .delete else {
            return PlannedRow(offset: entry.offset, table: table, op: .delete, key: entry.key, org: entry.org, ts: entry.ts, values: [])
        }
        var newColumns: [NewColumn] = []
        var values: [PlannedValue] = []
        for name in entry.fields.keys.sorted() {
            guard let value = entry.fields[name] else { continue }
            // A known column was checked when it was made; an own column is never a field.
            if shape.columns[name] == nil || own.contains(name, ignoringCase: false), let problem = TableMapping.columnProblem(name, own: own) {
                throw AdapterError.rejected(offset: entry.offset, "\(entry.object): \(problem.message)")
            }
            if shape.columns[name] == nil, let kind = ColumnKind(firstValue: value) {
                newColumns.append(NewColumn(name: name, kind: kind))
                shape.columns[name] = kind
            }
            // A null for a column that was never made: nothing to store.
            guard let kind = shape.columns[name] else { continue }
            guard let bound = BoundValue.fit(value, into: kind) else {
                throw AdapterError.rejected(
                    offset: entry.offset, "\(entry.object).\(name): a \(value.typeName) does not fit column type \(kind.sqlType)")
            }
            values.append(PlannedValue(column: name, kind: kind, value: bound))
        }
        if createsTable || !newColumns.isEmpty {
            schemaChanges.append(SchemaChange(offset: entry.offset, table: table, createsTable: createsTable, newColumns: newColumns))
            shapes[table] = shape
        }
        return PlannedRow(offset: entry.offset, table: table, op: entry.op, key: entry.key, org: entry.org, ts: entry.ts, values: values)
    }
}

/// A record's net write in a batch (``BatchPlan/folded(primaryKey:)``).
struct FoldedRecord: Sendable, Hashable {
    var table: String
    var key: String
    var org: String
    var ts: String
    /// The last entry of the batch that wrote it.
    var lastOffset: Offset
    var write: Write
    /// The fields the row gets (merged over the row as it is, for ``Write/upsert``), by name.
    var values: [PlannedValue]
    /// Its first entry in the batch, an insert, that is rejected if the record exists when the
    /// batch starts.
    var mustBeAbsentFor: Offset?

    enum Write: Sendable, Hashable {
        /// Delete it (whether or not it is there).
        case delete
        /// Update the fields carried if it is there, else insert it.
        case upsert
        /// Insert it; it is not there (``FoldedRecord/mustBeAbsentFor`` checks).
        case insert
        /// Delete it, then insert it afresh.
        case replace
    }

    /// As one entry's row, for the single statement (an insert for `.replace`: sent after the delete).
    var row: PlannedRow {
        let op: EntryOperation =
            switch write {
            case .delete: .delete
            case .upsert: .upsert
            case .insert, .replace: .insert
            }
        return PlannedRow(offset: lastOffset, table: table, op: op, key: key, org: org, ts: ts, values: values)
    }
}

/// One entry's write, with its values converted to their columns' kinds.
struct PlannedRow: Sendable, Hashable {
    var offset: Offset
    var table: String
    var op: EntryOperation
    var key: String
    var org: String
    var ts: String
    /// The fields it carries that have a column, sorted by name.
    var values: [PlannedValue]
}

struct PlannedValue: Sendable, Hashable {
    var column: String
    var kind: ColumnKind
    var value: BoundValue
}
