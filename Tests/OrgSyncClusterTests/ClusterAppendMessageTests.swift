@testable import OrgSyncCluster
import OrgSyncLog
import OrgSyncNATS
import Testing

/// The stored form of a cluster append, and what decoding does with a message orgsync did not
/// write (it comes from a server: untrusted).
struct ClusterAppendMessageTests {
    let entries: [[UInt8]] = (0..<50).map { Array(#"{"org":"o","object":"A","op":"upsert","key":"k\#($0)","ts":"t","fields":{}}"#.utf8) }

    func stored(_ message: ClusterAppendMessage, level: Int32?) throws -> (NATSHeaders, [UInt8]) {
        let (headers, payload) = try message.encoded(compressionLevel: level)
        return (NATSHeaders(headers), payload)
    }

    @Test func roundTripsCompressedAndPlain() throws {
        let fingerprint = EntriesFingerprint(entries: entries)
        let message = ClusterAppendMessage(firstOffset: 41, timestampMs: 1_700_000_000_123, entries: entries, fingerprint: fingerprint)
        for level: Int32? in [nil, 1, 6] {
            let (headers, payload) = try stored(message, level: level)
            #expect(try ClusterAppendMessage.decode(headers: headers, payload: payload) == message)
            let offsets = try ClusterAppendMessage.offsets(of: headers)
            #expect(offsets.first == 41 && offsets.count == 50)
            // Compression is used when it shrinks the payload, and only then.
            #expect((headers["Orgsync-Raw-Bytes"] != nil) == (level != nil))
            if level != nil { #expect(payload.count < entries.reduce(0) { $0 + 4 + $1.count }) }
        }
        // A message smaller than the threshold stays plain at any level: deflate's setup would
        // cost a one-entry append more than it saves.
        let small = ClusterAppendMessage(firstOffset: 0, timestampMs: 1, entries: Array(entries.prefix(3)))
        #expect(AppendGroup.framedBytes(small.entries) < ClusterAppendMessage.compressThresholdBytes)
        let (smallHeaders, smallPayload) = try stored(small, level: 6)
        #expect(smallHeaders["Orgsync-Raw-Bytes"] == nil && smallPayload.count == AppendGroup.framedBytes(small.entries))
        #expect(try ClusterAppendMessage.decode(headers: smallHeaders, payload: smallPayload) == small)
        // An empty entry and binary bytes survive the framing.
        let odd = ClusterAppendMessage(firstOffset: 0, timestampMs: 1, entries: [[], [0, 255, 10, 13]])
        let (headers, payload) = try stored(odd, level: nil)
        #expect(try ClusterAppendMessage.decode(headers: headers, payload: payload) == odd)
    }

    @Test func refusesMessagesItCouldNotHaveWritten() throws {
        let message = ClusterAppendMessage(firstOffset: 7, timestampMs: 1, entries: Array(entries.prefix(3)))
        let (headers, payload) = try stored(message, level: nil)
        let (zHeaders, zPayload) = try stored(ClusterAppendMessage(firstOffset: 7, timestampMs: 1, entries: entries), level: 6)

        func refused(_ headers: NATSHeaders?, _ payload: [UInt8], _ expected: String) {
            do {
                _ = try ClusterAppendMessage.decode(headers: headers, payload: payload)
                Issue.record("decoded a message that \(expected)")
            } catch {
                #expect("\(error)".contains(expected), "\(error)")
            }
        }
        func replacing(_ name: String, _ value: String?, in headers: NATSHeaders) -> NATSHeaders {
            var fields = headers.fields.filter { $0.name != name }
            if let value { fields.append(.init(name, value)) }
            return NATSHeaders(fields)
        }
        refused(nil, payload, "no headers")
        refused(replacing("Orgsync-Offset", nil, in: headers), payload, "Orgsync-Offset")
        refused(replacing("Orgsync-Offset", "-1", in: headers), payload, "Orgsync-Offset")
        refused(replacing("Orgsync-Offset", "18446744073709551615", in: headers), payload, "Orgsync-Offset")
        refused(replacing("Orgsync-Count", "0", in: headers), payload, "is 0")
        refused(replacing("Orgsync-Count", "2", in: headers), payload, "more entries")
        refused(replacing("Orgsync-Count", "4", in: headers), payload, "holds 3 entries")
        refused(replacing("Orgsync-Count", "99999999", in: headers), payload, "Orgsync-Count")
        refused(replacing("Orgsync-Time-Ms", "soon", in: headers), payload, "Orgsync-Time-Ms")
        refused(replacing("Orgsync-Fingerprint", "1-2", in: headers), payload, "Orgsync-Fingerprint")
        refused(headers, Array(payload.dropLast()), "runs past")
        refused(headers, payload + [0, 0], "inside a length")
        refused(headers, payload + [0xFF, 0xFF, 0xFF, 0xFF], "runs past")
        // Compressed: a size that lies, a bomb over the bound, bytes that do not inflate.
        refused(replacing("Orgsync-Raw-Bytes", "10", in: zHeaders), zPayload, "do not inflate")
        refused(replacing("Orgsync-Raw-Bytes", String(ClusterAppendMessage.rawBytesMax + 1), in: zHeaders), zPayload, "Orgsync-Raw-Bytes")
        refused(zHeaders, Array(zPayload.reversed()), "do not inflate")
    }
}
