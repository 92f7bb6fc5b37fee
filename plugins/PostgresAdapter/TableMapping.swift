import OrgSyncPluginAPI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How entries map onto PostgreSQL tables. Pure: no I/O, so the rules are tested without a server.
///
/// - One table per entry `object` (prefixed with `table_prefix`), in the configured schema.
/// - Three columns of its own: `key TEXT PRIMARY KEY`, `org TEXT NOT NULL`, `ts TEXT NOT NULL`,
///   named by the settings `key_column`, `org_column`, `ts_column` (``BookkeepingColumns``).
/// - One column per field, created on first sight with the type of the first non-null value:
///
///   | JSON value | column type |
///   | --- | --- |
///   | string | `TEXT` |
///   | integer (fits 64 bits) | `BIGINT` |
///   | other number | `DOUBLE PRECISION` |
///   | true / false | `BOOLEAN` |
///   | array, object | `JSONB` |
///   | null | no column is created and no type changes; an existing column is set to NULL |
///
/// - A value must fit its column: an integer fits `DOUBLE PRECISION`/`NUMERIC`/`REAL`, a number
///   with an integral value fits `BIGINT`/`INTEGER`/`SMALLINT`; a number or a string fits
///   `NUMERIC` (written exactly, as text the column reads); a string fits a column of any other
///   type made by someone else (timestamps, `bytea` as `\x…`, arrays as `{…}`: read by the type's
///   own input, so a captured PostgreSQL value lands unchanged); otherwise the entry is rejected
///   (never converted silently).
/// - Names are quoted identifiers, kept exactly (case included). A name that cannot be mapped
///   safely is rejected: empty, longer than 63 bytes (PostgreSQL would truncate it and two names
///   could meet), control characters, a field named like an own column, a table named `orgsync_…`.
/// - Members of an entry beyond the six known ones (`extra`) are not stored.
enum TableMapping {
    /// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
    static let identifierBytesMax = 63
    static let reservedTablePrefix = "orgsync_"

    /// Why `name` cannot be a PostgreSQL identifier, or nil when it can.
    static func identifierProblem(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        if name.utf8.count > identifierBytesMax {
            return "is longer than \(identifierBytesMax) bytes (PostgreSQL would truncate it)"
        }
        if name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return "contains a control character"
        }
        return nil
    }

    /// `name` as a quoted identifier. Only call with a name that passed ``identifierProblem(_:)``.
    static func quoted(_ name: String) -> String {
        // By scalar, not by Character: a quote followed by a combining mark is one Character
        // that is not equal to "\"", and must still be doubled.
        var quoted = String.UnicodeScalarView()
        quoted.append("\"")
        for scalar in name.unicodeScalars {
            if scalar == "\"" { quoted.append("\"") }
            quoted.append(scalar)
        }
        quoted.append("\"")
        return String(quoted)
    }

    /// The table an object maps to, or the reason it cannot map.
    static func tableName(object: String, prefix: String) -> Result<String, MappingProblem> {
        let name = prefix + object
        if let problem = identifierProblem(name) {
            return .failure(MappingProblem("table name \"\(name.prefix(80))\" \(problem)"))
        }
        if name.lowercased().hasPrefix(reservedTablePrefix) {
            return .failure(MappingProblem("table name \"\(name)\" starts with \(reservedTablePrefix), which orgsync keeps for itself"))
        }
        return .success(name)
    }

    /// Checks a field name as a column name, given the adapter's own columns.
    static func columnProblem(_ field: String, own: BookkeepingColumns) -> MappingProblem? {
        if let problem = identifierProblem(field) {
            return MappingProblem("field \"\(field.prefix(80))\" \(problem)")
        }
        if own.contains(field, ignoringCase: false) {
            return MappingProblem(
                "field \"\(field)\" has the name of a column the adapter keeps (\(own.names.joined(separator: ", "))); rename those with key_column, org_column, ts_column")
        }
        return nil
    }
}

/// An entry that can never map onto the target, with a message for the operator.
struct MappingProblem: Error, Hashable, Sendable {
    var message: String
    init(_ message: String) { self.message = message }
}

