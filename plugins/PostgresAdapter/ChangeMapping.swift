import OrgSyncPluginAPI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Turns the pgoutput messages of one decoding session into entries. Pure: no I/O, so every
/// rule is tested without a server.
///
/// The mapping (README of the PostgreSQL plugin, "Capture"):
/// - `object` = the table (`schema.table` outside `public`), `org` = the source's name,
///   `ts` = the commit time (UTC, ISO-8601 with microseconds);
/// - `key` = the replica identity's columns (the primary key, or every column with `REPLICA
///   IDENTITY FULL`): one column's text value, or a JSON array of the text values (`null` for a
///   NULL) when there are several — the same row always gives the same key. One column's
///   value is written as a one-element array too when it is empty (an entry's key may not be)
///   or starts with `[` (so that no other value's key looks the same): two rows never share a key;
/// - INSERT → `insert` (`upsert` for a transaction that may also be in the initial snapshot),
///   UPDATE → `upsert`, DELETE → `delete`; an UPDATE that changes the key is a `delete` of the
///   old key and an `upsert` of the new one, with the same position;
/// - `fields` = every column sent; a TOASTed value the change did not touch is left out (not
///   nulled), so an `upsert` merges only what it carries;
/// - values by type: boolean → true/false, smallint/integer/bigint/oid → JSON integers, real and
///   double precision → JSON numbers (NaN and infinities as their text), json/jsonb → the JSON
///   value, everything else (numeric, text, timestamps, bytea as `\x…`, arrays as `{…}`) → the
///   type's text form, which a typed target column reads back unchanged;
/// - extra members `lsn` (the commit LSN as `X/Y`), `xid` and `change` (0-based index of the
///   change in its transaction): together with `org` they say where the entry came from, which
///   is how a restarted capture finds its position in the stream.
/// - Transactions made by an orgsync link (replication origin `orgsync…`) are skipped: no echo
///   when two databases are each other's source. TRUNCATE is not captured (reported).
struct ChangeMapper {
    let sourceName: String
    /// Inserts of transactions that committed at or before this LSN may meet rows the initial
    /// snapshot already wrote: they are written as upserts.
    var insertsAsUpsertsThroughLSN: UInt64?
    private(set) var relations: [UInt32: PgOutputRelation] = [:]
    private var transaction: Transaction?

    /// Origin names whose transactions are skipped (made by an orgsync `postgres` link).
    static let skippedOriginPrefix = "orgsync"

    struct Transaction {
        var finalLSN: UInt64
        var xid: UInt32
        var ts: String
        var nextChange: UInt32 = 0
        var skipped = false
    }

    /// What one message amounts to.
    enum Output: Equatable {
        /// Nothing to do (begin, relation, type, a transactional message).
        case none
        /// One change: its position and its entries (one, or two when an update moved the key).
        case change(SourcePosition, [Entry])
        /// A change of a skipped transaction (origin-tagged): counted, not appended.
        case skippedChange(SourcePosition)
        /// The transaction ended; acknowledging `endLSN` means it is never sent again.
        /// `commitTimeMs`: its commit time, ms since 1970 (nil when out of range).
        case committed(endLSN: UInt64, commitTimeMs: UInt64?)
        /// A heartbeat or other message outside any transaction at `lsn`.
        case outsideMessage(lsn: UInt64)
        /// TRUNCATE of these tables: not captured.
        case truncate([String])
    }

    init(sourceName: String, insertsAsUpsertsThroughLSN: UInt64? = nil) {
        self.sourceName = sourceName
        self.insertsAsUpsertsThroughLSN = insertsAsUpsertsThroughLSN
    }

    /// Takes the next message of the session.
    ///
    /// - Throws: ``ChangeMappingError`` for what cannot be mapped (a change outside a
    ///   transaction, a table never described, a table without a key).
    mutating func map(_ message: PgOutputMessage) throws(ChangeMappingError) -> Output {
        switch message {
        case .begin(let finalLSN, let commitTimeMicros, let xid):
            transaction = Transaction(finalLSN: finalLSN, xid: xid, ts: Self.timestamp(postgresMicros: commitTimeMicros))
            return .none
        case .origin(_, let name):
            if name.hasPrefix(Self.skippedOriginPrefix) { transaction?.skipped = true }
            return .none
        case .relation(let relation):
            relations[relation.id] = relation
            return .none
        case .type:
            return .none
        case .commit(_, let endLSN, let commitTimeMicros):
            guard transaction != nil else { throw ChangeMappingError("a commit outside any transaction") }
            transaction = nil
            return .committed(endLSN: endLSN, commitTimeMs: Self.unixMs(postgresMicros: commitTimeMicros))
        case .message(let transactional, let lsn, _):
            return transactional ? .none : .outsideMessage(lsn: lsn)
        case .truncate(let ids):
            return .truncate(ids.map { relations[$0]?.qualifiedName ?? "relation \($0)" })
        case .insert(let relationID, let new):
            guard let (relation, current, position) = try nextChange(relationID) else { return .skippedChange(skippedPosition) }
            let upsert = insertsAsUpsertsThroughLSN.map { current.finalLSN <= $0 } ?? false
            return .change(position, [try entry(relation, current, op: upsert ? .upsert : .insert, key: try Self.key(relation, new), values: new)])
        case .update(let relationID, let old, let new):
            guard let (relation, current, position) = try nextChange(relationID) else { return .skippedChange(skippedPosition) }
            let newKey = try Self.key(relation, new)
            var entries: [Entry] = []
            if let old {
                let oldKey = try Self.key(relation, old)
                if oldKey != newKey { entries.append(try entry(relation, current, op: .delete, key: oldKey, values: nil)) }
            }
            entries.append(try entry(relation, current, op: .upsert, key: newKey, values: new))
            return .change(position, entries)
        case .delete(let relationID, let old):
            guard let (relation, current, position) = try nextChange(relationID) else { return .skippedChange(skippedPosition) }
            return .change(position, [try entry(relation, current, op: .delete, key: try Self.key(relation, old), values: nil)])
        }
    }

