import OrgSyncPluginAPI
import PostgresNIO

/// The SQL for a planned batch (``BatchPlan``). Pure: text and bind values, nothing sent.
///
/// The set-based path sends a batch's net writes (``BatchPlan/folded(primaryKey:)``, one per
/// record) as one statement: per table, data-modifying CTEs over `jsonb_to_recordset` of one JSON
/// document per kind of write — the deletes (`DELETE … USING`, also of the records a batch
/// deletes and writes again), the inserts (`INSERT … SELECT`), the upserts (an `UPDATE` of the
/// rows that exist, setting only the fields carried, then an `INSERT` of the rest) — and the
/// checks of the records that an insert needs absent, which the statement's own query reports
/// (all CTEs see the state from before the statement, so a check cannot see the batch's own
/// writes, and no record is written by two CTEs). The records written afresh after a delete
/// follow in a second statement. Values travel as JSON strings and are cast to the column's type
/// in the statement (a JSON column's value as JSON), with the same result as the typed binds of
/// the single statement.
///
/// The text depends only on the tables a batch writes and their columns, never on which
/// fields, kinds of write or how many rows the batch has: tables in name order, each with every
/// kind of write (an empty document where it has none), every column of the table named (a row
/// that does not carry one inserts NULL, as a column left out of the single INSERT gets, and
/// keeps the value it has on update). So the text repeats from batch to batch and runs as a
/// prepared statement (``PreparedStatementCache``). Columns the server fills and columns of a
/// type the adapter does not write are named only when a row carries them (a set INSERT that
/// named them would store NULL instead of the default; an UPDATE may not set a generated one).
/// Every parameter is cast to `text` where it is used, so a statement prepared without
/// parameter types reads its values as the unnamed one does.
///
/// Some rows go alone, as the single statement: a row that writes a column of a type the adapter
/// does not write (only a null fits, and it is bound untyped); and an inserted row that leaves
/// out a column which the server fills (a default, an identity or a generated column) while
/// another row of its set carries it — a set INSERT lists one set of columns for all its rows
/// and would store NULL where the single INSERT gets the default.
enum SetStatement {
    struct Target: Sendable {
        var schema: String
        var primaryKey: PostgresAdapterSettings.PrimaryKey

        func qualified(_ table: String) -> String { TableMapping.quoted(schema) + "." + TableMapping.quoted(table) }

        /// The adapter's own columns (``BookkeepingColumns``).
        var own: BookkeepingColumns

        /// The own columns, quoted.
        var key: String { TableMapping.quoted(own.key) }
        var org: String { TableMapping.quoted(own.org) }
        var ts: String { TableMapping.quoted(own.ts) }
        /// `key, org, ts`, quoted: the first columns of every INSERT.
        var ownColumnList: String { "\(key), \(org), \(ts)" }
        var conflictColumns: String { primaryKey == .key ? key : "\(org), \(key)" }
    }

    /// A set statement: its text and its parameters (all text).
    struct Query: Sendable, Hashable {
        var sql: String
        var parameters: [String]

        /// As an unnamed statement.
        var unnamed: PostgresQuery {
            var binds = PostgresBindings(capacity: parameters.count)
            for parameter in parameters { binds.append(parameter) }
            return PostgresQuery(unsafeSQL: sql, binds: binds)
        }
    }

    /// A batch's statements, in the order they are sent.
    struct Batch: Sendable {
        /// Deletes, inserts, upserts and checks; returns one row `(group, index)` per record
        /// that an insert needs absent and that is there (``checks``). Nil: nothing in a set.
        var main: Query?
        /// The inserts' offsets that need their record absent, by group and index as `main`
        /// reports them.
        var checks: [[Offset]]
        /// Rows that go as single statements after `main`, in offset order.
        var alone: [PlannedRow]
        /// The inserts of records deleted and written again, after `main`'s deletes.
        var replacements: Query?
        /// Such inserts that go alone.
        var replacementsAlone: [PlannedRow]

        /// A row `main` reports, `(group, index)`. They travel as text: postgres-nio's
        /// `PreparedQuery` labels its result columns with the format of the statement's
        /// description (text) while asking the server for binary, so a `bigint` cannot be read
        /// back from it; a text column's bytes are the same in both formats.
        static func reported(_ row: PostgresRow) throws -> (Int64, Int64) {
            let (group, index) = try row.decode((String, String).self)
            guard let group = Int64(group), let index = Int64(index) else {
                throw AdapterError.connection("the set statement reported (\(group.prefix(20)), \(index.prefix(20))), not two numbers")
            }
            return (group, index)
        }

