import Foundation
@testable import OrgSyncLog
import OrgSyncTestSupport
import Synchronization
import Testing

/// Idempotent appends: replay, misuse, concurrency, durability across reopen, rolls, lost
/// `.keys` files and crashes, the window, and that control batches stay invisible to readers.
@Suite struct IdempotencyTests {
    typealias HandClock = SegmentAgeTests.HandClock

    func entries(_ from: Int, _ count: Int, size: Int = 120) -> [[UInt8]] {
        (from..<(from + count)).map { entry($0, size: size) }
    }

    func keysFiles(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir + "/streams/s").filter { $0.hasSuffix(".keys") }.sorted()
    }

    @Test func aReplayReturnsTheOriginalOffsetsAndAppendsNothing() async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "s")
        _ = try await log.append(entries(0, 2))
        let first = try await log.append(entries(2, 3), idempotencyKey: "order-17")
        #expect(first == .appended(AppendResult(firstOffset: 2, lastOffset: 4)))
        let again = try await log.append(entries(2, 3), idempotencyKey: "order-17")
        #expect(again == .replayed(AppendResult(firstOffset: 2, lastOffset: 4)))
        #expect(log.endOffset == 5)
        // Without a key (or with nil) appends go on as before.
        #expect(try await log.append(entries(5, 1), idempotencyKey: nil) == .appended(AppendResult(firstOffset: 5, lastOffset: 5)))
        #expect(try await log.append(entries(6, 1)) == AppendResult(firstOffset: 6, lastOffset: 6))
        try expectContents(log, entries(0, 7))
        await log.close()
    }

    @Test func aKeyReusedForOtherEntriesIsRefused() async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "s")
        _ = try await log.append(entries(0, 2), idempotencyKey: "k")
        await #expect(throws: LogError.idempotencyKeyReused(key: "k")) {
            try await log.append(entries(0, 1), idempotencyKey: "k")
        }
        // Same count and length, one byte different: the hash tells them apart.
        var changed = entries(0, 2)
        changed[1][10] ^= 1
        await #expect(throws: LogError.idempotencyKeyReused(key: "k")) {
            try await log.append(changed, idempotencyKey: "k")
        }
        #expect(log.endOffset == 2)
        await log.close()
    }

    @Test func invalidKeysAreRefusedBeforeAnythingIsQueued() async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "s")
        for bad in ["", String(repeating: "a", count: 256), "has space", "tab\t", "ünï", "nul\u{0}"] {
            await #expect(throws: LogError.invalidIdempotencyKey(bad)) {
                try await log.append(entries(0, 1), idempotencyKey: bad)
            }
        }
        let longest = String(repeating: "~", count: 255)
        #expect(try await log.append(entries(0, 1), idempotencyKey: longest) == .appended(AppendResult(firstOffset: 0, lastOffset: 0)))
        #expect(log.endOffset == 1)
        await log.close()
    }

    @Test func concurrentAppendsWithOneKeyAppendOnce() async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "s")
        let batch = entries(0, 4)
        let outcomes = await withTaskGroup(of: Result<AppendOutcome, LogError>.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    do { return .success(try await log.append(batch, idempotencyKey: "same")) } catch let error as LogError {
                        return .failure(error)
                    } catch {
                        return .failure(.closed)
                    }
                }
            }
            var all: [Result<AppendOutcome, LogError>] = []
            for await outcome in group { all.append(outcome) }
            return all
        }
        var appended = 0
        for outcome in outcomes {
            switch outcome {
            case .success(.appended(let result)):
                appended += 1
                #expect(result == AppendResult(firstOffset: 0, lastOffset: 3))
            case .success(.replayed(let result)):
                #expect(result == AppendResult(firstOffset: 0, lastOffset: 3))
            case .failure(let error):
                #expect(error == .idempotencyKeyInFlight(key: "same"))
            }
        }
        #expect(appended == 1)
        #expect(log.endOffset == 4, "no duplicate")
        try expectContents(log, batch)
        await log.close()
    }

    @Test func keysSurviveReopenFromTheActiveSegment() async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "s")
        for i in 0..<10 { _ = try await log.append(entries(i * 2, 2), idempotencyKey: "k\(i)") }
        await log.close()
        let reopened = try openLog(dataDirectory: dir.path, name: "s")
        #expect(reopened.idempotencyKeyCount == 10)
        for i in 0..<10 {
            let outcome = try await reopened.append(entries(i * 2, 2), idempotencyKey: "k\(i)")
            #expect(outcome == .replayed(AppendResult(firstOffset: UInt64(i * 2), lastOffset: UInt64(i * 2 + 1))))
        }
        #expect(reopened.endOffset == 20)
        await reopened.close()
    }

    @Test func keysSurviveRollsThroughKeysFilesAndAHeaderWalkWhenOneIsLost() async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: smallConfig())
        var results: [AppendResult] = []
        for i in 0..<300 { results.append(try await log.append(entries(i, 1), idempotencyKey: "key-\(i)").result) }
        let segments = log.info().segmentCount
        #expect(segments >= 4, "the test needs several sealed segments")
        await log.close()
        let keys = try keysFiles(dir.path)
        #expect(keys.count == segments - 1, "one .keys file per sealed segment")

        func expectAllReplayed(_ log: StreamLog, _ when: String) async throws {
            #expect(log.idempotencyKeyCount == 300, "\(when)")
            for i in stride(from: 0, to: 300, by: 7) {
                #expect(try await log.append(entries(i, 1), idempotencyKey: "key-\(i)") == .replayed(results[i]), "\(when): key-\(i)")
            }
            #expect(log.endOffset == 300, "\(when)")
        }
        let reopened = try openLog(dataDirectory: dir.path, name: "s", configuration: smallConfig())
        try await expectAllReplayed(reopened, "from .keys files")
        await reopened.close()

        // Lose one .keys file and damage another: both are rebuilt from the segments' control batches.
        let streamDir = dir.path + "/streams/s/"
        try FileManager.default.removeItem(atPath: streamDir + keys[0])
        var damaged = try [UInt8](Data(contentsOf: URL(fileURLWithPath: streamDir + keys[1])))
        damaged[damaged.count - 3] ^= 0x40
        try Data(damaged).write(to: URL(fileURLWithPath: streamDir + keys[1]))
        let rebuilt = try openLog(dataDirectory: dir.path, name: "s", configuration: smallConfig())
        try await expectAllReplayed(rebuilt, "after a header walk")
        await rebuilt.close()
        #expect(try keysFiles(dir.path) == keys, "the lost .keys file was written again")
        let rebuiltBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: streamDir + keys[1])))
        #expect(rebuiltBytes != damaged)
    }

    @Test func theWindowForgetsTheOldestKeysByCount() async throws {
        let dir = try TemporaryDirectory()
        var config = smallConfig()
        config.idempotencyKeysMax = 5
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        for i in 0..<40 { _ = try await log.append(entries(i, 1), idempotencyKey: "k\(i)") }
        #expect(log.idempotencyKeyCount == 5)
        await log.close()
        let reopened = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        #expect(reopened.idempotencyKeyCount == 5)
        for i in 35..<40 {
            #expect(try await reopened.append(entries(i, 1), idempotencyKey: "k\(i)") == .replayed(AppendResult(firstOffset: UInt64(i), lastOffset: UInt64(i))))
        }
        // Forgotten: the key appends again.
        #expect(try await reopened.append(entries(34, 1), idempotencyKey: "k34") == .appended(AppendResult(firstOffset: 40, lastOffset: 40)))
        await reopened.close()
    }

    @Test func theWindowForgetsKeysByAgeAlsoAcrossReopen() async throws {
        let dir = try TemporaryDirectory()
        let clock = HandClock()
        var config = smallConfig()
        config.idempotencyWindowMs = 10_000
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config, clock: { clock.read() })
        _ = try await log.append(entries(0, 1), idempotencyKey: "old")
        clock.advance(6_000)
        _ = try await log.append(entries(1, 1), idempotencyKey: "new")
        clock.advance(3_999)
        #expect(try await log.append(entries(0, 1), idempotencyKey: "old") == .replayed(AppendResult(firstOffset: 0, lastOffset: 0)))
        await log.close()

        clock.advance(1)  // "old" is 10 s old now, "new" 4 s
        let reopened = try openLog(dataDirectory: dir.path, name: "s", configuration: config, clock: { clock.read() })
        #expect(reopened.idempotencyKeyCount == 1)
        #expect(try await reopened.append(entries(1, 1), idempotencyKey: "new") == .replayed(AppendResult(firstOffset: 1, lastOffset: 1)))
        #expect(try await reopened.append(entries(0, 1), idempotencyKey: "old") == .appended(AppendResult(firstOffset: 2, lastOffset: 2)))
        clock.advance(6_000)
        #expect(try await reopened.append(entries(1, 1), idempotencyKey: "new") == .appended(AppendResult(firstOffset: 3, lastOffset: 3)))
        await reopened.close()
    }

    @Test func aCrashBetweenFsyncAndTheAnswerKeepsTheKey() async throws {
        let storage = FaultInjectingStorage()
        let log = try openLog(dataDirectory: "/data", name: "s", configuration: smallConfig(), storage: storage)
        for i in 0..<60 { _ = try await log.append(entries(i, 1), idempotencyKey: "k\(i)") }
        // The process dies after the fsync, before the producer reads the answer: the log is
        // never closed, unsynced state is lost, the producer retries.
        storage.crash()
        let reopened = try openLog(dataDirectory: "/data", name: "s", configuration: smallConfig(), storage: storage)
        #expect(reopened.endOffset == 60)
        for i in [0, 30, 59] {
            #expect(try await reopened.append(entries(i, 1), idempotencyKey: "k\(i)") == .replayed(AppendResult(firstOffset: UInt64(i), lastOffset: UInt64(i))))
        }
        #expect(reopened.endOffset == 60)
        _ = log
    }

    @Test func controlBatchesNeverReachReadersTheScannerOrDump() async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: smallConfig())
        var expected: [[UInt8]] = []
        for i in 0..<120 {
            let batch = entries(i * 3, 1 + i % 3)
            expected += batch
            _ = i % 2 == 0 ? try await log.append(batch, idempotencyKey: "k\(i)").result : try await log.append(batch)
        }
        try expectContents(log, expected)
        let raw = expected.reduce(Int64(0)) { $0 + Int64($1.count) }
        #expect(log.info().rawBytes == raw)
        await log.close()

        let scanner = try LogScanner(dataDirectory: dir.path, stream: "s")
        var seen: [[UInt8]] = []
        var keys: [String] = []
        let summary = try scanner.scan(visit: { batch in
            for range in batch.ranges { seen.append(Array(batch.payload[range])) }
            if batch.header.isControl {
                #expect(batch.ranges.isEmpty)
                #expect(batch.header.entryCount == 0 && batch.header.nextOffset == batch.header.baseOffset)
            }
            return true
        })
        #expect(summary.problem == nil)
        #expect(summary.entries == UInt64(expected.count))
        #expect(summary.controlBatches == 60)
        #expect(summary.rawBytes == raw)
        #expect(seen == expected)
        // The keys are there for whoever asks for them.
        _ = try scanner.scan(visit: { batch in
            if batch.header.isControl {
                keys += try StreamLog.controlRecordsForTest(batch)
            }
            return true
        })
        #expect(keys == (0..<60).map { "k\($0 * 2)" })
        #expect(try StreamLog.verify(dataDirectory: dir.path, stream: "s").problem == nil)
        // Reading from inside any batch, control batches included, yields the right entries.
        let reopened = try openLog(dataDirectory: dir.path, name: "s", configuration: smallConfig())
        for offset in stride(from: 0, to: expected.count, by: 5) {
            let records = try reopened.read(from: UInt64(offset), maxEntries: 3)
            #expect(records.map(\.payload) == Array(expected[offset..<min(offset + 3, expected.count)]))
        }
        await reopened.close()
    }

    @Test func retentionDeletesASegmentsKeysFile() async throws {
        let dir = try TemporaryDirectory()
        var config = smallConfig()
        config.retentionBytesMax = 20 * 1024
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        for i in 0..<300 { _ = try await log.append(entries(i, 1), idempotencyKey: "k\(i)") }
        let before = try keysFiles(dir.path)
        let report = try log.applyRetention()
        #expect(!report.deletedSegments.isEmpty)
        let after = try keysFiles(dir.path)
        #expect(after.count == before.count - report.deletedSegments.count)
        for deleted in report.deletedSegments {
            #expect(!after.contains(deleted.replacingOccurrences(of: ".log", with: ".keys")))
        }
        await log.close()
    }
}

