#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// The NATS client protocol as bytes (https://docs.nats.io/reference/reference-protocols/nats-protocol,
// checked against nats-server 2.9's parser). Pure: no I/O, so every rule is tested without a
// server, and the parser is what the fuzzer feeds.

/// What the server's bytes did not follow: a line too long, a size out of bounds, an operation
/// that does not exist. The connection cannot go on after one (the stream is out of step).
public struct NATSProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "NATS protocol: \(message)" }
}

/// The server's `INFO`: who it is and what it allows.
public struct NATSServerInfo: Sendable, Hashable, Decodable {
    public var serverID: String
    public var version: String
    /// Whether the server takes headers (`HPUB`, `HMSG`).
    public var headers: Bool
    /// The largest message (headers and payload) the server takes from this client, bytes.
    public var maxPayloadBytes: Int
    public var jetStream: Bool
    public var authRequired: Bool
    /// The server takes only TLS: the client upgrades right after this INFO.
    public var tlsRequired: Bool
    /// The server takes TLS and plain connections alike (its `allow_non_tls`).
    public var tlsAvailable: Bool

    enum CodingKeys: String, CodingKey {
        case serverID = "server_id", version, headers, maxPayloadBytes = "max_payload", jetStream = "jetstream"
        case authRequired = "auth_required", tlsRequired = "tls_required", tlsAvailable = "tls_available"
    }

    public init(serverID: String, version: String, headers: Bool, maxPayloadBytes: Int, jetStream: Bool = false,
                authRequired: Bool = false, tlsRequired: Bool = false, tlsAvailable: Bool = false) {
        self.serverID = serverID
        self.version = version
        self.headers = headers
        self.maxPayloadBytes = maxPayloadBytes
        self.jetStream = jetStream
        self.authRequired = authRequired
        self.tlsRequired = tlsRequired
        self.tlsAvailable = tlsAvailable
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        serverID = try c.decode(String.self, forKey: .serverID)
        version = try c.decodeIfPresent(String.self, forKey: .version) ?? ""
        headers = try c.decodeIfPresent(Bool.self, forKey: .headers) ?? false
        maxPayloadBytes = try c.decode(Int.self, forKey: .maxPayloadBytes)
        jetStream = try c.decodeIfPresent(Bool.self, forKey: .jetStream) ?? false
        authRequired = try c.decodeIfPresent(Bool.self, forKey: .authRequired) ?? false
        tlsRequired = try c.decodeIfPresent(Bool.self, forKey: .tlsRequired) ?? false
        tlsAvailable = try c.decodeIfPresent(Bool.self, forKey: .tlsAvailable) ?? false
    }
}

/// A message's header block: an optional status (`NATS/1.0 503`) and `Name: value` fields, in
/// order, names kept exactly (the server looks them up by exact spelling).
public struct NATSHeaders: Sendable, Hashable {
    public struct Field: Sendable, Hashable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The status code of a status message (503 no responders, 404, 408, 409, 100).
    public var status: Int?
    public var statusDescription: String?
    public var fields: [Field]

    public init(_ fields: [Field] = [], status: Int? = nil, statusDescription: String? = nil) {
        self.fields = fields
        self.status = status
        self.statusDescription = statusDescription
    }

    /// The first value of the field named exactly `name`.
    public subscript(name: String) -> String? { fields.first { $0.name == name }?.value }

    static let versionLine = Array("NATS/1.0".utf8)

