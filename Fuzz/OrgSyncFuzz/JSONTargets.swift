import Foundation
import OrgSyncPluginAPI

/// JSON values equal as JSON: numbers compare by value (the encoder writes 1.0 as `1`, which
/// parses back as an integer; -0.0 as `-0`).
func sameJSON(_ a: JSONValue, _ b: JSONValue) -> Bool {
    switch (a, b) {
    case (.null, .null): return true
    case (.bool(let x), .bool(let y)): return x == y
    case (.string(let x), .string(let y)): return x == y
    case (.int(let x), .int(let y)): return x == y
    case (.double(let x), .double(let y)): return x == y
    case (.int(let x), .double(let y)), (.double(let y), .int(let x)): return Double(x) == y
    case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { sameJSON($0, $1) }
    case (.object(let x), .object(let y)):
        return x.count == y.count && x.allSatisfy { key, value in y[key].map { sameJSON(value, $0) } ?? false }
    default: return false
    }
}

func encodeJSON(_ value: some Encodable) -> [UInt8]? {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? encoder.encode(value)).map { Array($0) }
}

/// Any bytes: the parser answers a value or an error. A value, encoded by JSONEncoder (what the
/// broker uses to write JSON), parses back to an equal value.
@Sendable func fuzzJSON(_ data: [UInt8]) {
    let value: JSONValue
    do {
        value = try JSONParser.parse(data)
    } catch {
        fuzzCheck(error.position >= 0 && error.position <= data.count, "error position \(error.position) outside the input")
        return
    }
    guard let encoded = encodeJSON(value) else {
        fuzzCheck(false, "JSONEncoder could not encode a parsed value")
        return
    }
    // The encoder nests no deeper than the value; the parser's default depth bound applies to both.
    guard let again = try? JSONParser.parse(encoded) else {
        fuzzCheck(false, "re-encoded value does not parse: \(String(decoding: encoded.prefix(200), as: UTF8.self))")
        return
    }
    fuzzCheck(sameJSON(value, again), "round trip changed the value")
}

/// Any bytes: an entry or a validation error. A parsed entry keeps the exact bytes, and its
/// `jsonData()` (what adapters get when no raw bytes are kept) parses back to the same entry.
@Sendable func fuzzEntry(_ data: [UInt8]) {
    let entry: Entry
    do {
        entry = try Entry.parse(data)
    } catch {
        return
    }
    fuzzCheck(entry.raw == data, "raw bytes not kept")
    let json = Array(entry.jsonData())
    let again: Entry
    do {
        again = try Entry.parse(json)
    } catch {
        fuzzCheck(false, "jsonData() of a valid entry is invalid: \(error)")
        return
    }
    fuzzCheck(entry.org == again.org && entry.object == again.object && entry.op == again.op
        && entry.key == again.key && entry.ts == again.ts, "jsonData() changed a member")
    fuzzCheck(sameJSON(.object(entry.fields), .object(again.fields)), "jsonData() changed the fields")
    fuzzCheck(sameJSON(.object(entry.extra), .object(again.extra)), "jsonData() changed the extra members")
}
