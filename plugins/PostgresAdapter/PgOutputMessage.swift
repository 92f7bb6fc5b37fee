/// One message of PostgreSQL's built-in logical decoding output plugin `pgoutput`, protocol
/// version 1 (PostgreSQL 10+; "Logical Replication Message Formats" in the server's docs), as
/// `pg_logical_slot_peek_binary_changes` returns them: one message per row.
///
/// Parsing is pure and checks every length against the bytes it has: the bytes come from a
/// server, and a bad or truncated message is an error naming the problem, never a trap or an
/// allocation the input alone sized.
enum PgOutputMessage: Sendable, Hashable {
    /// 'B': a transaction starts. `finalLSN` is its commit record's LSN.
    case begin(finalLSN: UInt64, commitTimeMicros: Int64, xid: UInt32)
    /// 'C': the transaction ends. Decoding continues after `endLSN`: acknowledging it (slot
    /// advance) means this transaction is never sent again.
    case commit(commitLSN: UInt64, endLSN: UInt64, commitTimeMicros: Int64)
    /// 'O': the transaction was made by a session with this replication origin.
    case origin(lsn: UInt64, name: String)
    /// 'R': describes a table before its first change in this decoding session.
    case relation(PgOutputRelation)
    /// 'Y': describes a type (sent for non-built-in types); not needed to map values.
    case type(oid: UInt32, namespace: String, name: String)
    case insert(relationID: UInt32, new: [PgOutputValue])
    /// `old` holds the old key ('K') or old row (REPLICA IDENTITY FULL: 'O') when they differ
    /// from what `new` says, else nil.
    case update(relationID: UInt32, old: [PgOutputValue]?, new: [PgOutputValue])
    case delete(relationID: UInt32, old: [PgOutputValue])
    case truncate(relationIDs: [UInt32])
    /// 'M': a message written with `pg_logical_emit_message` (the source's heartbeat).
    case message(transactional: Bool, lsn: UInt64, prefix: String)

    /// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
    static let postgresEpochOffsetMicros: Int64 = 946_684_800_000_000
    /// Most columns a table can have in PostgreSQL (MaxHeapAttributeNumber): a message saying
    /// more is refused before anything is allocated for it.
    static let columnsMax = 1_600
    /// Most relations one truncate message may name before the count is refused as garbage.
    static let truncatedRelationsMax = 100_000

    /// Parses one message.
    ///
    /// - Throws: ``PgOutputError`` naming the message kind and the problem.
    static func parse(_ bytes: [UInt8]) throws(PgOutputError) -> PgOutputMessage {
        var reader = PgOutputReader(bytes)
        let tag = try reader.byte("message kind")
        let message: PgOutputMessage
        switch tag {
        case UInt8(ascii: "B"):
            message = .begin(finalLSN: try reader.uint64("B final LSN"), commitTimeMicros: try reader.int64("B commit time"),
                             xid: try reader.uint32("B xid"))
        case UInt8(ascii: "C"):
            _ = try reader.byte("C flags")
            message = .commit(commitLSN: try reader.uint64("C commit LSN"), endLSN: try reader.uint64("C end LSN"),
                              commitTimeMicros: try reader.int64("C commit time"))
        case UInt8(ascii: "O"):
            message = .origin(lsn: try reader.uint64("O LSN"), name: try reader.string("O name"))
        case UInt8(ascii: "R"):
            message = .relation(try PgOutputRelation(reading: &reader))
        case UInt8(ascii: "Y"):
            message = .type(oid: try reader.uint32("Y oid"), namespace: try reader.string("Y namespace"), name: try reader.string("Y name"))
        case UInt8(ascii: "I"):
            let relationID = try reader.uint32("I relation")
            try reader.expect("N", "I")
            message = .insert(relationID: relationID, new: try reader.tuple("I tuple"))
        case UInt8(ascii: "U"):
            let relationID = try reader.uint32("U relation")
            var old: [PgOutputValue]?
            var kind = try reader.byte("U tuple kind")
            if kind == UInt8(ascii: "K") || kind == UInt8(ascii: "O") {
                old = try reader.tuple("U old tuple")
                kind = try reader.byte("U tuple kind")
            }
            guard kind == UInt8(ascii: "N") else { throw PgOutputError("U: expected a new tuple ('N'), found byte \(kind)") }
            message = .update(relationID: relationID, old: old, new: try reader.tuple("U new tuple"))
        case UInt8(ascii: "D"):
            let relationID = try reader.uint32("D relation")
            let kind = try reader.byte("D tuple kind")
            guard kind == UInt8(ascii: "K") || kind == UInt8(ascii: "O") else {
                throw PgOutputError("D: expected an old key or row ('K' or 'O'), found byte \(kind)")
            }
            message = .delete(relationID: relationID, old: try reader.tuple("D old tuple"))
        case UInt8(ascii: "T"):
            let count = try reader.uint32("T relation count")
            guard count <= truncatedRelationsMax else { throw PgOutputError("T: \(count) relations is more than \(truncatedRelationsMax)") }
            _ = try reader.byte("T options")
            var ids: [UInt32] = []
            for _ in 0..<count { ids.append(try reader.uint32("T relation")) }
            message = .truncate(relationIDs: ids)
        case UInt8(ascii: "M"):
            let flags = try reader.byte("M flags")
            let lsn = try reader.uint64("M LSN")
            let prefix = try reader.string("M prefix")
            let length = try reader.uint32("M length")
            try reader.skip(Int(length), "M content")
            message = .message(transactional: flags & 1 == 1, lsn: lsn, prefix: prefix)
        default:
            throw PgOutputError("unknown message kind byte \(tag) (this reader speaks pgoutput protocol version 1)")
        }
        guard reader.isAtEnd else { throw PgOutputError("\(Character(Unicode.Scalar(tag))): \(reader.remaining) bytes after the message") }
        return message
    }
}

