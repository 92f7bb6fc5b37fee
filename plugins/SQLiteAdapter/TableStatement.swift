import OrgSyncPluginAPI

/// A table's columns as the adapter knows them (committed): every name, lowercased, and the
/// columns that can carry fields — valid names other than the adapter's own — in the table's
/// order, with their defaults.
struct TableColumns: Sendable, Equatable {
    var names: Set<String>
    var fields: [FieldColumn]

    /// No columns known (a table not created yet).
    static let empty = TableColumns(names: [], fields: [])
}

/// A column that carries a field: its declared name and its default's SQL (`PRAGMA
/// table_info`'s `dflt_value`; nil without one).
struct FieldColumn: Sendable, Equatable {
    var name: String
    var defaultSQL: String?
}

/// The insert or upsert statement of one table, naming every field column it has: one statement
/// per table rather than one per set of fields, so that a workload whose entries carry ever new
/// combinations of fields prepares a statement when a table gains a column, not for most
/// entries (with a statement per field set, 128 kept, most entries of the seeded workload
/// compiled one, and the adapter applied 11 566 entries/s instead of 42 561).
///
/// Each field column takes two parameters: its value and whether the entry carries it. A
/// column the entry does not carry gets its default on insert (the column's own, or NULL) and
/// keeps its value on update, as if the statement did not name it.
struct TableStatement {
    let statement: SQLiteStatement
    /// The field columns, in parameter order.
    let fields: [String]
    /// Field column index by declared name and by lowercased name.
    private let index: [String: Int]

    init(statement: SQLiteStatement, fields: [String]) {
        self.statement = statement
        self.fields = fields
        var index: [String: Int] = [:]
        for (position, name) in fields.enumerated() {
            index[name.lowercased()] = position
            index[name] = position
        }
        self.index = index
    }

    /// The values for an insert or upsert of `entry`: key, org, ts, then a value and a carried
    /// flag per field column. Nil when the entry carries a field the statement does not name,
    /// or two fields naming one column (differing only by case).
    func values(for entry: Entry) -> [SQLiteBinding]? {
        var values: [SQLiteBinding] = [.text(entry.key), .text(entry.org), .text(entry.ts)]
        values.reserveCapacity(Self.carriedParameter(fields.count))
        for _ in fields {
            values.append(.null)
            values.append(.integer(0))
        }
        for (name, value) in entry.fields {
            guard let position = index[name] ?? index[name.lowercased()] else { return nil }
            // Parameters count from 1, the values from 0.
            let (valueIndex, carriedIndex) = (Self.valueParameter(position) - 1, Self.carriedParameter(position) - 1)
            guard values[carriedIndex] == .integer(0) else { return nil }
            values[valueIndex] = SQLiteValues.binding(value)
            values[carriedIndex] = .integer(1)
        }
        return values
    }

    /// The parameters of field column `position` (from 0): its value, then whether it is carried,
    /// after key, org and ts (?1–?3).
    static func valueParameter(_ position: Int) -> Int { 4 + 2 * position }
    static func carriedParameter(_ position: Int) -> Int { 5 + 2 * position }

    /// `INSERT INTO t (key, org, ts, c1, …) VALUES (?1, ?2, ?3, CASE WHEN ?5 THEN ?4 ELSE
    /// <default> END, …)`; an upsert adds `ON CONFLICT (<primary key>) DO UPDATE SET ts =
    /// excluded.ts, c1 = CASE WHEN ?5 THEN excluded.c1 ELSE c1 END, …` (and `org` under
    /// `primary_key = key`). Pure.
    static func writeSQL(
        table: String, upsert: Bool, fields: [FieldColumn], own: BookkeepingColumns, primaryKey: SQLitePrimaryKey
    ) -> String {
        let quote = SQLiteNames.quote
        let columns = (own.names + fields.map(\.name)).map(quote).joined(separator: ", ")
        var values = ["?1", "?2", "?3"]
        for (position, field) in fields.enumerated() {
            let (value, carried) = (valueParameter(position), carriedParameter(position))
            let otherwise = field.defaultSQL.map { " ELSE (\($0))" } ?? ""
            values.append("CASE WHEN ?\(carried) THEN ?\(value)\(otherwise) END")
        }
        var sql = "INSERT INTO \(quote(table)) (\(columns)) VALUES (\(values.joined(separator: ", ")))"
        if upsert {
            var updates = (primaryKey == .key ? [own.org, own.ts] : [own.ts]).map { "\(quote($0)) = excluded.\(quote($0))" }
            for (position, field) in fields.enumerated() {
                let column = quote(field.name)
                updates.append("\(column) = CASE WHEN ?\(carriedParameter(position)) THEN excluded.\(column) ELSE \(column) END")
            }
            let conflict = primaryKey.columns(own).map(quote).joined(separator: ", ")
            sql += " ON CONFLICT(\(conflict)) DO UPDATE SET " + updates.joined(separator: ", ")
        }
        return sql
    }
}