        /// The first insert whose record `main` reported there (`(group, index)` rows).
        func firstExisting(_ reported: [(Int64, Int64)]) -> Offset? {
            reported.compactMap { group, index -> Offset? in
                guard let group = Int(exactly: group), let index = Int(exactly: index),
                    checks.indices.contains(group), checks[group].indices.contains(index)
                else { return nil }
                return checks[group][index]
            }.min()
        }
    }

    /// The statements for `records` (a batch's net writes).
    static func batch(_ records: [FoldedRecord], shapes: [String: TableShape], target: Target) -> Batch {
        var byTable: [String: [FoldedRecord]] = [:]
        for record in records { byTable[record.table, default: []].append(record) }
        let tables = byTable.keys.sorted()
        var main = Builder(target: target)
        var second = Builder(target: target)
        var alone: [PlannedRow] = []
        var replacementsAlone: [PlannedRow] = []
        for table in tables {
            let tableRecords = byTable[table] ?? []
            let shape = shapes[table] ?? TableShape(columns: [:])
            let defaulted = shape.defaulted
            var deletes: [PlannedRow] = []
            var inserts: [PlannedRow] = []
            var upserts: [PlannedRow] = []
            var replacements: [PlannedRow] = []
            for record in tableRecords {
                let row = record.row
                let goesAlone = row.values.contains { if case .other = $0.kind { true } else { false } }
                switch record.write {
                case .delete: deletes.append(row)
                case .insert: if goesAlone { alone.append(row) } else { inserts.append(row) }
                case .upsert: if goesAlone { alone.append(row) } else { upserts.append(row) }
                case .replace:
                    deletes.append(PlannedRow(offset: row.offset, table: table, op: .delete, key: row.key, org: row.org, ts: row.ts, values: []))
                    if goesAlone { replacementsAlone.append(row) } else { replacements.append(row) }
                }
            }
            let (insertSet, insertAlone) = splitOffDefaultGaps(inserts, defaulted: defaulted)
            let (upsertSet, upsertAlone) = splitOffDefaultGaps(upserts, defaulted: defaulted)
            let (replacementSet, replacementAlone) = splitOffDefaultGaps(replacements, defaulted: defaulted)
            alone += insertAlone + upsertAlone
            replacementsAlone += replacementAlone
            main.addDeletes(deletes, table: table)
            main.addInserts(insertSet, table: table, shape: shape)
            main.addUpserts(upsertSet, table: table, shape: shape)
            main.addAbsenceChecks(tableRecords.filter { $0.mustBeAbsentFor != nil }, table: table)
            if !replacementSet.isEmpty { second.addInserts(replacementSet, table: table, shape: shape) }
        }
        alone.sort { $0.offset < $1.offset }
        replacementsAlone.sort { $0.offset < $1.offset }
        return Batch(
            main: main.query(), checks: main.checks, alone: alone, replacements: second.query(), replacementsAlone: replacementsAlone)
    }

    /// Rows that can share one INSERT column list, and those that must go alone because a
    /// column the server fills would get NULL instead.
    static func splitOffDefaultGaps(_ rows: [PlannedRow], defaulted: Set<String>) -> (set: [PlannedRow], alone: [PlannedRow]) {
        guard !defaulted.isEmpty, rows.count > 1 else { return (rows, []) }
        let union = Set(rows.flatMap { $0.values.map(\.column) })
        let filled = union.intersection(defaulted)
        guard !filled.isEmpty else { return (rows, []) }
        var set: [PlannedRow] = []
        var alone: [PlannedRow] = []
        for row in rows {
            let carried = Set(row.values.map(\.column))
            if filled.isSubset(of: carried) { set.append(row) } else { alone.append(row) }
        }
        return (set, alone)
    }

