import OrgSyncLog
import Testing

@Suite struct ZlibInflaterTests {
    static let text = Array((0..<2000).map { "line \($0) of some text\n" }.joined().utf8)

    @Test(arguments: [Zlib.Format.gzip, .zlib], [1, 7, 4096])
    func inflatesAStreamFedInPieces(format: Zlib.Format, pieceBytes: Int) throws {
        let compressed = try Zlib.compress(Self.text, format: format)
        let inflater = try Zlib.Inflater(format: format, outputBytesMax: Self.text.count)
        var output: [UInt8] = []
        var start = 0
        while start < compressed.count {
            let end = min(start + pieceBytes, compressed.count)
            try inflater.inflate(Array(compressed[start..<end]), into: &output)
            start = end
        }
        try inflater.finish()
        #expect(output == Self.text)
        #expect(inflater.outputCount == Self.text.count)
    }

    @Test func gzipIsNotZlib() throws {
        let gzip = try Zlib.compress(Self.text, format: .gzip)
        #expect(Array(gzip.prefix(2)) == [0x1F, 0x8B], "the gzip magic")
        let inflater = try Zlib.Inflater(format: .zlib, outputBytesMax: 1 << 20)
        var output: [UInt8] = []
        #expect(throws: Zlib.Error.self) { try inflater.inflate(gzip, into: &output) }
    }

    /// A bomb is stopped while inflating: the inflater never holds more than its limit.
    @Test func aBombIsStoppedAtTheLimit() throws {
        let bomb = try Zlib.compress([UInt8](repeating: 0, count: 50 << 20), format: .gzip)
        #expect(bomb.count < 100_000)
        let inflater = try Zlib.Inflater(format: .gzip, outputBytesMax: 100_000)
        var output: [UInt8] = []
        #expect(throws: Zlib.OutputLimitExceeded(outputBytesMax: 100_000)) { try inflater.inflate(bomb, into: &output) }
        #expect(output.count <= 100_000)
        #expect(inflater.outputCount <= 100_000)
    }

    @Test func truncatedAndTrailingBytesAreErrors() throws {
        let compressed = try Zlib.compress(Self.text, format: .gzip)
        let cut = try Zlib.Inflater(format: .gzip, outputBytesMax: 1 << 20)
        var output: [UInt8] = []
        try cut.inflate(Array(compressed.dropLast(8)), into: &output)
        #expect(throws: Zlib.Error.self) { try cut.finish() }

        let trailing = try Zlib.Inflater(format: .gzip, outputBytesMax: 1 << 20)
        output = []
        #expect(throws: Zlib.Error.self) { try trailing.inflate(compressed + [1, 2, 3], into: &output) }
    }
}