/// A table as a relation message describes it.
struct PgOutputRelation: Sendable, Hashable {
    var id: UInt32
    var namespace: String
    var name: String
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    var replicaIdentity: UInt8
    var columns: [Column]

    struct Column: Sendable, Hashable {
        var name: String
        var typeOID: UInt32
        /// Part of the replica identity (the key; every column with REPLICA IDENTITY FULL).
        var isKey: Bool
    }

    init(id: UInt32, namespace: String, name: String, replicaIdentity: UInt8, columns: [Column]) {
        self.id = id
        self.namespace = namespace
        self.name = name
        self.replicaIdentity = replicaIdentity
        self.columns = columns
    }

    init(reading reader: inout PgOutputReader) throws(PgOutputError) {
        id = try reader.uint32("R relation")
        namespace = try reader.string("R namespace")
        name = try reader.string("R name")
        replicaIdentity = try reader.byte("R replica identity")
        let count = try reader.uint16("R column count")
        guard count <= PgOutputMessage.columnsMax else { throw PgOutputError("R: \(count) columns is more than \(PgOutputMessage.columnsMax)") }
        var columns: [Column] = []
        for _ in 0..<count {
            let flags = try reader.byte("R column flags")
            let name = try reader.string("R column name")
            let typeOID = try reader.uint32("R column type")
            _ = try reader.uint32("R column type modifier")
            columns.append(Column(name: name, typeOID: typeOID, isKey: flags & 1 == 1))
        }
        self.columns = columns
    }

    /// `schema.table`, or `table` in `public`.
    var qualifiedName: String { namespace == "public" ? name : namespace + "." + name }
}

/// One column's value in a tuple.
enum PgOutputValue: Sendable, Hashable {
    case null
    /// A TOASTed value the change did not touch: not sent, and must not be written as NULL.
    case unchangedToast
    /// The value in the type's text output format.
    case text(String)
}

/// Why a pgoutput message could not be read.
struct PgOutputError: Error, Sendable, Hashable, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Reads big-endian fields from a message, every read bounds-checked.
struct PgOutputReader {
    private let bytes: [UInt8]
    private var at = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { at == bytes.count }
    var remaining: Int { bytes.count - at }

    mutating func byte(_ what: String) throws(PgOutputError) -> UInt8 {
        guard at < bytes.count else { throw PgOutputError("\(what): message ends early") }
        defer { at += 1 }
        return bytes[at]
    }

    private mutating func unsigned(_ width: Int, _ what: String) throws(PgOutputError) -> UInt64 {
        guard remaining >= width else { throw PgOutputError("\(what): message ends early") }
        var value: UInt64 = 0
        for i in 0..<width { value = value << 8 | UInt64(bytes[at + i]) }
        at += width
        return value
    }

    mutating func uint16(_ what: String) throws(PgOutputError) -> UInt16 { UInt16(try unsigned(2, what)) }
    mutating func uint32(_ what: String) throws(PgOutputError) -> UInt32 { UInt32(try unsigned(4, what)) }
    mutating func uint64(_ what: String) throws(PgOutputError) -> UInt64 { try unsigned(8, what) }
    mutating func int64(_ what: String) throws(PgOutputError) -> Int64 { Int64(bitPattern: try unsigned(8, what)) }

    mutating func expect(_ tag: Unicode.Scalar, _ what: String) throws(PgOutputError) {
        let found = try byte("\(what) tuple kind")
        guard found == UInt8(ascii: tag) else { throw PgOutputError("\(what): expected '\(tag)', found byte \(found)") }
    }

    mutating func skip(_ count: Int, _ what: String) throws(PgOutputError) {
        guard count >= 0, remaining >= count else { throw PgOutputError("\(what): \(count) bytes announced, \(remaining) left") }
        at += count
    }

    /// A NUL-terminated string (UTF-8; the server's encoding must be UTF8 for the source).
    mutating func string(_ what: String) throws(PgOutputError) -> String {
        guard let end = bytes[at...].firstIndex(of: 0) else { throw PgOutputError("\(what): string without its terminating NUL") }
        defer { at = end + 1 }
        return String(decoding: bytes[at..<end], as: UTF8.self)
    }

    /// TupleData: a column count, then each column's kind and value.
    mutating func tuple(_ what: String) throws(PgOutputError) -> [PgOutputValue] {
        let count = try uint16("\(what) column count")
        guard count <= PgOutputMessage.columnsMax else { throw PgOutputError("\(what): \(count) columns is more than \(PgOutputMessage.columnsMax)") }
        var values: [PgOutputValue] = []
        values.reserveCapacity(Int(count))
        for _ in 0..<count {
            let kind = try byte("\(what) value kind")
            switch kind {
            case UInt8(ascii: "n"): values.append(.null)
            case UInt8(ascii: "u"): values.append(.unchangedToast)
            case UInt8(ascii: "t"):
                let length = Int(try uint32("\(what) value length"))
                guard remaining >= length else { throw PgOutputError("\(what): a value of \(length) bytes announced, \(remaining) left") }
                values.append(.text(String(decoding: bytes[at..<(at + length)], as: UTF8.self)))
                at += length
            default:
                // 'b' (binary) only comes with the `binary` option, which this reader never asks for.
                throw PgOutputError("\(what): unknown value kind byte \(kind)")
            }
        }
        return values
    }
}