    /// The statement for one row, as the entry-by-entry path sends it.
    static func single(_ row: PlannedRow, target: Target) -> PostgresQuery {
        let table = target.qualified(row.table)
        var binds = PostgresBindings(capacity: 3 + row.values.count)
        binds.append(row.key)
        if row.op == .delete {
            guard target.primaryKey == .orgKey else {
                return PostgresQuery(unsafeSQL: "DELETE FROM \(table) WHERE \(target.key) = $1", binds: binds)
            }
            binds.append(row.org)
            return PostgresQuery(unsafeSQL: "DELETE FROM \(table) WHERE \(target.key) = $1 AND \(target.org) = $2", binds: binds)
        }
        binds.append(row.org)
        binds.append(row.ts)
        var columns = target.ownColumnList
        var values = "$1, $2, $3"
        var updates = "\(target.ts) = EXCLUDED.\(target.ts)"
        if target.primaryKey == .key { updates = "\(target.org) = EXCLUDED.\(target.org), " + updates }
        for planned in row.values {
            let column = TableMapping.quoted(planned.column)
            var placeholder = "$\(binds.count + 1)"
            switch planned.value {
            case .null: binds.appendNull()
            case .text(let text): binds.append(text)
            case .int(let number): binds.append(number)
            case .double(let number): binds.append(number)
            case .bool(let flag): binds.append(flag)
            case .json(let text):
                binds.append(text)
                placeholder += "::jsonb"
            case .typedText(let text, let type):
                binds.append(text)
                placeholder = "CAST(\(placeholder) AS \(TableMapping.quoted(type)))"
            }
            columns += ", " + column
            values += ", " + placeholder
            updates += ", \(column) = EXCLUDED.\(column)"
        }
        var sql = "INSERT INTO \(table) (\(columns)) VALUES (\(values))"
        if row.op == .upsert { sql += " ON CONFLICT (\(target.conflictColumns)) DO UPDATE SET \(updates)" }
        return PostgresQuery(unsafeSQL: sql, binds: binds)
    }

    /// A double as PostgreSQL's float8 input reads it back exactly (the shortest text that
    /// round-trips; the non-finite values by their SQL names).
    static func doubleText(_ number: Double) -> String {
        if number.isNaN { return "NaN" }
        if number.isInfinite { return number < 0 ? "-Infinity" : "Infinity" }
        return "\(number)"
    }

    /// Builds the CTEs of one run and their binds.
    private struct Builder {
        let target: Target
        var parameters: [String] = []
        var ctes: [String] = []
        private var columnParameters: [String: String] = [:]

        init(target: Target) { self.target = target }

        private var matchOrg: Bool { target.primaryKey == .orgKey }

        /// A parameter of `text`, as `$n::text`.
        private mutating func parameter(_ text: String) -> String {
            parameters.append(text)
            return "$\(parameters.count)::text"
        }

        /// A column's name as a bind (used as the JSON member's name), one per name.
        private mutating func columnParameter(_ name: String) -> String {
            if let known = columnParameters[name] { return known }
            let made = parameter(name)
            columnParameters[name] = made
            return made
        }

        /// `plainJSON`: the column is `json`, not `jsonb` (a table made by someone else): the
        /// value is cast to it, or a `CASE` between it and the kept value cannot match the types.
        private mutating func valueExpression(_ column: String, kind: ColumnKind, plainJSON: Bool) -> String {
            let name = columnParameter(column)
            switch kind {
            case .text: return "(x.f->>\(name))"
            case .int: return "CAST(x.f->>\(name) AS BIGINT)"
            case .double: return "CAST(x.f->>\(name) AS DOUBLE PRECISION)"
            case .numeric: return "CAST(x.f->>\(name) AS NUMERIC)"
            case .bool: return "CAST(x.f->>\(name) AS BOOLEAN)"
            case .json: return "NULLIF(x.f->\(name), 'null'::jsonb)" + (plainJSON ? "::json" : "")
            // Never in a set (such rows go alone); a NULL of the column's type would be right.
            case .other: return "NULL"
            }
        }

        mutating func addDeletes(_ rows: [PlannedRow], table: String) {
            var document = JSONDocumentWriter()
            document.beginArray()
            for row in rows {
                document.beginObject()
                document.member("k", string: row.key)
                document.member("o", string: row.org)
                document.endObject()
            }
            document.endArray()
            let rowsParameter = parameter(document.text)
            let name = "d\(ctes.count)"
            ctes.append(
                "\(name) AS (DELETE FROM \(target.qualified(table)) AS t USING jsonb_to_recordset(\(rowsParameter)::jsonb) AS x(k text, o text) "
                    + "WHERE t.\(target.key) = x.k\(matchOrg ? " AND t.\(target.org) = x.o" : ""))")
        }

