import Foundation
@testable import OrgSyncLog
import OrgSyncTestSupport
import Testing

/// Inputs the fuzzer (`.ci/fuzz.sh`, Fuzz/README.md) found, as plain tests: each names its
/// reproducer in `Fuzz/corpus/<target>/`, which the fuzzer replays too.
@Suite struct FuzzRegressionTests {
    /// Fuzz/corpus/log/regression-empty-sealed-segment: segments 1 (empty, sealed) and 144
    /// (empty, active). The log claimed offsets 1..<144 and `read(from: 1)` answered nothing, so
    /// a reader below the end got no entries and no error, forever.
    @Test func anEmptySealedSegmentIsCorruptionNotAnEmptyRead() async throws {
        let storage = FaultInjectingStorage()
        let directory = StreamLog.streamDirectory(dataDirectory: "/d", name: "s")
        try storage.createDirectory(directory)
        for base: UInt64 in [1, 144] { _ = try storage.openFile(directory + "/" + Segment.fileName(base, ".log"), create: true) }
        let log = try openLog(dataDirectory: "/d", name: "s", storage: storage)
        #expect(log.startOffset == 1 && log.endOffset == 144)
        #expect(throws: LogError.self) { try log.read(from: 1, maxEntries: 10) }
        await log.close()
        // Refused until repaired, like any other damage a read finds.
        #expect(throws: LogError.self) { try openLog(dataDirectory: "/d", name: "s", storage: storage) }
    }

    /// Fuzz/corpus/log/regression-timestamp-far-past: a stream whose batches and idempotency
    /// records carry a timestamp far in the past (a file may hold any 64-bit value with its
    /// checksums intact). Opening it trapped on `now - timestamp` while loading the idempotency
    /// keys; an append (the segment's age) and retention made the same subtraction.
    @Test(arguments: [Int64.min, Int64.min + 1, -1])
    func timestampsFarInThePastAreOldNotATrap(_ pastMs: Int64) async throws {
        let storage = FaultInjectingStorage()
        var configuration = LogConfiguration()
        configuration.segmentBytesMax = 4_096
        configuration.retentionAgeMsMax = 60_000
        let written = try openLog(dataDirectory: "/d", name: "s", configuration: configuration, storage: storage, clock: { pastMs })
        for i in 0..<40 {
            _ = try await written.append([entry(i)], idempotencyKey: "k\(i)")
        }
        #expect(written.info().segmentCount > 1, "sealed segments with .keys files, and an active one")
        await written.close()

        let log = try openLog(dataDirectory: "/d", name: "s", configuration: configuration, storage: storage)
        // The keys are older than any window: a retry is a new append, not a replay.
        let retried = try await log.append([entry(0)], idempotencyKey: "k0")
        #expect(retried == .appended(AppendResult(firstOffset: 40, lastOffset: 40)))
        #expect(try log.read(from: 40, maxEntries: 1).count == 1)
        _ = try log.applyRetention()  // the age of each sealed segment: no trap either
        await log.close()
    }

    /// The same on a real log: a sealed segment cut short on disk. The read used to step to the
    /// next segment and hand out offsets past the gap as if they followed.
    @Test func aSealedSegmentCutShortIsNotSkipped() async throws {
        let temporary = try TemporaryDirectory()
        let directory = temporary.path + "/streams/s"
        try writeSegments(streamDirectory: directory, count: 3, timestampMs: 1) { entry($0) }
        // Segment 1 holds offset 1 only; cut it to nothing.
        try PosixStorage().openFile(directory + "/" + Segment.fileName(1, ".log"), create: false).truncate(to: 0)
        let log = try openLog(dataDirectory: temporary.path, name: "s")
        #expect(log.endOffset == 3)
        let first = try log.read(from: 0, maxEntries: 10)
        #expect(first.map(\.offset) == [0], "what precedes the damage is served")
        #expect(throws: LogError.self) { try log.read(from: 1, maxEntries: 10) }
        await log.close()
    }

    /// Fuzz/corpus/batch/regression-zlib-length-bomb: a zlib batch of 325 bytes whose header
    /// announces 289 MB uncompressed. Inflating reserved the announced length first (a timeout
    /// under the fuzzer; 4 GiB for a few bytes at worst, and a trap converting 2^32 to zlib's
    /// 32-bit count). The header check now bounds it by deflate's largest ratio.
    @Test func aZlibBatchAnnouncingMoreThanDeflateCanExpandIsRefused() throws {
        var bytes: [UInt8] = []
        var scratch: [UInt8] = []
        let entries = (0..<40).map { entry($0) }
        try RecordBatchCodec.encode(entries: entries, baseOffset: 7, timestampMs: 1, compressionLevel: 6, into: &bytes, scratch: &scratch)
        let stored: UInt32 = bytes.withUnsafeBytes { $0.loadLE(at: 32) }
        #expect(bytes[13] == RecordBatchHeader.Codec.zlib.rawValue)
        for announced in [UInt32(0x1140_042C), UInt32.max, stored * 1_041] {
            var bomb = bytes
            bomb.withUnsafeMutableBytes { $0.storeLE(announced, at: 28) }
            #expect(throws: BatchDecodeError.self) { try bomb.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) } }
        }
        // Deflate's real ratios stay accepted: a long run of one byte.
        var run: [UInt8] = []
        try RecordBatchCodec.encode(entries: [[UInt8](repeating: 0x61, count: 1 << 20)], baseOffset: 0, timestampMs: 1,
                                    compressionLevel: 9, into: &run, scratch: &scratch)
        let header = try run.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) }
        #expect(header.codec == .zlib)
    }

    @Test func inflatingToMoreThanZlibCanCountThrows() throws {
        var output: [UInt8] = []
        let compressed = try Zlib.compress(Array("x".utf8))
        #expect(throws: Zlib.Error.self) {
            try compressed.withUnsafeBytes { try Zlib.decompress($0, expectedCount: Int(UInt32.max), into: &output) }
        }
    }

    /// Fuzz/corpus/smallfiles/regression-identity-epoch-0: an IDENTITY (checksum valid) in
    /// epoch 0. It decoded, so the stream would announce epoch 0, which plugins and targets
    /// refuse as a stored position; an epoch of 2^64-1 trapped at the next repair's +1.
    @Test(arguments: ["0", "18446744073709551615", "9223372036854775807"])
    func anIdentityWithAnEpochOutOfRangeIsDamaged(_ epoch: String) throws {
        var body = Array("orgsync stream identity v1\nid f5e5\nepoch \(epoch) 0\n".utf8)
        let crc = body.withUnsafeBytes { Zlib.crc32($0) }
        body += Array("crc32 \(String(crc, radix: 16))\n".utf8)
        guard case .failure = StreamLineage.decode(body) else {
            Issue.record("epoch \(epoch) decoded")
            return
        }
        let storage = FaultInjectingStorage()
        let directory = StreamLog.streamDirectory(dataDirectory: "/d", name: "s")
        try storage.createDirectory(directory)
        try storage.openFile(directory + "/IDENTITY", create: true).write(body, at: 0)
        #expect(throws: LogError.self) { try openLog(dataDirectory: "/d", name: "s", storage: storage) }
    }
}