    /// Reads a header block (`NATS/1.0[ status[ description]]\r\n` + fields + `\r\n`).
    public static func parse(_ block: ArraySlice<UInt8>) throws(NATSProtocolError) -> NATSHeaders {
        var lines = NATSWire.lines(block)
        guard let first = lines.first, first.starts(with: versionLine) else {
            throw NATSProtocolError("a header block does not start with NATS/1.0")
        }
        lines.removeFirst()
        var headers = NATSHeaders()
        let statusText = NATSWire.trimmed(NATSWire.text(first.dropFirst(versionLine.count)))
        if !statusText.isEmpty {
            let code = statusText.prefix(3)
            guard code.count == 3, let status = Int(code) else { throw NATSProtocolError("a header status is not a 3-digit code") }
            headers.status = status
            let description = NATSWire.trimmed(String(statusText.dropFirst(3)))
            headers.statusDescription = description.isEmpty ? nil : description
        }
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else {
                throw NATSProtocolError("a header line has no name")
            }
            let name = NATSWire.text(line[line.startIndex..<colon])
            let value = NATSWire.trimmed(NATSWire.text(line[(colon + 1)...]))
            headers.fields.append(Field(name, value))
        }
        return headers
    }

    /// The block as a client sends it (never with a status). Nil when a name or value cannot be
    /// sent safely (a name outside printable ASCII or with `:`, a CR or LF in a value).
    public func encoded() -> [UInt8]? {
        var bytes = Self.versionLine + NATSWire.crlf
        for field in fields {
            guard !field.name.isEmpty, field.name.utf8.allSatisfy({ (33...126).contains($0) && $0 != UInt8(ascii: ":") }),
                  !field.value.utf8.contains(where: { $0 == 13 || $0 == 10 })
            else { return nil }
            bytes += Array(field.name.utf8) + Array(": ".utf8) + Array(field.value.utf8) + NATSWire.crlf
        }
        return bytes + NATSWire.crlf
    }
}

/// One message delivered on a subscription.
public struct NATSMessage: Sendable, Hashable {
    public var subject: String
    public var sid: UInt64
    public var replyTo: String?
    public var headers: NATSHeaders?
    public var payload: [UInt8]

    public init(subject: String, sid: UInt64, replyTo: String? = nil, headers: NATSHeaders? = nil, payload: [UInt8] = []) {
        self.subject = subject
        self.sid = sid
        self.replyTo = replyTo
        self.headers = headers
        self.payload = payload
    }

    /// A status message (no payload, a status in its headers): no responders, a timeout, ...
    public var status: Int? { payload.isEmpty ? headers?.status : nil }
}

/// One operation the server sent.
public enum NATSServerOp: Sendable, Hashable {
    case info(NATSServerInfo)
    case message(NATSMessage)
    case ping
    case pong
    case ok
    /// `-ERR '<text>'`, the quotes removed.
    case error(String)
}

/// Reads the server's byte stream into operations, incrementally: feed it what the socket
/// gave, then take operations until it needs more bytes. Bounded: a control line longer than
/// ``controlLineBytesMax`` or a message larger than `messageBytesMax` is an error before
/// anything is allocated for it, and no byte is scanned twice while a line is incomplete.
public struct NATSParser: Sendable {
    /// The longest control line taken from the server. Its own lines stay far below (a MSG line
    /// is two subjects and three numbers); an INFO grows with a cluster's `connect_urls`.
    public static let controlLineBytesMax = 65_536
    /// The range an INFO's `max_payload` must be in.
    public static let serverMaxPayloadBytes = 1...(64 << 20)
    /// The largest message (headers and payload) taken from the server, bytes.
    public let messageBytesMax: Int

    private var buffer: [UInt8] = []
    private var readIndex = 0
    /// Where the search for the current line's CRLF goes on (bytes before it hold none).
    private var scanIndex = 0
    /// A message whose control line was read, waiting for its bytes.
    private var pending: PendingMessage?

    private struct PendingMessage: Sendable {
        var subject: String
        var sid: UInt64
        var replyTo: String?
        var headerBytes: Int?
        var totalBytes: Int
    }

    public init(messageBytesMax: Int) { self.messageBytesMax = messageBytesMax }

