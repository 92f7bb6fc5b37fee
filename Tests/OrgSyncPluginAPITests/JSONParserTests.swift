import Foundation
import OrgSyncPluginAPI
import Testing

@Suite struct JSONParserTests {
    @Test func parsesTheShapesEntriesUse() throws {
        let value = try JSONParser.parse(Array(#" {"a":1,"b":-2.5e3,"c":"x\n\u00e9\ud83d\ude00","d":[true,false,null,{}],"e":{"f":[]},"g":0,"h":9223372036854775807,"i":9223372036854775808} "#.utf8))
        guard case .object(let o) = value else {
            Issue.record("not an object")
            return
        }
        #expect(o["a"] == .int(1))
        #expect(o["b"] == .double(-2500))
        #expect(o["c"] == .string("x\né😀"))
        #expect(o["d"] == .array([.bool(true), .bool(false), .null, .object([:])]))
        #expect(o["e"] == .object(["f": .array([])]))
        #expect(o["g"] == .int(0))
        #expect(o["h"] == .int(Int64.max))
        #expect(o["i"] == .double(9223372036854775808))
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", ".5", "-", "1e", "+1", "\"\\x\"",
        "\"a", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "tru", "nul", "[1 2]", "{} {}", "\"\u{01}\"", "1e999",
        "[\"\\u12\"]", "NaN", "Infinity",
    ])
    func rejectsInvalidJSON(text: String) {
        #expect(throws: JSONParser.Error.self, "\(text.debugDescription)") { try JSONParser.parse(Array(text.utf8)) }
    }

    @Test func rejectsInvalidUTF8AndDeepNesting() {
        #expect(throws: JSONParser.Error.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONParser.Error.self) { try JSONParser.parse([0x22, 0xED, 0xA0, 0x80, 0x22]) }  // UTF-8 surrogate
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParser.Error.self) { try JSONParser.parse(Array(deep.utf8)) }
        let ok = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        #expect((try? JSONParser.parse(Array(ok.utf8))) != nil)
    }

    /// Seeded random documents: this parser and Foundation agree on every one.
    @Test func agreesWithFoundationOnRandomDocuments() throws {
        var rng = SystemRandomNumberGeneratorSeeded(seed: 5)
        for round in 0..<400 {
            let value = randomValue(&rng, depth: 0)
            let data = try JSONSerialization.data(withJSONObject: ["v": value], options: [.fragmentsAllowed])
            let ours = try JSONParser.parse(Array(data))
            let theirs = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
            #expect(equal(ours, theirs), "round \(round): \(String(decoding: data, as: UTF8.self))")
        }
    }

    func randomValue(_ rng: inout SystemRandomNumberGeneratorSeeded, depth: Int) -> Any {
        switch rng.next() % (depth > 3 ? 4 : 6) {
        case 0: return Int(truncatingIfNeeded: rng.next()) % 100_000
        case 1: return ["plain", "ünï", "quote\"back\\slash", "tab\tnl\n", "😀 emoji", "", "/slash"][Int(rng.next() % 7)]
        case 2: return rng.next() % 2 == 0
        case 3: return Double(Int(rng.next() % 1_000_000)) / 64.0
        case 4: return (0..<Int(rng.next() % 4)).map { _ in randomValue(&rng, depth: depth + 1) }
        default:
            var object: [String: Any] = [:]
            for i in 0..<Int(rng.next() % 4) { object["k\(i)\(rng.next() % 3)"] = randomValue(&rng, depth: depth + 1) }
            return object
        }
    }

    func equal(_ ours: JSONValue, _ theirs: Any) -> Bool {
        switch ours {
        case .null: return theirs is NSNull
        case .bool(let b): return (theirs as? Bool) == b
        case .int(let i): return (theirs as? NSNumber)?.int64Value == i
        case .double(let d): return (theirs as? NSNumber)?.doubleValue == d
        case .string(let s): return (theirs as? String) == s
        case .array(let items):
            guard let other = theirs as? [Any], other.count == items.count else { return false }
            return zip(items, other).allSatisfy { equal($0, $1) }
        case .object(let members):
            guard let other = theirs as? [String: Any], other.count == members.count else { return false }
            return members.allSatisfy { key, value in other[key].map { equal(value, $0) } ?? false }
        }
    }
}

struct SystemRandomNumberGeneratorSeeded: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