    /// The position of the last change counted by ``nextChange(_:)``.
    private var skippedPosition: SourcePosition {
        SourcePosition(commit: transaction?.finalLSN ?? 0, change: (transaction?.nextChange ?? 1) - 1)
    }

    /// Counts a change of the open transaction: its table, the transaction and its position, or
    /// nil when the transaction is skipped (``skippedPosition`` is then its position).
    private mutating func nextChange(_ relationID: UInt32) throws(ChangeMappingError) -> (PgOutputRelation, Transaction, SourcePosition)? {
        guard var current = transaction else { throw ChangeMappingError("a change outside any transaction") }
        guard let relation = relations[relationID] else {
            throw ChangeMappingError("a change of relation \(relationID), which no relation message described")
        }
        guard current.nextChange < UInt32.max else { throw ChangeMappingError("more than \(UInt32.max) changes in one transaction") }
        let position = SourcePosition(commit: current.finalLSN, change: current.nextChange)
        current.nextChange += 1
        transaction = current
        return current.skipped ? nil : (relation, current, position)
    }

    private func entry(
        _ relation: PgOutputRelation, _ transaction: Transaction, op: EntryOperation, key: String, values: [PgOutputValue]?
    ) throws(ChangeMappingError) -> Entry {
        try Self.entry(sourceName: sourceName, relation, op: op, key: key, values: values, ts: transaction.ts, extra: [
            "lsn": .string(Self.lsnText(transaction.finalLSN)),
            "xid": .int(Int64(transaction.xid)),
            "change": .int(Int64(transaction.nextChange - 1)),
        ])
    }

    /// An entry of `relation`'s row: `fields` from `values` (nil for a delete) as the type says.
    static func entry(
        sourceName: String, _ relation: PgOutputRelation, op: EntryOperation, key: String, values: [PgOutputValue]?, ts: String,
        extra: [String: JSONValue]
    ) throws(ChangeMappingError) -> Entry {
        var fields: [String: JSONValue] = [:]
        if let values {
            guard values.count == relation.columns.count else {
                throw ChangeMappingError("\(relation.qualifiedName): a row of \(values.count) values for \(relation.columns.count) columns")
            }
            for (column, value) in zip(relation.columns, values) {
                switch value {
                case .unchangedToast: continue
                case .null: fields[column.name] = .null
                case .text(let text): fields[column.name] = Self.json(text, typeOID: column.typeOID)
                }
            }
        }
        // Written here rather than by JSONEncoder (Entry's default): capture spends most of its
        // time making entries, and this writer is several times faster.
        var writer = JSONDocumentWriter()
        writer.beginObject()
        writer.member("org", string: sourceName)
        writer.member("object", string: relation.qualifiedName)
        writer.member("op", string: op.rawValue)
        writer.member("key", string: key)
        writer.member("ts", string: ts)
        if values != nil { writer.member("fields", value: .object(fields)) }
        for name in extra.keys.sorted() { writer.member(name, value: extra[name] ?? .null) }
        writer.endObject()
        return Entry(offset: 0, org: sourceName, object: relation.qualifiedName, op: op, key: key, ts: ts, fields: fields, extra: extra,
                     raw: writer.bytes)
    }

    /// The key of a row: see the type's documentation.
    static func key(_ relation: PgOutputRelation, _ values: [PgOutputValue]) throws(ChangeMappingError) -> String {
        guard values.count == relation.columns.count else {
            throw ChangeMappingError("\(relation.qualifiedName): a row of \(values.count) values for \(relation.columns.count) columns")
        }
        var parts: [String?] = []
        for (column, value) in zip(relation.columns, values) where column.isKey {
            switch value {
            case .text(let text): parts.append(text)
            case .null: parts.append(nil)
            case .unchangedToast:
                throw ChangeMappingError("\(relation.qualifiedName): key column \(column.name) was not sent (unchanged TOAST)")
            }
        }
        guard !parts.isEmpty else { throw ChangeMappingError.noKey(relation.qualifiedName) }
        if parts.count == 1, let only = parts[0], let first = only.first, first != "[" { return only }
        let array = JSONValue.array(parts.map { $0.map(JSONValue.string) ?? .null })
        return String(decoding: (try? JSONEncoder().encode(array)) ?? Data("[]".utf8), as: UTF8.self)
    }

