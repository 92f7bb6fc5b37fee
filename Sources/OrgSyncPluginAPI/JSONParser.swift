/// A strict, single-pass JSON parser over UTF-8 bytes (RFC 8259), producing ``JSONValue``.
///
/// The broker validates every entry it receives and parses every entry a link applies, so this
/// runs on the hot path: it allocates only for the values it returns, never throws for control
/// flow, validates UTF-8 inside strings, and bounds nesting (`depthMax`) so hostile input cannot
/// exhaust the stack.
package struct JSONParser {
    /// Why bytes are not one JSON value; `position` is the byte offset of the problem.
    package struct Error: Swift.Error, Sendable, Hashable, CustomStringConvertible {
        package var position: Int
        package var problem: String
        package var description: String { "\(problem) at byte \(position)" }
    }

    package static let depthMaxDefault = 64

    /// Parses exactly one JSON value (surrounding whitespace allowed).
    package static func parse(_ bytes: some Collection<UInt8>, depthMax: Int = depthMaxDefault) throws(JSONParser.Error) -> JSONValue {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { (buffer) throws(JSONParser.Error) -> JSONValue in
            var parser = Cursor(bytes: buffer, depthMax: depthMax)
            parser.skipWhitespace()
            let value = try parser.parseValue(depth: 0)
            parser.skipWhitespace()
            guard parser.index == buffer.count else { throw parser.fail("unexpected bytes after the value") }
            return value
        }
    }

    struct Cursor {
        let bytes: UnsafeBufferPointer<UInt8>
        let depthMax: Int
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>, depthMax: Int) {
            self.bytes = bytes
            self.depthMax = depthMax
        }

        func fail(_ problem: String) -> JSONParser.Error { JSONParser.Error(position: index, problem: problem) }

        var atEnd: Bool { index >= bytes.count }
        var current: UInt8 { bytes[index] }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func parseValue(depth: Int) throws(JSONParser.Error) -> JSONValue {
            guard !atEnd else { throw fail("unexpected end of input") }
            switch current {
            case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
            case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
            case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
            case UInt8(ascii: "n"): try expectLiteral("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
            default: throw fail("unexpected character")
            }
        }

        mutating func expectLiteral(_ literal: StaticString) throws(JSONParser.Error) {
            let count = literal.utf8CodeUnitCount
            guard bytes.count - index >= count else { throw fail("unexpected end of input") }
            let start = literal.utf8Start
            for i in 0..<count where bytes[index + i] != start[i] { throw fail("invalid literal") }
            index += count
        }

        mutating func parseObject(depth: Int) throws(JSONParser.Error) -> JSONValue {
            guard depth <= depthMax else { throw fail("nested deeper than \(depthMax)") }
            index += 1
            var members: [String: JSONValue] = [:]
            skipWhitespace()
            if !atEnd && current == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard !atEnd, current == UInt8(ascii: "\"") else { throw fail("expected a member name") }
                let key = try parseString()
                skipWhitespace()
                guard !atEnd, current == UInt8(ascii: ":") else { throw fail("expected ':'") }
                index += 1
                skipWhitespace()
                members[key] = try parseValue(depth: depth)
                skipWhitespace()
                guard !atEnd else { throw fail("unexpected end of input in an object") }
                if current == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard current == UInt8(ascii: "}") else { throw fail("expected ',' or '}'") }
                index += 1
                return .object(members)
            }
        }

        mutating func parseArray(depth: Int) throws(JSONParser.Error) -> JSONValue {
            guard depth <= depthMax else { throw fail("nested deeper than \(depthMax)") }
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if !atEnd && current == UInt8(ascii: "]") {
                index += 1
                return .array(items)
            }
            while true {
                skipWhitespace()
                items.append(try parseValue(depth: depth))
                skipWhitespace()
                guard !atEnd else { throw fail("unexpected end of input in an array") }
                if current == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard current == UInt8(ascii: "]") else { throw fail("expected ',' or ']'") }
                index += 1
                return .array(items)
            }
        }

        mutating func parseString() throws(JSONParser.Error) -> String {
            index += 1  // opening quote
            let start = index
            // Fast path: no escapes; validate UTF-8 once over the run.
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let run = UnsafeBufferPointer(rebasing: bytes[start..<index])
                    guard let text = String(validating: run, as: UTF8.self) else { throw fail("invalid UTF-8 in a string") }
                    index += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 { throw fail("unescaped control character in a string") }
                index += 1
            }
            guard index < bytes.count else { throw fail("unterminated string") }
            // Slow path: escapes.
            var scalars: [UInt8] = Array(bytes[start..<index])
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    guard let text = String(validating: scalars, as: UTF8.self) else { throw fail("invalid UTF-8 in a string") }
                    index += 1
                    return text
                }
                if byte < 0x20 { throw fail("unescaped control character in a string") }
                if byte != UInt8(ascii: "\\") {
                    scalars.append(byte)
                    index += 1
                    continue
                }
                index += 1
                guard index < bytes.count else { throw fail("unterminated escape") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): scalars.append(0x22)
                case UInt8(ascii: "\\"): scalars.append(0x5C)
                case UInt8(ascii: "/"): scalars.append(0x2F)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try parseHex4()
                    if (0xD800...0xDBFF).contains(code) {
                        // A high surrogate must be followed by an escaped low surrogate.
                        guard bytes.count - index >= 6, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw fail("lone high surrogate")
                        }
                        index += 2
                        let low = try parseHex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("invalid low surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(code) {
                        throw fail("lone low surrogate")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw fail("invalid \\u escape") }
                    scalars.append(contentsOf: UTF8.encode(scalar).map { Array($0) } ?? [])
                default:
                    throw fail("invalid escape")
                }
            }
            throw fail("unterminated string")
        }

        mutating func parseHex4() throws(JSONParser.Error) -> UInt32 {
            guard bytes.count - index >= 4 else { throw fail("truncated \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[index]
                let digit: UInt32
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - UInt8(ascii: "A") + 10)
                default: throw fail("invalid hex digit in \\u escape")
                }
                value = value << 4 | digit
                index += 1
            }
            return value
        }

        mutating func parseNumber() throws(JSONParser.Error) -> JSONValue {
            let start = index
            if current == UInt8(ascii: "-") { index += 1 }
            guard !atEnd else { throw fail("truncated number") }
            if current == UInt8(ascii: "0") {
                index += 1
            } else if (UInt8(ascii: "1")...UInt8(ascii: "9")).contains(current) {
                while !atEnd && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(current) { index += 1 }
            } else {
                throw fail("invalid number")
            }
            var integral = true
            if !atEnd && current == UInt8(ascii: ".") {
                integral = false
                index += 1
                guard !atEnd, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(current) else { throw fail("invalid fraction") }
                while !atEnd && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(current) { index += 1 }
            }
            if !atEnd && (current == UInt8(ascii: "e") || current == UInt8(ascii: "E")) {
                integral = false
                index += 1
                if !atEnd && (current == UInt8(ascii: "+") || current == UInt8(ascii: "-")) { index += 1 }
                guard !atEnd, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(current) else { throw fail("invalid exponent") }
                while !atEnd && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(current) { index += 1 }
            }
            // The text is ASCII by construction.
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if integral, let value = Int64(text) { return .int(value) }
            guard let value = Double(text), value.isFinite else { throw JSONParser.Error(position: start, problem: "number out of range") }
            return .double(value)
        }
    }
}
