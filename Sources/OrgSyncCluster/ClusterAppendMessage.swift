import OrgSyncLog
import OrgSyncNATS

/// One append of a stream, as one JetStream message: the whole append is stored or none of it
/// (a JetStream message is atomic), and its offsets are in its headers.
///
/// Headers: `Orgsync-Offset` (the first entry's offset), `Orgsync-Count`, `Orgsync-Time-Ms`
/// (append time), `Orgsync-Raw-Bytes` (the framed entries' size before compression, when the
/// payload is zlib-compressed) and, for a keyed append, `Orgsync-Fingerprint` (the entries'
/// ``EntriesFingerprint``, so a replay with other entries is told apart). The payload is the
/// entries framed as `u32 big-endian length` + bytes, zlib-compressed when they take at least
/// ``compressThresholdBytes`` and that is smaller.
///
/// Decoding treats the message as untrusted (it comes from a server): every number is parsed
/// and bounded, the framing must cover the payload exactly, and inflating stops at the
/// announced size.
public struct ClusterAppendMessage: Sendable, Hashable {
    public var firstOffset: UInt64
    public var timestampMs: Int64
    public var entries: [[UInt8]]
    public var fingerprint: EntriesFingerprint?

    /// The most entries one stored append may announce.
    public static let entriesMax = 1_000_000
    /// The most bytes a stored append's framed entries may inflate to (NATS's own payload
    /// ceiling is 64 MiB).
    public static let rawBytesMax = 64 << 20

    public init(firstOffset: UInt64, timestampMs: Int64, entries: [[UInt8]], fingerprint: EntriesFingerprint? = nil) {
        self.firstOffset = firstOffset
        self.timestampMs = timestampMs
        self.entries = entries
        self.fingerprint = fingerprint
    }

    /// Messages whose framed entries are smaller than this are stored uncompressed: deflate sets
    /// up a state of ~256 KiB for each message, which costs a small append more time than the
    /// bytes it saves are worth.
    public static let compressThresholdBytes = 1024

    /// The offset after this append's last entry.
    public var endOffset: UInt64 { firstOffset + UInt64(entries.count) }

    enum Header {
        static let offset = "Orgsync-Offset"
        static let count = "Orgsync-Count"
        static let timeMs = "Orgsync-Time-Ms"
        static let rawBytes = "Orgsync-Raw-Bytes"
        static let fingerprint = "Orgsync-Fingerprint"
    }

    /// The headers and payload to publish. `compressionLevel` nil (or a payload that does not
    /// shrink) stores the framed entries as they are.
    public func encoded(compressionLevel: Int32?) throws -> (headers: [NATSHeaders.Field], payload: [UInt8]) {
        var framed: [UInt8] = []
        framed.reserveCapacity(entries.reduce(0) { $0 + 4 + $1.count })
        for entry in entries {
            let length = UInt32(truncatingIfNeeded: entry.count)
            framed.append(contentsOf: [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)])
            framed.append(contentsOf: entry)
        }
        var headers: [NATSHeaders.Field] = [
            .init(Header.offset, String(firstOffset)),
            .init(Header.count, String(entries.count)),
            .init(Header.timeMs, String(timestampMs)),
        ]
        if let fingerprint { headers.append(.init(Header.fingerprint, Self.text(fingerprint))) }
        if let level = compressionLevel, framed.count >= Self.compressThresholdBytes {
            let compressed = try Zlib.compress(framed, level: level)
            if compressed.count < framed.count {
                headers.append(.init(Header.rawBytes, String(framed.count)))
                return (headers, compressed)
            }
        }
        return (headers, framed)
    }

    /// The offsets a stored append holds, read from its headers alone (no inflating).
    public static func offsets(of headers: NATSHeaders?) throws(ClusterMessageError) -> (first: UInt64, count: Int) {
        guard let headers else { throw .problem("it has no headers") }
        let first = try number(headers, Header.offset, max: UInt64.max / 2)
        let count = try number(headers, Header.count, max: UInt64(entriesMax))
        guard count >= 1 else { throw .problem("\(Header.count) is 0") }
        return (first, Int(count))
    }

    /// Decodes a stored append.
    public static func decode(headers: NATSHeaders?, payload: [UInt8]) throws(ClusterMessageError) -> ClusterAppendMessage {
        let (first, count) = try offsets(of: headers)
        guard let headers else { throw .problem("it has no headers") }
        guard let time = headers[Header.timeMs].flatMap(Int64.init) else { throw .problem("\(Header.timeMs) is missing or not a number") }
        let fingerprint = try headers[Header.fingerprint].map { text throws(ClusterMessageError) in
            guard let value = Self.fingerprint(text) else { throw .problem("\(Header.fingerprint) is not count-bytes-hash") }
            return value
        }
        var framed = payload
        if headers[Header.rawBytes] != nil {
            let raw = try number(headers, Header.rawBytes, max: UInt64(rawBytesMax))
            do {
                framed = try Zlib.decompress(payload, expectedCount: Int(raw))
            } catch {
                throw .problem("its compressed entries do not inflate to \(raw) bytes: \(error)")
            }
        }
        var entries: [[UInt8]] = []
        entries.reserveCapacity(min(count, framed.count / 4))
        var index = 0
        while index < framed.count {
            guard framed.count - index >= 4 else { throw .problem("its framing ends inside a length") }
            let length = Int(framed[index]) << 24 | Int(framed[index + 1]) << 16 | Int(framed[index + 2]) << 8 | Int(framed[index + 3])
            index += 4
            guard length <= framed.count - index else { throw .problem("an entry of \(length) bytes runs past the payload") }
            guard entries.count < count else { throw .problem("it holds more entries than its \(Header.count) \(count)") }
            entries.append(Array(framed[index..<index + length]))
            index += length
        }
        guard entries.count == count else { throw .problem("it holds \(entries.count) entries, not its \(Header.count) \(count)") }
        return ClusterAppendMessage(firstOffset: first, timestampMs: time, entries: entries, fingerprint: fingerprint)
    }

    private static func number(_ headers: NATSHeaders, _ name: String, max: UInt64) throws(ClusterMessageError) -> UInt64 {
        guard let value = headers[name].flatMap(UInt64.init), value <= max else {
            throw .problem("\(name) is missing, not a number or over \(max)")
        }
        return value
    }

    static func text(_ fingerprint: EntriesFingerprint) -> String {
        "\(fingerprint.entryCount)-\(fingerprint.totalBytes)-\(String(fingerprint.hash, radix: 16))"
    }

    static func fingerprint(_ text: String) -> EntriesFingerprint? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, let count = UInt32(parts[0]), let bytes = UInt64(parts[1]), let hash = UInt64(parts[2], radix: 16) else {
            return nil
        }
        return EntriesFingerprint(entryCount: count, totalBytes: bytes, hash: hash)
    }
}

/// A stored message of a cluster stream is not an append this broker could have written.
public enum ClusterMessageError: Error, Sendable, Hashable, CustomStringConvertible {
    case problem(String)

    public var description: String {
        switch self {
        case .problem(let problem): "not an orgsync append: \(problem)"
        }
    }
}