    // MARK: - Values

    /// PostgreSQL type OIDs (pg_type.dat) whose text forms become JSON of their own kind.
    enum TypeOID {
        static let bool: UInt32 = 16
        static let int8: UInt32 = 20
        static let int2: UInt32 = 21
        static let int4: UInt32 = 23
        static let oid: UInt32 = 26
        static let json: UInt32 = 114
        static let float4: UInt32 = 700
        static let float8: UInt32 = 701
        static let jsonb: UInt32 = 3802
    }

    /// A column's text value as JSON (see the type's documentation).
    static func json(_ text: String, typeOID: UInt32) -> JSONValue {
        switch typeOID {
        case TypeOID.bool:
            // "t"/"f" from the type's output (pgoutput); "true"/"false" from `::text` (the snapshot).
            switch text {
            case "t", "true": return .bool(true)
            case "f", "false": return .bool(false)
            default: return .string(text)
            }
        case TypeOID.int2, TypeOID.int4, TypeOID.int8, TypeOID.oid:
            return Int64(text).map(JSONValue.int) ?? .string(text)
        case TypeOID.float4, TypeOID.float8:
            guard let value = Double(text), value.isFinite else { return .string(text) }
            return .double(value)
        case TypeOID.json, TypeOID.jsonb:
            guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)), isFinite(value) else { return .string(text) }
            return value
        default:
            return .string(text)
        }
    }

    /// No number in `value` is NaN or infinite (JSON has no way to write one).
    static func isFinite(_ value: JSONValue) -> Bool {
        switch value {
        case .double(let number): number.isFinite
        case .array(let items): items.allSatisfy(isFinite)
        case .object(let members): members.values.allSatisfy(isFinite)
        default: true
        }
    }

    /// An LSN as PostgreSQL writes it: `X/Y`, both halves in upper-case hex.
    static func lsnText(_ lsn: UInt64) -> String {
        String(lsn >> 32, radix: 16, uppercase: true) + "/" + String(lsn & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    /// Reads `X/Y`; nil for anything else.
    static func lsn(_ text: String) -> UInt64? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
              let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16)
        else { return nil }
        return high << 32 | low
    }

    /// Microseconds since 2000-01-01 UTC (PostgreSQL's epoch) as milliseconds since 1970; nil
    /// before 1970 or beyond Int64.
    static func unixMs(postgresMicros: Int64) -> UInt64? {
        let (unixMicros, overflow) = postgresMicros.addingReportingOverflow(PgOutputMessage.postgresEpochOffsetMicros)
        guard !overflow, unixMicros >= 0 else { return nil }
        return UInt64(unixMicros / 1000)
    }

    /// Microseconds since 2000-01-01 UTC (PostgreSQL's epoch) as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    static func timestamp(postgresMicros: Int64) -> String {
        let (unixMicros, overflow) = postgresMicros.addingReportingOverflow(PgOutputMessage.postgresEpochOffsetMicros)
        guard !overflow else { return String(postgresMicros) }
        let micros = unixMicros.quotientAndRemainder(dividingBy: 1_000_000)
        var seconds = micros.quotient
        var fraction = micros.remainder
        if fraction < 0 { fraction += 1_000_000; seconds -= 1 }
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 { secondOfDay += 86_400; days -= 1 }
        let (year, month, day) = civilDate(daysSinceUnixEpoch: days)
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let fractionText = String(fraction)
        return "\(year)-\(two(month))-\(two(day))T\(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60))."
            + String(repeating: "0", count: 6 - fractionText.count) + fractionText + "Z"
    }

    /// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
    static func civilDate(daysSinceUnixEpoch days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// The position an entry records, if this source (`org` = its name) made it.
    static func position(of entry: Entry, sourceName: String) -> SourcePosition? {
        guard entry.org == sourceName, case .string(let lsnText)? = entry.extra["lsn"], let lsn = lsn(lsnText),
              case .int(let change)? = entry.extra["change"], let index = UInt32(exactly: change)
        else { return nil }
        return SourcePosition(commit: lsn, change: index)
    }
}

/// Why a change cannot be mapped to entries.
struct ChangeMappingError: Error, Sendable, Hashable, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }

    static func noKey(_ table: String) -> ChangeMappingError {
        ChangeMappingError("table \(table) has no primary key and no REPLICA IDENTITY FULL, so its rows have no key: "
            + "add a primary key, or ALTER TABLE \(table) REPLICA IDENTITY FULL")
    }
}
