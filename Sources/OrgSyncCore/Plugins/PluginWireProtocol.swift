import Foundation
import OrgSyncPluginAPI

/// The JSON-lines protocol between the broker and an out-of-process adapter. The full
/// description, with examples, is `plugins/PROTOCOL.md`; keep the two in step.
public enum PluginWireProtocol {
    /// Protocol versions this broker speaks, oldest first. A plugin names one of them in its
    /// manifest (`protocolVersion`) and answers the handshake with it.
    public static let supportedVersions: [Int] = [1, 2, 3]
    /// From this version on a plugin stores stream identities (`appliedPosition`, `setAppliedPosition`).
    public static let positionVersion = 2
    /// From this version on a plugin stores owner epochs with its position and fences batches of
    /// an older owner (`fenced`): what a cluster needs to move a link between members safely.
    public static let fencingVersion = 3

    /// Method names, as sent in `"method"`.
    enum Method: String {
        case handshake, open, apply, probe, appliedOffset, appliedPosition, setAppliedPosition, close
    }

    /// One request line: `{"id":N,"method":"…","params":{…}}` plus a newline. `params` is
    /// already-encoded JSON.
    static func requestLine(id: UInt64, method: Method, params: [UInt8]?) -> [UInt8] {
        var line = Array("{\"id\":\(id),\"method\":\"\(method.rawValue)\"".utf8)
        if let params {
            line.append(contentsOf: ",\"params\":".utf8)
            line.append(contentsOf: params)
        }
        line.append(contentsOf: "}\n".utf8)
        return line
    }

    static func handshakeParams() -> [UInt8] {
        Array("{\"protocolVersions\":[\(supportedVersions.map(String.init).joined(separator: ","))],\"broker\":\"orgsync\"}".utf8)
    }

    static func openParams(_ configuration: AdapterConfiguration) -> [UInt8] {
        let params: [String: JSONValue] = [
            "link": .string(configuration.linkName),
            "stream": .string(configuration.streamName),
            "settings": .object(configuration.settings.mapValues { .string($0) }),
            "dataDirectory": .string(configuration.dataDirectory),
        ]
        return encode(.object(params))
    }

    /// `{"stream":…,"entries":[{"offset":N,"entry":{…}},…]}`, splicing each entry's raw JSON in.
    static func applyParams(_ batch: EntryBatch) -> [UInt8] {
        var out = Array("{\"stream\":".utf8)
        out.append(contentsOf: encode(.string(batch.stream)))
        out.append(contentsOf: ",\"streamId\":".utf8)
        out.append(contentsOf: encode(.string(batch.identity.streamID)))
        out.append(contentsOf: ",\"epoch\":\(batch.identity.epoch)".utf8)
        out.append(contentsOf: ",\"ownerEpoch\":\(batch.ownerEpoch)".utf8)
        out.append(contentsOf: ",\"entries\":[".utf8)
        for (index, entry) in batch.entries.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: "{\"offset\":\(entry.offset.rawValue),\"entry\":".utf8)
            let raw = entry.raw.isEmpty ? Array(entry.jsonData()) : entry.raw
            // Outside strings JSON allows line breaks as whitespace; inside strings it allows
            // none unescaped. So turning CR/LF into spaces keeps the JSON and its meaning.
            for byte in raw {
                out.append(byte == 0x0A || byte == 0x0D ? 0x20 : byte)
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(contentsOf: "]".utf8)
        if batch.isDeadLetterRetry { out.append(contentsOf: ",\"dead_letter_retry\":true".utf8) }
        out.append(contentsOf: "}".utf8)
        return out
    }

    /// `{"position":null}` or `{"position":{"streamId":…,"epoch":N,"offset":N,"ownerEpoch":N}}`.
    static func positionParams(_ position: AppliedPosition?) -> [UInt8] {
        guard let position else { return Array("{\"position\":null}".utf8) }
        var members: [String: JSONValue] = ["offset": .int(Int64(clamping: position.offset.rawValue))]
        members["streamId"] = position.identity.map { .string($0.streamID) } ?? .null
        members["epoch"] = position.identity.map { .int(Int64(clamping: $0.epoch)) } ?? .null
        members["ownerEpoch"] = .int(Int64(clamping: position.ownerEpoch))
        return encode(.object(["position": .object(members)]))
    }

    /// Reads an `appliedPosition` result; nil with the problem when it is not one.
    static func decodePosition(_ result: JSONValue?) -> Result<AppliedPosition?, PositionDecodeProblem> {
        guard case .object(let members)? = result else { return .failure(PositionDecodeProblem("a result that is not an object")) }
        switch members["position"] {
        case nil, .null?:
            return .success(nil)
        case .object(let position)?:
            guard case .int(let offset)? = position["offset"], offset >= 0 else {
                return .failure(PositionDecodeProblem("a position without a non-negative integer offset"))
            }
            let ownerEpoch: UInt64
            switch position["ownerEpoch"] {
            case nil, .null?: ownerEpoch = 0  // protocol 2, or a row stored before owner epochs
            case .int(let epoch)? where epoch >= 0: ownerEpoch = UInt64(epoch)
            default: return .failure(PositionDecodeProblem("a position whose ownerEpoch is not a non-negative integer"))
            }
            switch (position["streamId"], position["epoch"]) {
            case (nil, nil), (.null?, .null?), (.null?, nil), (nil, .null?):
                return .success(AppliedPosition(identity: nil, offset: Offset(UInt64(offset)), ownerEpoch: ownerEpoch))
            case (.string(let id)?, .int(let epoch)?) where epoch >= 1 && id.utf8.count <= 64 && !id.isEmpty:
                return .success(AppliedPosition(
                    identity: StreamIdentity(streamID: id, epoch: UInt64(epoch)), offset: Offset(UInt64(offset)), ownerEpoch: ownerEpoch))
            default:
                return .failure(PositionDecodeProblem("a position whose streamId is not a string of 1–64 characters or whose epoch is not an integer ≥ 1"))
            }
        case let other?:
            return .failure(PositionDecodeProblem("position as \(other.typeName)"))
        }
    }

    struct PositionDecodeProblem: Error {
        var text: String
        init(_ text: String) { self.text = text }
    }

    static func encode(_ value: JSONValue) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // A JSONValue built from strings always encodes; fall back to JSON null rather than trap.
        return (try? Array(encoder.encode(value))) ?? Array("null".utf8)
    }

    /// One line a plugin wrote to stdout.
    struct Response: Decodable {
        var id: UInt64?
        var result: JSONValue?
        var hasResult: Bool
        var error: ErrorBody?

        struct ErrorBody: Decodable {
            var `class`: String
            var message: String?
            var offset: UInt64?
            var targetCode: String?
        }

        enum CodingKeys: String, CodingKey {
            case id, result, error
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            id = try container.decodeIfPresent(UInt64.self, forKey: .id)
            hasResult = container.contains(.result)
            result = try container.decodeIfPresent(JSONValue.self, forKey: .result)
            error = try container.decodeIfPresent(ErrorBody.self, forKey: .error)
        }
    }

    static func decodeResponse(_ line: [UInt8]) -> Response? {
        try? JSONDecoder().decode(Response.self, from: Data(line))
    }
}