        /// Inserts of records that are not there (checked by ``addAbsenceChecks(_:table:)``, or
        /// deleted by the statement before): a record that is there fails the statement.
        mutating func addInserts(_ rows: [PlannedRow], table: String, shape: TableShape) {
            let source = "jsonb_to_recordset(\(parameter(Self.rowDocument(rows)))::jsonb) AS x(k text, o text, t text, f jsonb)"
            let columns = Self.columns(of: rows, shape: shape, own: target.own)
            ctes.append("n\(ctes.count) AS (\(insertSelect(columns, shape: shape, table: table, from: source, where: "")) ON CONFLICT DO NOTHING)")
        }

        /// The offsets of the checked inserts, by group (one per table) and index.
        private(set) var checks: [[Offset]] = []
        private var checkNames: [String] = []

        /// Records an insert needs absent: the statement's query reports those that are there
        /// (as the statement found them, before its own writes).
        mutating func addAbsenceChecks(_ records: [FoldedRecord], table: String) {
            let checked = records.compactMap { record in record.mustBeAbsentFor.map { (record, $0) } }
            var document = JSONDocumentWriter()
            document.beginArray()
            for (index, (record, _)) in checked.enumerated() {
                document.beginObject()
                document.member("i", raw: String(index))
                document.member("k", string: record.key)
                document.member("o", string: record.org)
                document.endObject()
            }
            document.endArray()
            let name = "c\(ctes.count)"
            ctes.append(
                "\(name) AS (SELECT x.i FROM jsonb_to_recordset(\(parameter(document.text))::jsonb) AS x(i bigint, k text, o text) "
                    + "WHERE EXISTS (SELECT 1 FROM \(target.qualified(table)) AS t WHERE t.\(target.key) = x.k\(matchOrg ? " AND t.\(target.org) = x.o" : "")))")
            checkNames.append(name)
            checks.append(checked.map(\.1))
        }

        /// The whole statement; nil when there is nothing in it.
        func query() -> Query? {
            guard !ctes.isEmpty else { return nil }
            let reports =
                checkNames.isEmpty
                ? "SELECT '0'::text, '0'::text WHERE false"
                : checkNames.enumerated().map { "SELECT '\($0.offset)'::text, i::text FROM \($0.element)" }.joined(separator: " UNION ALL ")
            return Query(sql: "WITH " + ctes.joined(separator: ",\n") + "\n" + reports, parameters: parameters)
        }

        mutating func addUpserts(_ rows: [PlannedRow], table: String, shape: TableShape) {
            let columns = Self.columns(of: rows, shape: shape, own: target.own)
            let index = ctes.count
            let rowsName = "x\(index)"
            let updatedName = "u\(index)"
            ctes.append("\(rowsName) AS (SELECT * FROM jsonb_to_recordset(\(parameter(Self.rowDocument(rows)))::jsonb) AS r(k text, o text, t text, f jsonb))")
            var sets = matchOrg ? "\(target.ts) = x.t" : "\(target.org) = x.o, \(target.ts) = x.t"
            for (column, kind) in columns {
                let quoted = TableMapping.quoted(column)
                sets += ", \(quoted) = CASE WHEN x.f ? \(columnParameter(column)) THEN \(valueExpression(column, kind: kind, plainJSON: shape.plainJSON.contains(column))) ELSE t.\(quoted) END"
            }
            ctes.append(
                "\(updatedName) AS (UPDATE \(target.qualified(table)) AS t SET \(sets) FROM \(rowsName) AS x "
                    + "WHERE t.\(target.key) = x.k\(matchOrg ? " AND t.\(target.org) = x.o" : "") RETURNING t.\(target.key) AS k, t.\(target.org) AS o)")
            let missing = "WHERE NOT EXISTS (SELECT 1 FROM \(updatedName) AS u WHERE u.k = x.k\(matchOrg ? " AND u.o = x.o" : ""))"
            ctes.append("v\(ctes.count) AS (\(insertSelect(columns, shape: shape, table: table, from: "\(rowsName) AS x", where: missing)))")
        }

        private mutating func insertSelect(
            _ columns: [(String, ColumnKind)], shape: TableShape, table: String, from source: String, where condition: String
        ) -> String {
            var names = target.ownColumnList
            var values = "x.k, x.o, x.t"
            for (column, kind) in columns {
                names += ", " + TableMapping.quoted(column)
                values += ", " + valueExpression(column, kind: kind, plainJSON: shape.plainJSON.contains(column))
            }
            return "INSERT INTO \(target.qualified(table)) (\(names)) SELECT \(values) FROM \(source) \(condition)"
        }

