#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What an entry asks the target to do with the record `object`/`key`.
public enum EntryOperation: String, Sendable, Hashable, Codable, CaseIterable {
    /// Create the record; the target may reject it if the key already exists.
    case insert
    /// Create the record or update the given fields of an existing one.
    case upsert
    /// Remove the record; removing a record that is not there is not an error.
    case delete
}

/// One data update event: `{"org","object","op","key","ts","fields"}`.
///
/// Members other than these six are kept, unread, in ``extra``; ``raw`` holds the exact bytes
/// the producer sent (and the log stored), for adapters that forward entries as they are.
public struct Entry: Sendable, Hashable {
    /// Position in the stream. Assigned by the broker; unique and increasing within a stream.
    public var offset: Offset
    /// The source org (tenant) the change comes from.
    public var org: String
    /// The kind of record, e.g. `Contact`. SQL adapters map it to a table.
    public var object: String
    public var op: EntryOperation
    /// The record's primary key within `object`.
    public var key: String
    /// The producer's timestamp, as sent (ISO-8601 in the shared workload). Not interpreted.
    public var ts: String
    /// The changed fields. Empty for a delete.
    public var fields: [String: JSONValue]
    /// Members of the entry other than the six above, kept as they were.
    public var extra: [String: JSONValue]
    /// The entry exactly as the producer sent it (UTF-8 JSON, one object).
    public var raw: [UInt8]

    public init(
        offset: Offset, org: String, object: String, op: EntryOperation, key: String, ts: String,
        fields: [String: JSONValue] = [:], extra: [String: JSONValue] = [:], raw: [UInt8]? = nil
    ) {
        self.offset = offset
        self.org = org
        self.object = object
        self.op = op
        self.key = key
        self.ts = ts
        self.fields = fields
        self.extra = extra
        self.raw = raw ?? []
        if raw == nil { self.raw = Array(self.jsonData()) }
    }

    /// Parses and validates one entry from its JSON bytes.
    ///
    /// - Throws: ``EntryValidationError`` naming the member and the problem. Nothing is assumed
    ///   about the input: it may be any bytes, including invalid UTF-8.
    public static func parse(_ bytes: some Collection<UInt8>, offset: Offset = 0) throws(EntryValidationError) -> Entry {
        let raw = Array(bytes)
        let object: [String: JSONValue]
        do {
            guard case .object(let members) = try JSONParser.parse(raw) else {
                throw EntryValidationError(field: nil, problem: "an entry must be a JSON object")
            }
            object = members
        } catch let error as JSONParser.Error {
            throw EntryValidationError(field: nil, problem: "not valid JSON: \(error)")
        } catch let error as EntryValidationError {
            throw error
        } catch {
            throw EntryValidationError(field: nil, problem: "not valid JSON")
        }
        func string(_ name: String) throws(EntryValidationError) -> String {
            guard let value = object[name] else {
                throw EntryValidationError(field: name, problem: "is required")
            }
            guard case .string(let text) = value else {
                throw EntryValidationError(field: name, problem: "must be a string, not \(value.typeName)")
            }
            guard !text.isEmpty else {
                throw EntryValidationError(field: name, problem: "must not be empty")
            }
            return text
        }
        let org = try string("org")
        let objectName = try string("object")
        let opText = try string("op")
        guard let op = EntryOperation(rawValue: opText) else {
            throw EntryValidationError(field: "op", problem: "must be one of insert, upsert, delete")
        }
        let key = try string("key")
        let ts = try string("ts")
        var fields: [String: JSONValue] = [:]
        switch object["fields"] {
        case nil, .null?:
            break
        case .object(let members)?:
            fields = members
        case let other?:
            throw EntryValidationError(field: "fields", problem: "must be an object, not \(other.typeName)")
        }
        var extra = object
        for name in Entry.knownMembers { extra.removeValue(forKey: name) }
        return Entry(
            offset: offset, org: org, object: objectName, op: op, key: key, ts: ts,
            fields: fields, extra: extra, raw: raw)
    }

    /// The six members every entry has.
    public static let knownMembers: [String] = ["org", "object", "op", "key", "ts", "fields"]

    /// The entry as a JSON object (sorted keys). Adapters that need the original bytes use ``raw``.
    public func jsonData() -> Data {
        var members = extra
        members["org"] = .string(org)
        members["object"] = .string(object)
        members["op"] = .string(op.rawValue)
        members["key"] = .string(key)
        members["ts"] = .string(ts)
        if !fields.isEmpty || op != .delete { members["fields"] = .object(fields) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a tree of JSONValue cannot fail: every case maps to a JSON value (non-finite
        // doubles cannot come from parsed JSON). Fall back to an empty object rather than trap.
        return (try? encoder.encode(members)) ?? Data("{}".utf8)
    }
}

/// Why bytes are not a valid entry. `field` is nil when the problem is with the whole entry.
public struct EntryValidationError: Error, Sendable, Hashable, CustomStringConvertible {
    public var field: String?
    public var problem: String

    public init(field: String?, problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String {
        if let field { return "\"\(field)\" \(problem)" }
        return problem
    }
}

/// Consecutive entries of one stream, in offset order, handed to an adapter as one unit.
public struct EntryBatch: Sendable, Hashable {
    /// The stream the entries come from.
    public var stream: String
    /// The stream's id and epoch: store them with the applied offset (see ``AppliedPosition``).
    public var identity: StreamIdentity
    /// Entries in increasing offset order. Never empty when passed to ``OrgAdapter/apply(_:)``.
    /// Offsets are increasing but not always dense: an entry the link dead-lettered is left out.
    public var entries: [Entry]
    /// True when the link re-sends one entry from its dead letters at an operator's request.
    /// Apply it even though its offset may be at or below the applied offset you store (it was
    /// skipped, not applied), and do not move that stored offset backwards.
    public var isDeadLetterRetry: Bool
    /// Which ownership of the link sends this batch: 0 on a standalone broker; in a cluster, the
    /// epoch of the lease under which this member owns the link, higher for every new owner.
    /// Store it with the position; a batch whose owner epoch is below the stored one applies
    /// nothing (``StoredPositionVerdict/fenced(_:)``): it comes from a member that lost the link.
    public var ownerEpoch: UInt64

    public init(stream: String, identity: StreamIdentity, entries: [Entry], isDeadLetterRetry: Bool = false, ownerEpoch: UInt64 = 0) {
        self.stream = stream
        self.identity = identity
        self.entries = entries
        self.isDeadLetterRetry = isDeadLetterRetry
        self.ownerEpoch = ownerEpoch
    }

    public var firstOffset: Offset? { entries.first?.offset }
    public var lastOffset: Offset? { entries.last?.offset }
    public var count: Int { entries.count }
}
