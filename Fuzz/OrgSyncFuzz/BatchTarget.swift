@testable import OrgSyncLog

/// Recomputes the CRC of every batch-looking run of `bytes` from `start` on (magic and a length
/// that fits), so that the fuzzer reaches the checks behind the checksum. Stops at the first
/// position that does not look like a batch.
func fixBatchChecksums(_ bytes: inout [UInt8], from start: Int = 0) {
    var position = start
    while bytes.count - position >= RecordBatchHeader.size {
        let (magic, length) = bytes.withUnsafeBytes { raw -> (UInt32, UInt32) in
            (raw.loadLE(at: position), raw.loadLE(at: position + 4))
        }
        guard magic == RecordBatchHeader.magic, Int(length) >= RecordBatchHeader.size, Int(length) <= bytes.count - position else { return }
        bytes.withUnsafeMutableBytes { raw in
            let crc = Zlib.crc32(UnsafeRawBufferPointer(rebasing: raw[(position + 12)..<(position + Int(length))]))
            raw.storeLE(crc, at: position + 8)
        }
        position += Int(length)
    }
}

/// The preset dictionary codec-2 batches of the `batch` target are decoded with (and its seed
/// `seed-zdict` encoded with): the seed entries, joined.
let fuzzDictionary = Zlib.PresetDictionary(Array(Seeds.entries.joined().utf8))

/// Input: one mode byte (bit 0: fix the CRC first), then a record batch (codec 2 batches are
/// read with ``fuzzDictionary``). Decoding answers a
/// batch or an error; a batch that decodes encodes back to the same entries (the same bytes
/// when stored uncompressed with one timestamp), and a control batch to the same records.
@Sendable func fuzzBatch(_ data: [UInt8]) {
    guard let mode = data.first else { return }
    var bytes = Array(data.dropFirst())
    if mode & 1 != 0 { fixBatchChecksums(&bytes) }
    bytes.withUnsafeBytes { raw in
        guard let header = try? RecordBatchCodec.decodeHeader(raw),
              (try? RecordBatchCodec.verifyChecksum(raw, header: header)) != nil
        else { return }
        var payload: [UInt8] = []
        var ranges: [Range<Int>] = []
        guard (try? RecordBatchCodec.decodePayload(raw, header: header, payload: &payload, ranges: &ranges,
                                                   dictionary: .present(fuzzDictionary))) != nil else { return }
        let batch = UnsafeRawBufferPointer(rebasing: raw[0..<Int(header.batchLength)])
        if header.isControl {
            fuzzCheck(ranges.isEmpty, "a control batch yielded entries")
            guard let records = try? RecordBatchCodec.decodeControlRecords(raw, header: header, dictionary: .present(fuzzDictionary)) else {
                fuzzCheck(false, "control records that decodePayload accepted do not decode")
                return
            }
            var output: [UInt8] = []
            RecordBatchCodec.encodeControl(records: records, baseOffset: header.baseOffset, timestampMs: header.firstTimestampMs, into: &output)
            if header.codec == .none && header.firstTimestampMs == header.maxTimestampMs {
                fuzzCheck(output == Array(batch), "control batch does not encode back to its bytes")
            }
            let again = output.withUnsafeBytes { try? RecordBatchCodec.decodeControlRecords($0, header: RecordBatchCodec.decodeHeader($0)) }
            fuzzCheck(again == records, "control records do not round-trip")
            return
        }
        fuzzCheck(ranges.count == Int(header.entryCount), "entry count \(ranges.count) ≠ header \(header.entryCount)")
        let entries = ranges.map { Array(payload[$0]) }
        var output: [UInt8] = []
        var scratch: [UInt8] = []
        do {
            let deflater = header.codec == .zlibDictionary ? try Zlib.PresetDeflater(dictionary: fuzzDictionary, level: 6) : nil
            try RecordBatchCodec.encode(
                entries: entries, baseOffset: header.baseOffset, timestampMs: header.firstTimestampMs,
                compressionLevel: header.codec == .zlib ? 1 : nil, into: &output, scratch: &scratch,
                flags: header.flags & RecordBatchHeader.flagGroupContinues, dictionary: deflater)
        } catch {
            fuzzCheck(false, "re-encoding decoded entries failed: \(error)")
        }
        if header.codec == .none && header.firstTimestampMs == header.maxTimestampMs {
            fuzzCheck(output == Array(batch), "uncompressed batch does not encode back to its bytes")
        }
        output.withUnsafeBytes { again in
            guard let header2 = try? RecordBatchCodec.decodeHeader(again),
                  (try? RecordBatchCodec.verifyChecksum(again, header: header2)) != nil
            else {
                fuzzCheck(false, "re-encoded batch has a bad header or CRC")
                return
            }
            var payload2: [UInt8] = []
            var ranges2: [Range<Int>] = []
            guard (try? RecordBatchCodec.decodePayload(again, header: header2, payload: &payload2, ranges: &ranges2,
                                                       dictionary: .present(fuzzDictionary))) != nil else {
                fuzzCheck(false, "re-encoded batch does not decode")
                return
            }
            fuzzCheck(header2.baseOffset == header.baseOffset && header2.entryCount == header.entryCount
                && header2.flags == header.flags, "re-encoded header differs")
            fuzzCheck(ranges2.map { Array(payload2[$0]) } == entries, "re-encoded entries differ")
        }
    }
}
