import Foundation
import OrgSyncCore
@testable import OrgSyncLog
import Testing

/// Preset zlib dictionaries: the zlib layer, codec 2 in a record batch, the `.zdict` file, and
/// the log that makes, stores, uses and checks them.
@Suite struct PresetDictionaryTests {
    static let dictionary = Zlib.PresetDictionary((0..<60).flatMap { entry($0, size: 200) + [0x0A] }.suffix(4096).map { $0 })

    /// A config whose dictionaries are made after 1 KiB of entries.
    static func dictionaryConfig() -> LogConfiguration {
        var config = smallConfig()
        config.segmentBytesMax = 64 * 1024
        config.dictionaryBytesMax = 1024
        return config
    }

    static func codecs(dataDirectory: String, stream: String = "s") throws -> [RecordBatchHeader.Codec: Int] {
        var seen: [RecordBatchHeader.Codec: Int] = [:]
        let summary = try LogScanner(dataDirectory: dataDirectory, stream: stream).scan(visit: { batch in
            seen[batch.header.codec, default: 0] += 1
            return true
        })
        #expect(summary.problem == nil, "\(summary.problem.map { "\($0)" } ?? "")")
        return seen
    }

    static func dictionaryFromFile(_ bytes: [UInt8]) throws -> Zlib.PresetDictionary {
        try DictionaryFile.decode(bytes).get()
    }

