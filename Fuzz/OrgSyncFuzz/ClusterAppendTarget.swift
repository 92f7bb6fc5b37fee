import OrgSyncCluster
import OrgSyncNATS

/// A stored append of a cluster stream, as a NATS server hands it back: the input is a header
/// block's length (two bytes, big-endian), the block (`NATS/1.0` and fields) and the payload.
/// Properties: nothing traps; what decodes holds exactly its announced count of entries within
/// the inflation bound, and encoded again (plain and compressed) decodes equal.
@Sendable func fuzzClusterAppend(_ data: [UInt8]) {
    guard data.count >= 2 else { return }
    let headerBytes = min(data.count - 2, Int(data[0]) << 8 | Int(data[1]))
    let block = data[2..<(2 + headerBytes)]
    let payload = Array(data[(2 + headerBytes)...])
    guard let headers = try? NATSHeaders.parse(block) else { return }
    guard let message = try? ClusterAppendMessage.decode(headers: headers, payload: payload) else { return }
    let offsets = try? ClusterAppendMessage.offsets(of: headers)
    fuzzCheck(offsets?.count == message.entries.count && offsets?.first == message.firstOffset, "the decoded append is not what its headers announce")
    fuzzCheck(message.entries.reduce(0) { $0 + 4 + $1.count } <= max(payload.count, ClusterAppendMessage.rawBytesMax), "entries beyond the inflation bound")
    for level: Int32? in [nil, 1] {
        guard let (fields, bytes) = try? message.encoded(compressionLevel: level) else {
            fuzzCheck(false, "a decoded append does not encode")
            return
        }
        let again = try? ClusterAppendMessage.decode(headers: NATSHeaders(fields), payload: bytes)
        fuzzCheck(again == message, "a decoded append encoded again (level \(level.map(String.init) ?? "none")) decodes differently")
    }
}
