import OrgSyncCore
@testable import OrgSyncLog
import Testing

@Suite struct RecordBatchTests {
    func randomEntries(_ rng: inout SplitMix64, count: Int) -> [[UInt8]] {
        (0..<count).map { _ in
            let length = Int(rng.next() % 600)
            let text = rng.next() % 2 == 0
            return (0..<length).map { i in text ? UInt8(97 + (i % 13)) : UInt8(truncatingIfNeeded: rng.next()) }
        }
    }

    @Test func roundTripsSeededRandomBatches() async throws {
        var rng = SplitMix64(seed: 7)
        var scratch: [UInt8] = []
        var payload: [UInt8] = []
        var ranges: [Range<Int>] = []
        for round in 0..<500 {
            // Seconds of CPU on a loaded machine: give the cooperative threads back each round, or
            // every other test's timers and continuations wait behind this loop.
            await Task.yield()
            let entries = randomEntries(&rng, count: 1 + Int(rng.next() % 200))
            let level: Int32? = [nil, 1, 6][round % 3]
            let base = rng.next() % (1 << 40)
            var bytes: [UInt8] = []
            try RecordBatchCodec.encode(entries: entries, baseOffset: base, timestampMs: 1_700_000_000_000,
                                        compressionLevel: level, into: &bytes, scratch: &scratch)
            let header = try bytes.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) }
            #expect(header.baseOffset == base)
            #expect(Int(header.entryCount) == entries.count)
            #expect(Int(header.batchLength) == bytes.count)
            try bytes.withUnsafeBytes { try RecordBatchCodec.verifyChecksum($0, header: header) }
            try bytes.withUnsafeBytes { try RecordBatchCodec.decodePayload($0, header: header, payload: &payload, ranges: &ranges) }
            #expect(ranges.map { Array(payload[$0]) } == entries, "round \(round)")
        }
    }

    @Test func everySingleBitFlipIsDetected() async throws {
        var rng = SplitMix64(seed: 11)
        var scratch: [UInt8] = []
        let entries = randomEntries(&rng, count: 20)
        var bytes: [UInt8] = []
        try RecordBatchCodec.encode(entries: entries, baseOffset: 5, timestampMs: 1, compressionLevel: 1,
                                    into: &bytes, scratch: &scratch)
        var payload: [UInt8] = []
        var ranges: [Range<Int>] = []
        for byte in 0..<bytes.count {
            await Task.yield()  // a long loop: let the other tests' tasks run between bytes
            for bit in 0..<8 {
                var damaged = bytes
                damaged[byte] ^= UInt8(1 << bit)
                let accepted = damaged.withUnsafeBytes { raw -> Bool in
                    guard let header = try? RecordBatchCodec.decodeHeader(raw),
                          (try? RecordBatchCodec.verifyChecksum(raw, header: header)) != nil,
                          (try? RecordBatchCodec.decodePayload(raw, header: header, payload: &payload, ranges: &ranges)) != nil
                    else { return false }
                    return true
                }
                #expect(!accepted, "flip of bit \(bit) in byte \(byte) went unnoticed")
            }
        }
    }

    @Test func smallOrIncompressiblePayloadsStayUncompressed() throws {
        var scratch: [UInt8] = []
        var small: [UInt8] = []
        try RecordBatchCodec.encode(entries: [Array("tiny".utf8)], baseOffset: 0, timestampMs: 0,
                                    compressionLevel: 1, into: &small, scratch: &scratch)
        #expect(try small.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) }.codec == .none)
        var rng = SplitMix64(seed: 3)
        let noise = (0..<4000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var random: [UInt8] = []
        try RecordBatchCodec.encode(entries: [noise], baseOffset: 0, timestampMs: 0, compressionLevel: 1,
                                    into: &random, scratch: &scratch)
        #expect(try random.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) }.codec == .none)
        var text: [UInt8] = []
        try RecordBatchCodec.encode(entries: Array(repeating: Array(#"{"org":"a","object":"Contact"}"#.utf8), count: 50),
                                    baseOffset: 0, timestampMs: 0, compressionLevel: 1, into: &text, scratch: &scratch)
        let header = try text.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) }
        #expect(header.codec == .zlib)
        #expect(header.storedLength < header.uncompressedLength / 4)
    }

    @Test func zeroHeaderIsEndOfData() {
        let zeros = [UInt8](repeating: 0, count: 100)
        #expect(throws: BatchDecodeError.endOfData) { try zeros.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) } }
    }
}