extension StreamLog {
    /// The keys of a control batch the scanner handed out.
    static func controlRecordsForTest(_ batch: LogScanner.Batch) throws -> [String] {
        var bytes: [UInt8] = []
        var header = batch.header
        // Re-frame the scanner's (uncompressed) payload as a stored batch.
        header.codec = .none
        bytes.append(contentsOf: repeatElement(0, count: RecordBatchHeader.size))
        bytes.append(contentsOf: batch.payload)
        header.batchLength = UInt32(bytes.count)
        return try bytes.withUnsafeBytes { try RecordBatchCodec.decodeControlRecords($0, header: header) }.map(\.key)
    }
}

/// A group commit is atomic on disk: a write cut anywhere leaves either the whole group or
/// none of it after recovery, never a prefix of its batches.
@Suite struct GroupAtomicityTests {
    static let root = "/data"

    func config() -> LogConfiguration {
        var config = LogConfiguration()
        config.segmentBytesMax = 1 << 20
        config.batchBytesMax = 1024
        config.compressionLevel = nil
        config.indexIntervalBytes = 256
        config.preallocateBytes = 0
        return config
    }

    /// Batch boundaries of the group written after `start` in `bytes`.
    func boundaries(_ bytes: [UInt8], from start: Int) throws -> [(position: Int, header: RecordBatchHeader)] {
        var batches: [(Int, RecordBatchHeader)] = []
        var at = start
        while at + RecordBatchHeader.size <= bytes.count {
            guard let header = try? bytes[at...].withUnsafeBytes({ try RecordBatchCodec.decodeHeader($0) }) else { break }
            batches.append((at, header))
            at += Int(header.batchLength)
        }
        return batches
    }