        /// The columns a set statement names, in name order: every column of the table but the
        /// adapter's own, except those the server fills and those of a type the adapter does
        /// not write, which are named only when a row carries them.
        static func columns(of rows: [PlannedRow], shape: TableShape, own: BookkeepingColumns) -> [(String, ColumnKind)] {
            let ownNames = Set(own.names)
            var kinds: [String: ColumnKind] = [:]
            for (column, kind) in shape.columns where !ownNames.contains(column) && !shape.defaulted.contains(column) {
                if case .other = kind { continue }
                kinds[column] = kind
            }
            for row in rows {
                for value in row.values where kinds[value.column] == nil { kinds[value.column] = value.kind }
            }
            return kinds.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }

        /// `[{"k":key,"o":org,"t":ts,"f":{column: value as a JSON string, or JSON, or null}}, …]`
        private static func rowDocument(_ rows: [PlannedRow]) -> String {
            var document = JSONDocumentWriter()
            document.beginArray()
            for row in rows {
                document.beginObject()
                document.member("k", string: row.key)
                document.member("o", string: row.org)
                document.member("t", string: row.ts)
                document.memberName("f")
                document.beginObject()
                for planned in row.values {
                    switch planned.value {
                    case .null: document.member(planned.column, raw: "null")
                    case .text(let text): document.member(planned.column, string: text)
                    case .int(let number): document.member(planned.column, string: String(number))
                    case .double(let number): document.member(planned.column, string: SetStatement.doubleText(number))
                    case .bool(let flag): document.member(planned.column, string: flag ? "true" : "false")
                    case .json(let text): document.member(planned.column, raw: text)
                    case .typedText(let text, _): document.member(planned.column, string: text)
                    }
                }
                document.endObject()
                document.endObject()
            }
            document.endArray()
            return document.text
        }
    }
}

/// Writes compact JSON text: strings escaped as RFC 8259 asks, members separated as needed.
/// Works on UTF-8 bytes (a String's scalar views cost several times more per character).
struct JSONDocumentWriter {
    private(set) var bytes: [UInt8] = []
    private var needsComma = false

    var text: String { String(decoding: bytes, as: UTF8.self) }

    mutating func beginArray() { separate(); bytes.append(UInt8(ascii: "[")); needsComma = false }
    mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }
    mutating func beginObject() { separate(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }

    mutating func memberName(_ name: String) {
        separate()
        appendString(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func member(_ name: String, string value: String) {
        memberName(name)
        appendString(value)
        needsComma = true
    }

    /// A member whose value is already JSON text.
    mutating func member(_ name: String, raw value: String) {
        memberName(name)
        bytes.append(contentsOf: value.utf8)
        needsComma = true
    }

    /// A member whose value is `value`, written as JSON (object members in name order).
    mutating func member(_ name: String, value: JSONValue) {
        memberName(name)
        self.value(value)
    }

    mutating func value(_ value: JSONValue) {
        separate()
        switch value {
        case .null: bytes.append(contentsOf: "null".utf8)
        case .bool(let flag): bytes.append(contentsOf: (flag ? "true" : "false").utf8)
        case .int(let number): bytes.append(contentsOf: String(number).utf8)
        // Finite only (the mapper turns NaN and infinities into strings); Swift's shortest
        // round-trip form is valid JSON ("0.25", "1e+300", "-0.0").
        case .double(let number): bytes.append(contentsOf: (number.isFinite ? "\(number)" : "null").utf8)
        case .string(let string): appendString(string)
        case .array(let items):
            bytes.append(UInt8(ascii: "["))
            needsComma = false
            for item in items { self.value(item) }
            bytes.append(UInt8(ascii: "]"))
        case .object(let members):
            bytes.append(UInt8(ascii: "{"))
            needsComma = false
            for name in members.keys.sorted() { member(name, value: members[name] ?? .null) }
            bytes.append(UInt8(ascii: "}"))
        }
        needsComma = true
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    private mutating func appendString(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            var plainStart = 0
            for (index, byte) in utf8.enumerated() where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[plainStart..<index]))
                switch byte {
                case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
                case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
                case UInt8(ascii: "\n"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case UInt8(ascii: "\r"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                case UInt8(ascii: "\t"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
                default:
                    bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                              Self.hexDigits[Int(byte >> 4)], Self.hexDigits[Int(byte & 0xF)]])
                }
                plainStart = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[plainStart..<utf8.count]))
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