    /// Bytes not yet taken as operations.
    public var bufferedBytes: Int { buffer.count - readIndex }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if readIndex > 0, readIndex >= buffer.count / 2 {
            buffer.removeFirst(readIndex)
            scanIndex = max(0, scanIndex - readIndex)
            readIndex = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole operation, or nil until more bytes come.
    public mutating func next() throws(NATSProtocolError) -> NATSServerOp? {
        if let message = pending { return try body(of: message) }
        guard let lineEnd = findLineEnd() else {
            if bufferedBytes > Self.controlLineBytesMax + 2 {
                throw NATSProtocolError("a control line is longer than \(Self.controlLineBytesMax) bytes")
            }
            return nil
        }
        let line = buffer[readIndex..<lineEnd]
        readIndex = lineEnd + 2
        guard line.count <= Self.controlLineBytesMax else {
            throw NATSProtocolError("a control line is longer than \(Self.controlLineBytesMax) bytes")
        }
        let (operation, rest) = NATSWire.splitOperation(line)
        switch operation {
        case "INFO":
            let info: NATSServerInfo
            do {
                info = try JSONDecoder().decode(NATSServerInfo.self, from: Data(rest))
            } catch {
                throw NATSProtocolError("an INFO does not hold the server's information (\(error))")
            }
            guard Self.serverMaxPayloadBytes.contains(info.maxPayloadBytes) else {
                throw NATSProtocolError("an INFO's max_payload \(info.maxPayloadBytes) is outside \(Self.serverMaxPayloadBytes)")
            }
            return .info(info)
        case "MSG", "HMSG":
            let message = try Self.messageLine(arguments: NATSWire.arguments(rest), withHeaders: operation == "HMSG", bytesMax: messageBytesMax)
            pending = message
            return try body(of: message)
        case "PING": return .ping
        case "PONG": return .pong
        case "+OK": return .ok
        case "-ERR":
            var text = NATSWire.trimmed(NATSWire.text(rest))
            if text.hasPrefix("'"), text.hasSuffix("'"), text.count >= 2 { text = String(text.dropFirst().dropLast()) }
            return .error(text)
        default:
            throw NATSProtocolError("unknown operation \"\(operation.prefix(16))\"")
        }
    }

    private static func messageLine(arguments: [String], withHeaders: Bool, bytesMax: Int) throws(NATSProtocolError) -> PendingMessage {
        let sizes = withHeaders ? 2 : 1
        guard arguments.count == 2 + sizes || arguments.count == 3 + sizes else {
            throw NATSProtocolError("\(withHeaders ? "HMSG" : "MSG") has \(arguments.count) arguments")
        }
        guard let sid = UInt64(arguments[1]) else { throw NATSProtocolError("a message's sid is not a number") }
        let replyTo = arguments.count == 3 + sizes ? arguments[2] : nil
        let total = try size(arguments[arguments.count - 1], bytesMax: bytesMax)
        var header: Int?
        if withHeaders {
            let headerBytes = try size(arguments[arguments.count - 2], bytesMax: bytesMax)
            guard headerBytes <= total, headerBytes >= NATSHeaders.versionLine.count + 4 else {
                throw NATSProtocolError("a message's header size \(headerBytes) does not fit its total \(total)")
            }
            header = headerBytes
        }
        return PendingMessage(subject: arguments[0], sid: sid, replyTo: replyTo, headerBytes: header, totalBytes: total)
    }

    /// A byte count: digits only, at most `bytesMax`.
    private static func size(_ text: String, bytesMax: Int) throws(NATSProtocolError) -> Int {
        guard !text.isEmpty, text.utf8.count <= 12, text.utf8.allSatisfy({ (48...57).contains($0) }), let value = Int(text) else {
            throw NATSProtocolError("a message size \"\(text.prefix(16))\" is not a number")
        }
        guard value <= bytesMax else { throw NATSProtocolError("a message of \(value) bytes is larger than \(bytesMax)") }
        return value
    }

    private mutating func body(of message: PendingMessage) throws(NATSProtocolError) -> NATSServerOp? {
        guard bufferedBytes >= message.totalBytes + 2 else { return nil }
        let start = readIndex
        let end = start + message.totalBytes
        guard buffer[end] == 13, buffer[end + 1] == 10 else { throw NATSProtocolError("a message is not followed by CRLF") }
        pending = nil
        readIndex = end + 2
        var headers: NATSHeaders?
        var payloadStart = start
        if let headerBytes = message.headerBytes {
            headers = try NATSHeaders.parse(buffer[start..<(start + headerBytes)])
            payloadStart = start + headerBytes
        }
        return .message(NATSMessage(
            subject: message.subject, sid: message.sid, replyTo: message.replyTo, headers: headers, payload: Array(buffer[payloadStart..<end])))
    }

    /// The index of the next `\r\n` from the read position, looking no further than a control
    /// line may be long, and not again at bytes an earlier call looked at.
    private mutating func findLineEnd() -> Int? {
        let limit = min(buffer.count - 1, readIndex + Self.controlLineBytesMax + 2)
        var index = max(readIndex, scanIndex)
        while index < limit {
            if buffer[index] == 13, buffer[index + 1] == 10 {
                scanIndex = index + 2
                return index
            }
            index += 1
        }
        scanIndex = max(readIndex, index)
        return nil
    }
}

/// What the client sends, as bytes, and the rules for subjects.
public enum NATSWire {
    static let crlf: [UInt8] = [13, 10]