    @Test(arguments: [false, true]) func aGroupCutAtAnyBatchBoundaryOrInsideABatchIsDroppedWhole(keyed: Bool) async throws {
        let acked = (0..<10).map { entry($0, size: 100) }
        let group = (0..<20).map { entry(100 + $0, size: 300) }
        let key: String? = keyed ? "the-group" : nil

        // Learn the group's write: its length and batch boundaries.
        let probe = FaultInjectingStorage()
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: probe)
        for e in acked { _ = try await log.append([e]) }
        let ackedEnd = log.info().storedBytes
        probe.setCrashAtNextSync()
        await #expect(throws: LogError.self) { try await log.append(group, idempotencyKey: key) }
        let path = probe.filePaths().first { $0.hasSuffix(".log") } ?? ""
        let writeBytes = probe.lastUnsyncedWriteBytes(path)
        let written = probe.fileBytes(path)
        let batches = try boundaries(written, from: Int(ackedEnd))
        #expect(batches.count >= 6, "the group spans several batches")
        #expect(batches.dropLast().allSatisfy { $0.header.continuesGroup })
        #expect(batches.last.map { !$0.header.continuesGroup && $0.header.isControl == keyed } == true)
        #expect(batches.reduce(0) { $0 + Int($1.header.batchLength) } == writeBytes)