/// What a column holds, as far as the adapter writes it.
enum ColumnKind: Hashable, Sendable {
    case text
    case int
    case double
    /// `numeric`: numbers and numeric text go in exactly (as text, read by the column's type).
    case numeric
    case bool
    case json
    /// A type the adapter does not create (made by someone else), by its PostgreSQL name: it
    /// takes strings, read by the type's own input (a timestamp, `\x…` bytea, `{…}` arrays):
    /// what a capture source writes for such values.
    case other(String)

    /// From `information_schema.columns.udt_name`.
    init(udtName: String) {
        switch udtName {
        case "text", "varchar", "bpchar", "name", "citext": self = .text
        case "int8", "int4", "int2": self = .int
        case "float8", "float4": self = .double
        case "numeric": self = .numeric
        case "bool": self = .bool
        case "jsonb", "json": self = .json
        default: self = .other(udtName)
        }
    }

    /// The type a new column gets for its first non-null value; nil for null (no column).
    init?(firstValue value: JSONValue) {
        switch value {
        case .null: return nil
        case .string: self = .text
        case .int: self = .int
        case .double: self = .double
        case .bool: self = .bool
        case .array, .object: self = .json
        }
    }

    var sqlType: String {
        switch self {
        case .text: "TEXT"
        case .int: "BIGINT"
        case .double: "DOUBLE PRECISION"
        case .numeric: "NUMERIC"
        case .bool: "BOOLEAN"
        case .json: "JSONB"
        case .other(let name): name
        }
    }
}

/// A value ready to bind, converted to its column's kind.
enum BoundValue: Hashable, Sendable {
    case null
    case text(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    /// JSON text, bound as text and cast to JSONB in the statement.
    case json(String)
    /// Text read by the column's own type (`numeric`, or a type of ``ColumnKind/other(_:)``),
    /// bound as text and cast to `type` in the statement.
    case typedText(String, type: String)

    /// `value` for a column of `kind`, or nil when it does not fit.
    static func fit(_ value: JSONValue, into kind: ColumnKind) -> BoundValue? {
        switch (value, kind) {
        case (.null, _): return .null
        case (.string(let text), .text): return .text(text)
        case (.int(let number), .int): return .int(number)
        case (.int(let number), .double): return .double(Double(number))
        case (.double(let number), .double): return .double(number)
        case (.double(let number), .int):
            // Exactly integral and inside Int64 (2^63 itself is not).
            guard number.isFinite, number.rounded() == number,
                number >= -9_223_372_036_854_775_808.0, number < 9_223_372_036_854_775_808.0
            else { return nil }
            return .int(Int64(number))
        case (.bool(let flag), .bool): return .bool(flag)
        case (.array, .json), (.object, .json): return .json(jsonText(value))
        case (.int(let number), .numeric): return .typedText(String(number), type: "numeric")
        case (.double(let number), .numeric): return number.isFinite ? .typedText("\(number)", type: "numeric") : nil
        case (.string(let text), .numeric): return .typedText(text, type: "numeric")
        case (.string(let text), .other(let type)): return .typedText(text, type: type)
        default: return nil
        }
    }

    static func jsonText(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a JSONValue tree cannot fail for values parsed from JSON; keep null otherwise.
        guard let data = try? encoder.encode(value) else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }
}

/// The columns of one table as the adapter knows them.
struct TableShape: Hashable, Sendable {
    var columns: [String: ColumnKind]
    /// Columns the server fills when an INSERT leaves them out (a default, an identity, a
    /// generated column): all made by someone else, since the adapter's columns have none.
    var defaulted: Set<String> = []
    /// Columns of type `json` (``ColumnKind/json`` stands for `json` and `jsonb`): the set
    /// statements cast their values to it.
    var plainJSON: Set<String> = []

    /// Own columns the table lacks (a table made by someone else).
    func missingOwnColumns(_ own: BookkeepingColumns) -> [String] {
        own.names.filter { columns[$0] == nil }
    }

    /// A table as the adapter makes it.
    static func ownColumnsOnly(_ own: BookkeepingColumns) -> TableShape {
        TableShape(columns: [own.key: .text, own.org: .text, own.ts: .text])
    }
}
