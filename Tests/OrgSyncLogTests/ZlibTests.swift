import OrgSyncCore
import OrgSyncLog
import Testing

@Suite struct ZlibTests {
    @Test func crc32MatchesKnownVector() {
        // The standard check value of CRC-32/ISO-HDLC.
        #expect(Zlib.crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(Zlib.crc32([]) == 0)
        let whole = Zlib.crc32(Array("hello world".utf8))
        let split = Zlib.crc32(Array(" world".utf8), initial: Zlib.crc32(Array("hello".utf8)))
        #expect(whole == split)
    }

    @Test func roundTripsSeededRandomInput() async throws {
        var rng = SplitMix64(seed: 42)
        for round in 0..<200 {
            // Seconds of CPU on a loaded machine: give the cooperative threads back each round, or
            // every other test's timers and continuations wait behind this loop.
            await Task.yield()
            let count = Int(rng.next() % 20_000)
            // Half random bytes (incompressible), half text-like (compressible).
            let bytes: [UInt8] = (0..<count).map { i in
                round % 2 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : UInt8(97 + (i * 7 + Int(rng.next() % 3)) % 26)
            }
            for level: Int32 in [1, 6] {
                let packed = try Zlib.compress(bytes, level: level)
                #expect(try Zlib.decompress(packed, expectedCount: bytes.count) == bytes, "round \(round)")
            }
        }
    }

    @Test func rejectsWrongLengthsAndCorruption() throws {
        let bytes = Array(String(repeating: "orgsync ", count: 100).utf8)
        let packed = try Zlib.compress(bytes)
        #expect(throws: Zlib.Error.self) { try Zlib.decompress(packed, expectedCount: bytes.count - 1) }
        #expect(throws: Zlib.Error.self) { try Zlib.decompress(packed, expectedCount: bytes.count + 1) }
        #expect(throws: Zlib.Error.self) { try Zlib.decompress(Array(packed.dropLast(3)), expectedCount: bytes.count) }
        #expect(throws: Zlib.Error.self) { try Zlib.decompress(packed + [0], expectedCount: bytes.count) }
        var flipped = packed
        flipped[flipped.count / 2] ^= 0x10
        #expect(throws: Zlib.Error.self) { try Zlib.decompress(flipped, expectedCount: bytes.count) }
    }
}