        var cuts: Set<Int> = [0, writeBytes - 1, writeBytes]
        for (position, header) in batches {
            let relative = position - Int(ackedEnd)
            for delta in [-1, 0, 1, 26, Int(header.batchLength) / 2] where relative + delta >= 0 && relative + delta <= writeBytes {
                cuts.insert(relative + delta)
            }
        }
        for cut in cuts.sorted() {
            let storage = FaultInjectingStorage()
            let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
            for e in acked { _ = try await log.append([e]) }
            storage.setCrashAtNextSync()
            _ = try? await log.append(group, idempotencyKey: key)
            storage.crash(tornWriteBytes: cut)
            let reopened = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
            // A cut that loses only zero bytes (the top of a timestamp) loses nothing.
            let whole = written[(Int(ackedEnd) + cut)..<(Int(ackedEnd) + writeBytes)].allSatisfy { $0 == 0 }
            #expect(reopened.endOffset == (whole ? 30 : 10), "cut \(cut) of \(writeBytes)")
            try expectContents(reopened, whole ? acked + group : acked)
            if !whole && cut > 0 {
                #expect(reopened.recovery.truncatedAtPosition == ackedEnd, "cut \(cut): the group's bytes are reported cut")
            }
            // The retry appends (or, when the whole group survived with its key, replays).
            let retry = try await reopened.append(group, idempotencyKey: key)
            if whole && keyed {
                #expect(retry == .replayed(AppendResult(firstOffset: 10, lastOffset: 29)))
            } else {
                #expect(retry.result.firstOffset == reopened.endOffset - 20, "cut \(cut)")
            }
            await reopened.close()
        }
    }

    @Test func headersRejectUnknownFlagsAndEntrylessDataBatches() throws {
        var bytes: [UInt8] = []
        var scratch: [UInt8] = []
        try RecordBatchCodec.encode(entries: [[1, 2, 3]], baseOffset: 7, timestampMs: 1, compressionLevel: nil,
                                    into: &bytes, scratch: &scratch)
        func decode(_ b: [UInt8]) throws -> RecordBatchHeader { try b.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) } }
        var unknown = bytes
        unknown[14] = 0x04
        #expect(throws: BatchDecodeError.badFlags(0x04)) { try decode(unknown) }
        var noEntries = bytes
        noEntries[24] = 0
        #expect(throws: BatchDecodeError.self) { try decode(noEntries) }
        var control = bytes
        control[14] = 0x02
        #expect(throws: BatchDecodeError.self) { try decode(control) }  // a control batch holds no entries

        var controlBytes: [UInt8] = []
        let record = IdempotencyRecord(key: "k", fingerprint: EntriesFingerprint(entries: [[1]]),
                                       result: AppendResult(firstOffset: 3, lastOffset: 6), timestampMs: 9)
        RecordBatchCodec.encodeControl(records: [record], baseOffset: 7, timestampMs: 9, into: &controlBytes)
        let header = try decode(controlBytes)
        #expect(header.isControl && header.entryCount == 0 && header.nextOffset == 7)
        try controlBytes.withUnsafeBytes { raw in
            try RecordBatchCodec.verifyChecksum(raw, header: header)
            var payload: [UInt8] = []
            var ranges: [Range<Int>] = [0..<1]
            try RecordBatchCodec.decodePayload(raw, header: header, payload: &payload, ranges: &ranges)
            #expect(ranges.isEmpty)
            #expect(try RecordBatchCodec.decodeControlRecords(raw, header: header) == [record])
        }
        // patchBaseOffset sets flags and keeps the CRC right; it cannot turn data into control.
        let patched = try RecordBatchCodec.patchBaseOffset(&bytes, at: 0, baseOffset: 9, flags: RecordBatchHeader.flagGroupContinues)
        #expect(patched.continuesGroup && patched.baseOffset == 9)
        try bytes.withUnsafeBytes { try RecordBatchCodec.verifyChecksum($0, header: try decode(bytes)) }
        #expect(throws: BatchDecodeError.self) {
            try RecordBatchCodec.patchBaseOffset(&bytes, at: 0, baseOffset: 9, flags: RecordBatchHeader.flagControl)
        }
    }
}