    /// `CONNECT {json}\r\nPING\r\n`: the handshake, confirmed by the server's PONG.
    static func connect(_ json: [UInt8]) -> [UInt8] { Array("CONNECT ".utf8) + json + crlf + Array("PING\r\n".utf8) }
    static let ping = Array("PING\r\n".utf8)
    static let pong = Array("PONG\r\n".utf8)

    /// `PUB` (or `HPUB` with headers). The caller checked the subjects and the size.
    static func publish(subject: String, replyTo: String?, headerBlock: [UInt8]?, payload: [UInt8]) -> [UInt8] {
        let reply = replyTo.map { " " + $0 } ?? ""
        guard let headerBlock else {
            return Array("PUB \(subject)\(reply) \(payload.count)\r\n".utf8) + payload + crlf
        }
        return Array("HPUB \(subject)\(reply) \(headerBlock.count) \(headerBlock.count + payload.count)\r\n".utf8) + headerBlock + payload + crlf
    }

    static func subscribe(subject: String, sid: UInt64) -> [UInt8] { Array("SUB \(subject) \(sid)\r\n".utf8) }
    static func unsubscribe(sid: UInt64) -> [UInt8] { Array("UNSUB \(sid)\r\n".utf8) }

    /// Whether `subject` can be published to: dot-separated non-empty tokens of printable
    /// characters without wildcards, at most 1 024 bytes (a control line holds two of them).
    public static func isValidPublishSubject(_ subject: String) -> Bool {
        isValidSubject(subject, wildcards: false)
    }

    /// Whether `subject` can be subscribed to: as a publish subject, and `*` tokens and a last `>`
    /// token (a `*` or `>` inside a longer token is refused, though the server would take it
    /// literally).
    public static func isValidSubscribeSubject(_ subject: String) -> Bool { isValidSubject(subject, wildcards: true) }

    public static let subjectBytesMax = 1024

    private static func isValidSubject(_ subject: String, wildcards: Bool) -> Bool {
        guard !subject.isEmpty, subject.utf8.count <= subjectBytesMax,
              subject.utf8.allSatisfy({ $0 > 32 && $0 != 127 })
        else { return false }
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        for (index, token) in tokens.enumerated() {
            if token.isEmpty { return false }
            if token == "*" || token == ">" {
                guard wildcards, token == "*" || index == tokens.count - 1 else { return false }
            } else if token.contains("*") || token.contains(">") {
                return false  // a wildcard character inside a token: never meant literally here
            }
        }
        return true
    }

    // MARK: Reading helpers

    /// The operation name (upper-cased) and the bytes after it.
    static func splitOperation(_ line: ArraySlice<UInt8>) -> (String, ArraySlice<UInt8>) {
        let end = line.firstIndex { $0 == 32 || $0 == 9 } ?? line.endIndex
        let name = text(line[line.startIndex..<end]).uppercased()
        return (name, line[end...])
    }

    /// Arguments separated by runs of spaces or tabs.
    static func arguments(_ bytes: ArraySlice<UInt8>) -> [String] {
        bytes.split(whereSeparator: { $0 == 32 || $0 == 9 }).map { text($0) }
    }

    /// Lines of a header block, without their `\r\n`.
    static func lines(_ block: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        var lines: [ArraySlice<UInt8>] = []
        var start = block.startIndex
        var index = block.startIndex
        while index < block.endIndex {
            if block[index] == 13, index + 1 < block.endIndex, block[index + 1] == 10 {
                lines.append(block[start..<index])
                index += 2
                start = index
            } else {
                index += 1
            }
        }
        if start < block.endIndex { lines.append(block[start...]) }
        return lines
    }

    static func text(_ bytes: some Collection<UInt8>) -> String { String(decoding: bytes, as: UTF8.self) }

    /// `text` without leading and trailing spaces and tabs.
    static func trimmed(_ text: String) -> String {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = text.firstIndex(where: { !isBlank($0) }), let last = text.lastIndex(where: { !isBlank($0) }) else { return "" }
        return String(text[first...last])
    }
}