    static func dictionaryFiles(_ dataDirectory: String, stream: String = "s") throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: StreamLog.streamDirectory(dataDirectory: dataDirectory, name: stream))
            .filter { $0.hasSuffix(DictionaryFile.suffix) }.sorted()
    }

    /// Appends `count` entries, one per append (the 1-producer × 1-entry case).
    static func appendOneByOne(_ log: StreamLog, _ range: Range<Int>) async throws -> [[UInt8]] {
        var written: [[UInt8]] = []
        for i in range {
            let one = event(i)
            _ = try await log.append([one])
            written.append(one)
        }
        return written
    }

    // MARK: zlib

    @Test func zlibRoundTripsWithThePresetDictionaryAndNamesIt() throws {
        let deflater = try Zlib.PresetDeflater(dictionary: Self.dictionary, level: 6)
        #expect(deflater.dictionaryID == Self.dictionary.id)
        #expect(Self.dictionary.id == Zlib.adler32(Self.dictionary.bytes))
        let input = entry(1_000, size: 200)
        let packed = try deflater.compress(input)
        let plain = try Zlib.compress(input, level: 6)
        #expect(packed.count * 2 < plain.count, "with the dictionary \(packed.count) bytes, without \(plain.count)")
        var output: [UInt8] = []
        try packed.withUnsafeBytes { try Zlib.decompress($0, expectedCount: input.count, dictionary: Self.dictionary, into: &output) }
        #expect(output == input)
        // The same deflater again (it copies its primed state; the state must not drift).
        #expect(try deflater.compress(input) == packed)

        let missing = #expect(throws: Zlib.DictionaryMismatch.self) {
            var out: [UInt8] = []
            try packed.withUnsafeBytes { try Zlib.decompress($0, expectedCount: input.count, dictionary: nil, into: &out) }
        }
        #expect(missing == Zlib.DictionaryMismatch(streamDictionaryID: Self.dictionary.id, givenDictionaryID: nil))
        let other = Zlib.PresetDictionary(Array("another dictionary".utf8))
        let mismatch = #expect(throws: Zlib.DictionaryMismatch.self) {
            var out: [UInt8] = []
            try packed.withUnsafeBytes { try Zlib.decompress($0, expectedCount: input.count, dictionary: other, into: &out) }
        }
        #expect(mismatch?.givenDictionaryID == other.id)
        // A stream without a dictionary is not a codec-2 payload.
        #expect(throws: Zlib.Error.self) {
            var out: [UInt8] = []
            try plain.withUnsafeBytes { try Zlib.decompress($0, expectedCount: input.count, dictionary: Self.dictionary, into: &out) }
        }
        // Another length than announced.
        #expect(throws: Zlib.Error.self) {
            var out: [UInt8] = []
            try packed.withUnsafeBytes { try Zlib.decompress($0, expectedCount: input.count - 1, dictionary: Self.dictionary, into: &out) }
        }
    }

    // MARK: Record batch, codec 2

    func encodeOne(_ entries: [[UInt8]], dictionary: Zlib.PresetDeflater?) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var scratch: [UInt8] = []
        try RecordBatchCodec.encode(entries: entries, baseOffset: 9, timestampMs: 1_700_000_000_000, compressionLevel: 1,
                                    into: &bytes, scratch: &scratch, dictionary: dictionary)
        return bytes
    }

    @Test func aCodec2BatchRoundTripsAndIsSmallerThanPlainZlib() throws {
        let deflater = try Zlib.PresetDeflater(dictionary: Self.dictionary, level: 6)
        let one = [entry(7_777, size: 300)]
        let bytes = try encodeOne(one, dictionary: deflater)
        let plain = try encodeOne(one, dictionary: nil)
        let header = try bytes.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) }
        #expect(header.codec == .zlibDictionary)
        #expect(bytes[13] == 2)
        #expect(bytes.count * 2 <= one[0].count, "stored \(bytes.count) bytes for a \(one[0].count)-byte entry")
        #expect(bytes.count < plain.count)
        var payload: [UInt8] = []
        var ranges: [Range<Int>] = []
        try bytes.withUnsafeBytes { raw in
            try RecordBatchCodec.verifyChecksum(raw, header: header)
            try RecordBatchCodec.decodePayload(raw, header: header, payload: &payload, ranges: &ranges, dictionary: .present(Self.dictionary))
        }
        #expect(ranges.map { Array(payload[$0]) } == one)
        // Without the segment's dictionary, or with another: typed errors, never a crash.
        let absent = #expect(throws: BatchDecodeError.self) {
            try bytes.withUnsafeBytes { try RecordBatchCodec.decodePayload($0, header: header, payload: &payload, ranges: &ranges) }
        }
        #expect(absent?.isDictionaryError == true)
        let other = Zlib.PresetDictionary(Array("x".utf8))
        let mismatch = #expect(throws: BatchDecodeError.self) {
            try bytes.withUnsafeBytes {
                try RecordBatchCodec.decodePayload($0, header: header, payload: &payload, ranges: &ranges, dictionary: .present(other))
            }
        }
        #expect(mismatch == .dictionaryMismatch(batch: Self.dictionary.id, segment: other.id))
        let unreadable = #expect(throws: BatchDecodeError.self) {
            try bytes.withUnsafeBytes {
                try RecordBatchCodec.decodePayload($0, header: header, payload: &payload, ranges: &ranges, dictionary: .unreadable("torn"))
            }
        }
        #expect(unreadable.map { "\($0)" }?.contains("torn") == true)
    }

    @Test func incompressibleEntriesStayUncompressedEvenWithADictionary() throws {
        var rng = SplitMix64(seed: 3)
        let noise = [(0..<400).map { _ in UInt8(truncatingIfNeeded: rng.next()) }]
        let bytes = try encodeOne(noise, dictionary: Zlib.PresetDeflater(dictionary: Self.dictionary, level: 6))
        let header = try bytes.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) }
        #expect(header.codec == RecordBatchHeader.Codec.none)
    }

    @Test func everySingleBitFlipInACodec2BatchIsDetected() async throws {
        let bytes = try encodeOne([entry(4, size: 250), entry(5, size: 180)],
                                  dictionary: Zlib.PresetDeflater(dictionary: Self.dictionary, level: 6))
        var payload: [UInt8] = []
        var ranges: [Range<Int>] = []
        for byte in 0..<bytes.count {
            await Task.yield()
            for bit in 0..<8 {
                var damaged = bytes
                damaged[byte] ^= UInt8(1 << bit)
                let accepted = damaged.withUnsafeBytes { raw -> Bool in
                    guard let header = try? RecordBatchCodec.decodeHeader(raw),
                          (try? RecordBatchCodec.verifyChecksum(raw, header: header)) != nil,
                          (try? RecordBatchCodec.decodePayload(raw, header: header, payload: &payload, ranges: &ranges,
                                                               dictionary: .present(Self.dictionary))) != nil
                    else { return false }
                    return true
                }
                #expect(!accepted, "flip of bit \(bit) in byte \(byte) went unnoticed")
            }
        }
    }

    @Test func anUnknownCodecIsAClearError() throws {
        var bytes = try encodeOne([entry(1)], dictionary: nil)
        bytes[13] = 3
        let error = #expect(throws: BatchDecodeError.self) { try bytes.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) } }
        #expect(error == .badCodec(3))
        #expect(error.map { "\($0)" } == "unknown codec 3")
    }

    // MARK: The .zdict file

    @Test func theDictionaryFileRoundTripsAndRefusesEveryTruncationAndBitFlip() throws {
        let file = DictionaryFile.encode(Self.dictionary)
        #expect(file.count == DictionaryFile.headerBytes + Self.dictionary.bytes.count)
        #expect(try DictionaryFile.decode(file).get() == Self.dictionary)
        for length in stride(from: 0, to: file.count, by: 7) {
            if case .success = DictionaryFile.decode(Array(file.prefix(length))) { Issue.record("a file torn at \(length) bytes was accepted") }
        }
        if case .success = DictionaryFile.decode(file + [0]) { Issue.record("a file with a trailing byte was accepted") }
        for byte in stride(from: 0, to: file.count, by: 3) {
            var damaged = file
            damaged[byte] ^= 0x10
            if case .success = DictionaryFile.decode(damaged) { Issue.record("a flip in byte \(byte) was accepted") }
        }
    }

    @Test func theSampleKeepsTheNewestEntriesMostRecentLast() {
        var sample = DictionarySample(dictionaryBytesMax: 256)
        sample.note([entry(1, size: 100)])
        #expect(sample.dictionary() == nil, "a dictionary before the sample holds 256 bytes")
        for i in 2..<40 { sample.note([entry(i, size: 100)]) }
        let newest = entry(40, size: 100)
        sample.note([entry(41, size: 5_000), newest])
        let dictionary = sample.dictionary()
        #expect(dictionary?.bytes.count == 256)
        #expect(dictionary.map { Array($0.bytes.suffix(newest.count)) } == newest)
        #expect(sample.bytes.count <= 512)
        #expect(DictionarySample(dictionaryBytesMax: 0).dictionary() == nil)
    }

    @Test func aYoungStreamsDictionariesDoubleUpToTheMaximum() {
        var sample = DictionarySample(dictionaryBytesMax: 32_768)
        var sizes: [Int?] = []
        for i in 0..<200 {
            sample.note([Self.event(i)])
            if sizes.last != sample.dictionaryBytes { sizes.append(sample.dictionaryBytes) }
        }
        #expect(sizes == [nil, 4096, 8192, 16_384, 32_768])
        #expect(sample.outgrows(Zlib.PresetDictionary([UInt8](repeating: 1, count: 16_384))))
        #expect(!sample.outgrows(Zlib.PresetDictionary([UInt8](repeating: 1, count: 32_768))))
    }

    @Test func aNewStreamRollsToBiggerDictionariesThenKeepsItsSegment() async throws {
        let dir = try TemporaryDirectory()
        var config = LogConfiguration()
        config.preallocateBytes = 8 * 1024
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        let written = try await Self.appendOneByOne(log, 0..<600)
        try expectContents(log, written)
        // 4 KiB in the first segment, then a segment each for 8, 16 and 32 KiB; no more.
        #expect(log.info().segmentCount == 4)
        let directory = StreamLog.streamDirectory(dataDirectory: dir.path, name: "s")
        let sizes = try Self.dictionaryFiles(dir.path).map { name in
            try DictionaryFile.decode(Array(Data(contentsOf: URL(fileURLWithPath: directory + "/" + name)))).get().bytes.count
        }
        #expect(sizes == [4096, 8192, 16_384, 32_768])
        await log.close()
        #expect(try StreamLog.verify(dataDirectory: dir.path, stream: "s").problem == nil)
    }

    /// An event shaped like the broker's (~250–350 bytes of JSON with varied ids, names and
    /// numbers): one alone barely compresses; many share their keys and vocabulary.
    static func event(_ i: Int) -> [UInt8] {
        var rng = SplitMix64(seed: UInt64(i) &* 0x9E37_79B9 &+ 1)
        func pick(_ words: [String]) -> String { words[Int(rng.next() % UInt64(words.count))] }
        func id() -> String { String((0..<18).map { _ in Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")[Int(rng.next() % 62)] }) }
        let first = pick(["Ada", "Brook", "Chen", "Dara", "Elif", "Femi", "Goran", "Hana", "Ines", "Jonas", "Kemal", "Lena"])
        let last = pick(["Okafor", "Lindqvist", "Moreau", "Tanaka", "Novak", "Silva", "Kowalski", "Haddad", "Byrne", "Rossi"])
        let words = (0..<(4 + Int(rng.next() % 6))).map { _ in
            pick(["renewal", "pending", "quarterly", "review", "priority", "escalated", "contract", "shipping", "invoice",
                  "call", "back", "next", "week", "signed", "draft", "budget", "approved", "region", "upgrade", "trial"])
        }
        let text = #"{"org":"\#(pick(["acme-eu", "globex", "initech", "umbrella-us", "hooli", "vandelay"]))","object":"\#(pick(["Account", "Contact", "Opportunity", "Case"]))","op":"upsert","key":"\#(id())","ts":"2026-11-27T\#(10 + i % 10):\#(10 + i % 50):\#(10 + (i * 7) % 50).\#(100 + i % 900)Z","fields":{"Name":"\#(first) \#(last)","Email":"\#(first.lowercased()).\#(last.lowercased())@\#(pick(["example.com", "mail.test", "corp.invalid"]))","Amount":\#(rng.next() % 1_000_000),"OwnerId":"\#(id())","Description":"\#(words.joined(separator: " "))"}}"#
        return Array(text.utf8)
    }

    @Test func dictionaryLimitsAreValidated() throws {
        for (bytes, level, payload) in [(100, Int32(6), 16_384), (40_000, 6, 16_384), (4096, 0, 16_384), (4096, 6, -1)] {
            var config = LogConfiguration()
            config.dictionaryBytesMax = bytes
            config.dictionaryCompressionLevel = level
            config.dictionaryPayloadBytesMax = payload
            #expect(throws: LogError.self, "\(bytes) bytes, level \(level), payload \(payload)") { try config.validate() }
        }
        var off = LogConfiguration()
        off.dictionaryBytesMax = 0
        try off.validate()
    }

    // MARK: The log

    @Test func singleEntryAppendsUseTheDictionaryAndReadBackAfterReopen() async throws {
        let dir = try TemporaryDirectory()
        let written: [[UInt8]]
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: Self.dictionaryConfig())
            written = try await Self.appendOneByOne(log, 0..<300)
            try expectContents(log, written)
            await log.close()
        }
        #expect(try Self.dictionaryFiles(dir.path) == ["00000000000000000000.zdict"])
        let codecs = try Self.codecs(dataDirectory: dir.path)
        #expect((codecs[.zlibDictionary] ?? 0) > 250, "\(codecs)")
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: Self.dictionaryConfig())
        try expectContents(log, written)
        // The reopened writer uses the segment's dictionary from its file.
        let more = try await Self.appendOneByOne(log, 300..<320)
        try expectContents(log, written + more)
        await log.close()
        #expect(try Self.codecs(dataDirectory: dir.path)[.zlibDictionary] == (codecs[.zlibDictionary] ?? 0) + 20)
        let summary = try StreamLog.verify(dataDirectory: dir.path, stream: "s")
        #expect(summary.problem == nil)
    }

    @Test func theDictionaryAtLeastDoublesTheStoredRatioOfSingleEntries() async throws {
        var ratios: [Double] = []
        for dictionaryBytesMax in [0, 4096] {
            let dir = try TemporaryDirectory()
            var config = Self.dictionaryConfig()
            config.dictionaryBytesMax = dictionaryBytesMax
            config.segmentBytesMax = 1 << 20
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
            _ = try await Self.appendOneByOne(log, 0..<400)
            await log.close()
            ratios.append(try LogScanner(dataDirectory: dir.path, stream: "s").scan().compressionRatio)
        }
        #expect(ratios[0] < 1.1, "without a dictionary: \(ratios[0])×")
        #expect(ratios[1] >= 1.5 * ratios[0], "with \(ratios[1])×, without \(ratios[0])×")
    }

    @Test func aStreamMixingAllCodecsAcrossRollsReads() async throws {
        let dir = try TemporaryDirectory()
        var config = Self.dictionaryConfig()
        config.segmentBytesMax = 24 * 1024
        var written: [[UInt8]] = []
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
            // Before the sample is full: codec 0 (small) and 1 (a batch of many).
            written += try await Self.appendOneByOne(log, 0..<3)
            let many = (3..<103).map { entry($0) }
            _ = try await log.append(many)
            written += many
            // Then codec 2 for single entries, codec 1 for batches over dictionaryPayloadBytesMax,
            // control batches for keys; enough to roll several segments.
            for round in 0..<6 {
                written += try await Self.appendOneByOne(log, (1_000 * round)..<(1_000 * round + 60))
                let big = (0..<120).map { entry(100_000 + round * 1_000 + $0) }
                _ = try await log.append(big, idempotencyKey: "k\(round)")
                written += big
            }
            try expectContents(log, written)
            #expect(log.info().segmentCount >= 3)
            await log.close()
        }
        let codecs = try Self.codecs(dataDirectory: dir.path)
        #expect(codecs[RecordBatchHeader.Codec.none] != nil && codecs[.zlib] != nil && codecs[.zlibDictionary] != nil, "\(codecs)")
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        try expectContents(log, written)
        #expect(try Self.dictionaryFiles(dir.path).count == log.info().segmentCount)
        await log.close()
    }

    @Test func retentionDeletesASegmentsDictionaryWithIt() async throws {
        let dir = try TemporaryDirectory()
        var config = Self.dictionaryConfig()
        config.segmentBytesMax = 8 * 1024
        config.retentionBytesMax = 20 * 1024
        config.retentionDropsUnconsumed = true
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        _ = try await Self.appendOneByOne(log, 0..<600)
        _ = try log.applyRetention()
        let directory = StreamLog.streamDirectory(dataDirectory: dir.path, name: "s")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        let logs = Set(names.filter { $0.hasSuffix(".log") }.map { $0.dropLast(4) })
        let dictionaries = Set(names.filter { $0.hasSuffix(".zdict") }.map { $0.dropLast(6) })
        #expect(log.startOffset > 0, "retention deleted nothing")
        #expect(dictionaries.isSubset(of: logs), "dictionaries without their segment: \(dictionaries.subtracting(logs))")
        await log.close()
    }

    // MARK: Crashes and damage

    @Test func aTornDictionaryWriteLosesNothingAcknowledged() async throws {
        let dir = try TemporaryDirectory()
        let directory = StreamLog.streamDirectory(dataDirectory: dir.path, name: "s")
        var config = Self.dictionaryConfig()
        config.dictionaryBytesMax = 8 * 1024  // not full after the first appends
        var written: [[UInt8]] = []
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
            written += try await Self.appendOneByOne(log, 0..<10)
            await log.close()
        }
        // A crash while the dictionary was written: its temporary file torn, or (on a
        // filesystem that lost the data behind a rename) the file itself. No batch uses it yet.
        let torn = Array(DictionaryFile.encode(Self.dictionary).prefix(1_000))
        try Data(torn).write(to: URL(fileURLWithPath: directory + "/00000000000000000000.zdict.tmp"))
        try Data(torn).write(to: URL(fileURLWithPath: directory + "/00000000000000000000.zdict"))
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
            try expectContents(log, written)
            written += try await Self.appendOneByOne(log, 10..<80)
            try expectContents(log, written)
            await log.close()
        }
        // The torn file was left alone, and nothing was written with it.
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/00000000000000000000.zdict")) == Data(torn))
        #expect(try Self.codecs(dataDirectory: dir.path)[.zlibDictionary] == nil)
        #expect(try StreamLog.verify(dataDirectory: dir.path, stream: "s").problem == nil)
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        try expectContents(log, written)
        await log.close()
    }

    @Test func aTornTemporaryDictionaryIsReplacedWhenTheSampleFills() async throws {
        let dir = try TemporaryDirectory()
        let directory = StreamLog.streamDirectory(dataDirectory: dir.path, name: "s")
        var written: [[UInt8]] = []
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: Self.dictionaryConfig())
            written += try await Self.appendOneByOne(log, 0..<2)
            await log.close()
        }
        try Data([0x4F, 0x53, 0x44]).write(to: URL(fileURLWithPath: directory + "/00000000000000000000.zdict.tmp"))
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: Self.dictionaryConfig())
        written += try await Self.appendOneByOne(log, 2..<60)
        try expectContents(log, written)
        await log.close()
        #expect(try Self.dictionaryFiles(dir.path) == ["00000000000000000000.zdict"])
        #expect((try Self.codecs(dataDirectory: dir.path)[.zlibDictionary] ?? 0) > 0)
    }

    /// Writes a stream whose first segment is sealed and uses its dictionary; returns the
    /// entries and the path of that segment's `.zdict`.
    func streamWithASealedDictionarySegment(_ dir: TemporaryDirectory) async throws -> ([[UInt8]], String) {
        var config = Self.dictionaryConfig()
        config.segmentBytesMax = 16 * 1024
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        let written = try await Self.appendOneByOne(log, 0..<400)
        #expect(log.info().segmentCount >= 2)
        await log.close()
        return (written, StreamLog.streamDirectory(dataDirectory: dir.path, name: "s") + "/00000000000000000000.zdict")
    }

    @Test func aDamagedDictionaryIsACorruptionReportNeverACrashOrACut() async throws {
        let dir = try TemporaryDirectory()
        let (written, path) = try await streamWithASealedDictionarySegment(dir)
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        try original.prefix(original.count - 100).write(to: URL(fileURLWithPath: path))
        let summary = try LogScanner(dataDirectory: dir.path, stream: "s").scan()
        let problem = try #require(summary.problem)
        #expect(problem.segment == "00000000000000000000.log")
        #expect(problem.reason.contains("preset dictionary") && problem.reason.contains("unreadable"), "\(problem.reason)")
        // The broker: the segment's batches cannot be read, and say why.
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: Self.dictionaryConfig())
        let error = #expect(throws: LogError.self) { _ = try log.read(from: 50, maxEntries: 10) }
        guard case .corrupt(let report) = error else {
            Issue.record("expected a corruption report, got \(String(describing: error))")
            return
        }
        #expect(report.reason.contains("dictionary"))
        _ = written
    }

    @Test func anUnknownCodecInTheLogIsAClearErrorInVerifyAndReads() async throws {
        let dir = try TemporaryDirectory()
        let logPath = StreamLog.streamDirectory(dataDirectory: dir.path, name: "s") + "/00000000000000000000.log"
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: Self.dictionaryConfig())
            _ = try await Self.appendOneByOne(log, 0..<20)
            await log.close()
        }
        // The 10th batch (codec 2) gets codec 3, with a CRC that matches: a newer writer's batch.
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: logPath)))
        var position = 0
        for _ in 0..<9 { position += Int(bytes.withUnsafeBytes { $0.loadLE(at: position + 4) as UInt32 }) }
        #expect(bytes[position + 13] == 2)
        bytes[position + 13] = 3
        let length = Int(bytes.withUnsafeBytes { $0.loadLE(at: position + 4) as UInt32 })
        let crc = Zlib.crc32(Array(bytes[(position + 12)..<(position + length)]))
        bytes.withUnsafeMutableBytes { $0.storeLE(crc, at: position + 8) }
        try Data(bytes).write(to: URL(fileURLWithPath: logPath))

        let summary = try LogScanner(dataDirectory: dir.path, stream: "s").scan()
        #expect(summary.problem?.reason == "unknown codec 3", "\(String(describing: summary.problem))")
        #expect(summary.problem?.firstOffset == 9)
        // Recovery scans from the last index point only (past this batch); a read meets it.
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: Self.dictionaryConfig())
        #expect(try log.read(from: 0, maxEntries: 100).count == 9, "the entries before it are served")
        let error = #expect(throws: LogError.self) { _ = try log.read(from: 9, maxEntries: 100) }
        guard case .corrupt(let report) = error else {
            Issue.record("expected a corruption report, got \(String(describing: error))")
            return
        }
        #expect(report.reason.contains("unknown codec 3"), "\(report.reason)")
    }

    @Test func aMismatchedDictionaryIdIsDetected() async throws {
        let dir = try TemporaryDirectory()
        let (_, path) = try await streamWithASealedDictionarySegment(dir)
        // A well-formed file, but another dictionary than the batches were written with.
        try Data(DictionaryFile.encode(Self.dictionary)).write(to: URL(fileURLWithPath: path))
        let summary = try StreamLog.verify(dataDirectory: dir.path, stream: "s")
        let problem = try #require(summary.problem)
        #expect(problem.reason.contains("the segment's is 0x\(String(Self.dictionary.id, radix: 16))"), "\(problem.reason)")
        // verify marked the stream: it is refused until repaired.
        #expect(throws: LogError.self) { _ = try openLog(dataDirectory: dir.path, name: "s") }
    }

    @Test func recoveryRefusesRatherThanCutsTheTailWhenTheActiveDictionaryIsGone() async throws {
        let dir = try TemporaryDirectory()
        let directory = StreamLog.streamDirectory(dataDirectory: dir.path, name: "s")
        let dictionaryPath = directory + "/00000000000000000000.zdict"
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: Self.dictionaryConfig())
            // Up to the append that made the dictionary: its batch, the last, is the only codec-2
            // one, so recovery sees a bad last batch with nothing valid after it (a torn tail's
            // look). Acknowledged all the same: it must not be cut.
            var i = 0
            while !FileManager.default.fileExists(atPath: dictionaryPath) && i < 100 {
                _ = try await Self.appendOneByOne(log, i..<(i + 1))
                i += 1
            }
            // Killed: no close.
        }
        #expect(try Self.codecs(dataDirectory: dir.path)[.zlibDictionary] == 1)
        let logPath = directory + "/00000000000000000000.log"
        let before = try Data(contentsOf: URL(fileURLWithPath: logPath))
        try FileManager.default.removeItem(atPath: dictionaryPath)
        // `log verify` too: a problem, not a torn tail.
        let summary = try LogScanner(dataDirectory: dir.path, stream: "s").scan()
        #expect(summary.tornTailBytes == 0)
        #expect(summary.problem?.reason.contains("no dictionary file") == true, "\(String(describing: summary.problem))")
        let error = #expect(throws: LogError.self) {
            _ = try openLog(dataDirectory: dir.path, name: "s", configuration: Self.dictionaryConfig())
        }
        guard case .corrupt(let report) = error else {
            Issue.record("expected a corruption report, got \(String(describing: error))")
            return
        }
        #expect(report.reason.contains("no dictionary file"), "\(report.reason)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: logPath)) == before, "recovery changed the log")
    }
}