/// The in-memory key table, as a value: every decision and the eviction order.
@Suite struct IdempotencyTableTests {
    func record(_ key: String, at ms: Int64, offset: UInt64 = 0) -> IdempotencyRecord {
        IdempotencyRecord(key: key, fingerprint: EntriesFingerprint(entries: [[1]]),
                          result: AppendResult(firstOffset: offset, lastOffset: offset), timestampMs: ms)
    }

    @Test func claimMarksInFlightUntilCompletedOrReleased() {
        var table = IdempotencyTable(windowMs: 1_000, keysMax: 10)
        let fingerprint = EntriesFingerprint(entries: [[1]])
        #expect(table.claim("a", fingerprint: fingerprint, nowMs: 0) == .admit)
        #expect(table.claim("a", fingerprint: fingerprint, nowMs: 0) == .inFlight)
        table.release("a")
        #expect(table.claim("a", fingerprint: fingerprint, nowMs: 0) == .admit)
        table.complete(record("a", at: 0, offset: 4), nowMs: 0)
        #expect(table.claim("a", fingerprint: fingerprint, nowMs: 999) == .replay(AppendResult(firstOffset: 4, lastOffset: 4)))
        #expect(table.claim("a", fingerprint: EntriesFingerprint(entries: [[2]]), nowMs: 999) == .reused)
        #expect(table.claim("a", fingerprint: fingerprint, nowMs: 1_000) == .admit, "out of the window")
        #expect(table.inFlight.count == 1 && table.count == 0)
    }

    @Test func evictionIsOldestFirstAndSkipsStaleOrderEntries() {
        var table = IdempotencyTable(windowMs: 1_000_000, keysMax: 3)
        for (i, key) in ["a", "b", "c"].enumerated() { table.remember(record(key, at: Int64(i)), nowMs: 10) }
        table.remember(record("a", at: 5), nowMs: 10)  // "a" again: now the newest
        table.remember(record("d", at: 6), nowMs: 10)
        #expect(Set(table.remembered.keys) == ["c", "a", "d"])
        for i in 0..<5_000 { table.remember(record("k\(i)", at: 7), nowMs: 10) }
        #expect(Set(table.remembered.keys) == ["k4997", "k4998", "k4999"])
    }
}
