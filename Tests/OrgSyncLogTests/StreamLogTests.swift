import Foundation
import Synchronization
import OrgSyncCore
@testable import OrgSyncLog
import OrgSyncTestSupport
import Testing

@Suite struct StreamLogTests {
    @Test func appendsReadsAndReopensAcrossRolls() async throws {
        let dir = try TemporaryDirectory()
        var expected: [[UInt8]] = []
        var config = smallConfig()
        config.compressionLevel = nil
        do {
            let log = try openLog(dataDirectory: dir.path, name: "events", configuration: config)
            var rng = SplitMix64(seed: 1)
            for _ in 0..<120 {
                let count = 1 + Int(rng.next() % 9)
                let batch = (0..<count).map { entry(expected.count + $0, size: 60 + Int(rng.next() % 300)) }
                let result = try await log.append(batch)
                #expect(result.firstOffset == UInt64(expected.count))
                #expect(result.count == count)
                expected += batch
            }
            #expect(log.info().segmentCount > 3, "small segments must roll")
            try expectContents(log, expected)
            // Random starting offsets land in the middle of batches and segments.
            for _ in 0..<50 {
                let start = rng.next() % UInt64(expected.count)
                let records = try log.read(from: start, maxEntries: 5)
                #expect(records.first?.offset == start)
                #expect(records.first?.payload == expected[Int(start)])
            }
            await log.close()
        }
        let reopened = try openLog(dataDirectory: dir.path, name: "events", configuration: config)
        #expect(reopened.recovery.truncatedAtPosition == nil)
        try expectContents(reopened, expected)
        let summary = try StreamLog.verify(dataDirectory: dir.path, stream: "events")
        #expect(summary.problem == nil)
        #expect(summary.entries == UInt64(expected.count))
        #expect(summary.rawBytes == Int64(expected.reduce(0) { $0 + $1.count }))
    }

    @Test func concurrentAppendersAreGroupCommittedInOrder() async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "s")
        let producers = 16
        let perProducer = 50
        let results = try await withThrowingTaskGroup(of: (Int, [AppendResult]).self) { group in
            for p in 0..<producers {
                group.addTask {
                    var results: [AppendResult] = []
                    for i in 0..<perProducer {
                        results.append(try await log.append([Array("p\(p)-\(i)".utf8)]))
                    }
                    return (p, results)
                }
            }
            var all: [Int: [AppendResult]] = [:]
            for try await (p, r) in group { all[p] = r }
            return all
        }
        #expect(log.endOffset == UInt64(producers * perProducer))
        for (p, acks) in results {
            // Each producer's entries are in the order it appended them, at the offsets acked.
            #expect(acks.map(\.firstOffset) == acks.map(\.firstOffset).sorted())
            for (i, ack) in acks.enumerated() {
                let record = try log.read(from: ack.firstOffset, maxEntries: 1)
                #expect(record.first?.payload == Array("p\(p)-\(i)".utf8))
            }
        }
        let offsets = results.values.flatMap { $0.map(\.firstOffset) }.sorted()
        #expect(offsets == (0..<UInt64(producers * perProducer)).map { $0 })
        await log.close()
    }

    @Test func backPressureWithATinyQueueLosesNothing() async throws {
        let dir = try TemporaryDirectory()
        var config = LogConfiguration()
        config.queuedAppendsMax = 1
        config.queuedBytesMax = 1 << 20
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for p in 0..<32 {
                group.addTask { _ = try await log.append([entry(p)]) }
            }
            try await group.waitForAll()
        }
        #expect(log.endOffset == 32)
        let payloads = Set(try log.read(from: 0, maxEntries: 100).map(\.payload))
        #expect(payloads == Set((0..<32).map { entry($0) }))
    }

    @Test func limitsAreTypedErrorsAndAppendNothing() async throws {
        let dir = try TemporaryDirectory()
        var config = LogConfiguration()
        config.entryBytesMax = 100
        config.batchBytesMax = 1024
        config.appendEntriesMax = 3
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        await #expect(throws: LogError.entryTooLarge(index: 1, bytes: 101, limit: 100)) {
            try await log.append([[1], [UInt8](repeating: 2, count: 101)])
        }
        await #expect(throws: LogError.tooManyEntries(count: 4, limit: 3)) { try await log.append([[1], [2], [3], [4]]) }
        await #expect(throws: LogError.emptyAppend) { try await log.append([]) }
        #expect(log.endOffset == 0)
        #expect(throws: LogError.self) {
            var bad = LogConfiguration()
            bad.segmentBytesMax = 10
            try bad.validate()
        }
        #expect(throws: LogError.invalidStreamName("../x")) { try openLog(dataDirectory: dir.path, name: "../x") }
    }

    @Test func tailingReaderWakesOnAppendAndOnCancel() async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "s")
        let waiter = Task { try await log.waitForEntries(after: 0) }
        _ = try await log.append([[1, 2, 3]])
        try await waiter.value
        // Already past: returns at once.
        try await log.waitForEntries(after: 0)
        let cancelled = Task { try await log.waitForEntries(after: 10) }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        let closing = Task { try await log.waitForEntries(after: 5) }
        await log.close()
        await #expect(throws: LogError.closed) { try await closing.value }
        await #expect(throws: LogError.closed) { try await log.append([[1]]) }
    }

    @Test func missingOrDamagedIndexIsRebuilt() async throws {
        let dir = try TemporaryDirectory()
        var expected: [[UInt8]] = []
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: smallConfig())
            for i in 0..<400 {
                expected.append(entry(i))
                _ = try await log.append([expected[i]])
            }
            await log.close()
        }
        let streamDir = dir.path + "/streams/s"
        let indexes = try FileManager.default.contentsOfDirectory(atPath: streamDir).filter { $0.hasSuffix(".index") }.sorted()
        #expect(indexes.count > 2)
        try FileManager.default.removeItem(atPath: streamDir + "/" + indexes[0])
        try Data([9, 9, 9, 9, 9, 9, 9, 9, 1, 2, 3]).write(to: URL(fileURLWithPath: streamDir + "/" + indexes[1]))
        try Data(repeating: 0xFF, count: 64).write(to: URL(fileURLWithPath: streamDir + "/" + indexes[indexes.count - 1]))
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: smallConfig())
        try expectContents(log, expected)
        #expect(FileManager.default.fileExists(atPath: streamDir + "/" + indexes[0]))
    }

    @Test func cursorsCannotPassTheEndAndSurviveReopen() async throws {
        let dir = try TemporaryDirectory()
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s")
            _ = try await log.append([[1], [2], [3]])
            try log.storeCursor("demo", offset: 2)
            #expect(throws: LogError.cursorBeyondEnd(name: "demo", offset: 4, end: 3)) { try log.storeCursor("demo", offset: 4) }
            #expect(throws: LogError.invalidCursorName("a/b")) { try log.storeCursor("a/b", offset: 1) }
            try log.storeCursor("demo", offset: 3)
            await log.close()
        }
        let log = try openLog(dataDirectory: dir.path, name: "s")
        #expect(try log.cursors.load("demo") == 3)
        #expect(try log.cursors.load("other") == nil)
        #expect(try log.cursors.names() == ["demo"])
    }

    @Test func retentionNeverPassesACursorUnlessToldTo() async throws {
        let dir = try TemporaryDirectory()
        var config = smallConfig()
        config.retentionBytesMax = 20 * 1024
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        for i in 0..<600 { _ = try await log.append([entry(i)]) }
        let before = log.info()
        #expect(before.storedBytes > 20 * 1024)
        try log.storeCursor("slow", offset: 10)
        let kept = try log.applyRetention()
        #expect(kept.deletedSegments.isEmpty)
        #expect(!kept.keptForCursors.isEmpty)
        #expect(log.startOffset == 0)
        // Once the consumer has moved on, old segments go, but never one it still needs.
        try log.storeCursor("slow", offset: 400)
        let report = try log.applyRetention()
        #expect(!report.deletedSegments.isEmpty)
        #expect(log.startOffset <= 400)
        #expect(log.startOffset > 0)
        #expect(try log.read(from: 400, maxEntries: 1).first?.payload == entry(400))
        #expect(throws: LogError.self) { try log.read(from: 0, maxEntries: 1) }
        #expect(report.lostRanges.isEmpty)
        // Size-based retention then stays within the limit while respecting the cursor.
        try log.storeCursor("slow", offset: log.endOffset)
        try log.applyRetention()
        #expect(log.info().storedBytes <= 20 * 1024 + Int64(config.segmentBytesMax) + 4096)
        await log.close()
    }

    @Test func retentionCanDropUnconsumedAndReportsTheLostRange() async throws {
        let dir = try TemporaryDirectory()
        var config = smallConfig()
        config.retentionAgeMsMax = 0
        config.retentionDropsUnconsumed = true
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        for i in 0..<300 { _ = try await log.append([entry(i)]) }
        try log.storeCursor("behind", offset: 5)
        let report = try log.applyRetention(nowMs: wallClockMs() + 10)
        #expect(report.lostRanges["behind"] == 5..<log.startOffset)
        #expect(log.info().segmentCount == 1, "every sealed segment is past its age")
        await log.close()
    }
}

@Suite struct StreamLockTests {
    @Test func aSecondWriterOfOneStreamIsRefused() throws {
        let dir = try TemporaryDirectory()
        let first = try openLog(dataDirectory: dir.path, name: "s")
        do {
            _ = try openLog(dataDirectory: dir.path, name: "s")
            Issue.record("two logs opened one stream")
        } catch LogError.storage(let error) {
            #expect(error.isLocked)
        }
        #expect(first.endOffset == 0)
        // Another stream in the same data directory is independent.
        #expect(try openLog(dataDirectory: dir.path, name: "t").endOffset == 0)
    }
}

@Suite struct PrecompressedAppendTests {
    @Test func largeAndSmallAppendsInterleaveInOneGroup() async throws {
        let dir = try TemporaryDirectory()
        var config = smallConfig()
        config.precompressMinBytes = 1024
        config.batchBytesMax = 2048
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        // Producers alternate big (encoded by the appender) and small (grouped) appends.
        let results = try await withThrowingTaskGroup(of: [(AppendResult, [[UInt8]])].self) { group in
            for p in 0..<6 {
                group.addTask {
                    var mine: [(AppendResult, [[UInt8]])] = []
                    for i in 0..<20 {
                        let count = (p + i) % 3 == 0 ? 25 : 1
                        let entries = (0..<count).map { entry(p * 10_000 + i * 100 + $0) }
                        mine.append((try await log.append(entries), entries))
                    }
                    return mine
                }
            }
            var all: [(AppendResult, [[UInt8]])] = []
            for try await part in group { all += part }
            return all
        }
        var expected = [[UInt8]](repeating: [], count: Int(log.endOffset))
        for (result, entries) in results {
            #expect(result.count == entries.count)
            for (k, entry) in entries.enumerated() { expected[Int(result.firstOffset) + k] = entry }
        }
        #expect(!expected.contains([]), "offsets must be dense")
        try expectContents(log, expected)
        await log.close()
        let summary = try StreamLog.verify(dataDirectory: dir.path, stream: "s")
        #expect(summary.problem == nil)
        #expect(summary.entries == UInt64(expected.count))
    }
}

@Suite struct SegmentAgeTests {
    /// A wall clock the test moves by hand.
    final class HandClock: Sendable {
        let now = Mutex<Int64>(1_000_000)
        func advance(_ ms: Int64) { now.withLock { $0 += ms } }
        func read() -> Int64 { now.withLock { $0 } }
    }

    @Test func segmentsRollByAgeAndAgeRetentionUsesBatchTimes() async throws {
        let dir = try TemporaryDirectory()
        let clock = HandClock()
        var config = LogConfiguration()
        config.segmentAgeMsMax = 60_000
        config.retentionAgeMsMax = 120_000
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config, clock: { clock.read() })
        _ = try await log.append([entry(0)])
        clock.advance(59_000)
        _ = try await log.append([entry(1)])
        #expect(log.info().segmentCount == 1, "younger than segmentAgeMsMax: no roll")
        clock.advance(2_000)
        _ = try await log.append([entry(2)])
        #expect(log.info().segmentCount == 2, "the first batch is now 61 s old: rolled")
        #expect(try log.read(from: 2, maxEntries: 1).first?.timestampMs == clock.read())
        // The sealed segment's newest batch is at t0+59 s; it expires 120 s after that.
        #expect(try log.applyRetention(nowMs: 1_000_000 + 59_000 + 120_000).deletedSegments.isEmpty)
        let report = try log.applyRetention(nowMs: 1_000_000 + 59_000 + 120_001)
        #expect(report.deletedSegments.count == 1)
        #expect(log.startOffset == 2)
        await log.close()
    }

    enum StorageKind: String, CaseIterable, Sendable { case disk, memory }

    /// Ages count from batches written before a restart: a sealed segment whose index is whole
    /// (read back, not rebuilt) still expires, and the active segment, read again only from its
    /// last index point, still rolls by the age of its first batch. (Both were once learnt only
    /// from the batches a reopen scanned: sealed segments of a restarted broker never expired.)
    @Test(arguments: StorageKind.allCases)
    func agesCountFromBatchesWrittenBeforeARestart(_ kind: StorageKind) async throws {
        let dir = try TemporaryDirectory()
        let storage: any LogStorage = kind == .disk ? PosixStorage() : FaultInjectingStorage()
        let clock = HandClock()
        let t0 = clock.read()
        var config = smallConfig()
        config.indexIntervalBytes = 64  // (the least) a point at every batch: a reopen reads only the last
        config.segmentAgeMsMax = 60_000
        config.retentionAgeMsMax = 120_000
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config, storage: storage, clock: { clock.read() })
            for i in 0..<5 {  // segment 0: batches at t0 … t0+4 s
                _ = try await log.append([entry(i)])
                clock.advance(1_000)
            }
            clock.advance(56_000)
            for i in 5..<10 {  // t0+61 s: segment 5, batches at t0+61 … t0+65 s
                _ = try await log.append([entry(i)])
                clock.advance(1_000)
            }
            #expect(log.info().segmentCount == 2)
            await log.close()
        }
        clock.advance(100_000 - (clock.read() - t0))  // t0+100 s
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config, storage: storage, clock: { clock.read() })
        #expect(try log.applyRetention(nowMs: t0 + 4_000 + 120_000).deletedSegments.isEmpty, "segment 0's newest batch is exactly 120 s old")
        let report = try log.applyRetention(nowMs: t0 + 4_000 + 120_001)
        #expect(report.deletedSegments == [Segment.fileName(0, ".log")], "segment 0's newest batch (t0+4 s) is past 120 s")
        #expect(log.startOffset == 5)

        _ = try await log.append([entry(10)])
        #expect(log.info().segmentCount == 1, "segment 5's first batch (t0+61 s) is 39 s old: no roll")
        clock.advance(22_000)  // t0+122 s
        _ = try await log.append([entry(11)])
        #expect(log.info().segmentCount == 2, "segment 5's first batch is 61 s old: rolled")
        #expect(try log.read(from: 11, maxEntries: 1).first?.payload == entry(11))
        await log.close()
    }
}

@Suite struct StreamInfoTests {
    @Test func rawBytesAndRatioMatchAFullScanAcrossReopen() async throws {
        let dir = try TemporaryDirectory()
        var config = smallConfig()
        config.indexIntervalBytes = 128
        var total: Int64 = 0
        do {
            let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
            for i in 0..<300 {
                let batch = (0..<(1 + i % 4)).map { entry(i * 10 + $0) }
                total += Int64(batch.reduce(0) { $0 + $1.count })
                _ = try await log.append(batch)
            }
            #expect(log.info().rawBytes == total)
            await log.close()
        }
        let log = try openLog(dataDirectory: dir.path, name: "s", configuration: config)
        let info = log.info()
        let scan = try LogScanner(dataDirectory: dir.path, stream: "s").scan()
        #expect(info.rawBytes == total)
        #expect(info.rawBytes == scan.rawBytes)
        #expect(info.storedBytes == scan.storedBytes)
        #expect(info.compressionRatio > 1)
    }
}

@Suite struct StreamLockReleaseTests {
    @Test func closeReleasesTheLock() async throws {
        let dir = try TemporaryDirectory()
        let first = try openLog(dataDirectory: dir.path, name: "s")
        _ = try await first.append([[1]])
        await first.close()
        let second = try openLog(dataDirectory: dir.path, name: "s")
        #expect(second.endOffset == 1)
        #expect(first.endOffset == 1)
    }
}

@Suite struct StreamLineageTests {
    @Test func aStreamOfThePreviousReleaseGetsAnIdentityThatLasts() async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-lineage-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try StreamLog.open(dataDirectory: directory, name: "events")
        _ = try await log.append([Array(#"{"a":1}"#.utf8)])
        await log.close()
        // The previous release wrote no IDENTITY file: remove it to get exactly that directory.
        try FileManager.default.removeItem(atPath: directory + "/streams/events/IDENTITY")
        let upgraded = try StreamLog.open(dataDirectory: directory, name: "events")
        let lineage = upgraded.lineage
        #expect(lineage.currentEpoch == 1)
        #expect(StreamLineage.isValidStreamID(lineage.streamID))
        #expect(try upgraded.read(from: 0, maxEntries: 10).count == 1)
        await upgraded.close()
        let again = try StreamLog.open(dataDirectory: directory, name: "events")
        #expect(again.lineage == lineage, "the identity is kept, not made anew")
        await again.close()
    }

    @Test func aDamagedIdentityRefusesTheStreamNamingTheFile() async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-lineage-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        await (try StreamLog.open(dataDirectory: directory, name: "events")).close()
        let path = directory + "/streams/events/IDENTITY"
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[40] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: LogError.self) { try StreamLog.open(dataDirectory: directory, name: "events") }
    }

    @Test func positionsAreConsistentOnlyBelowTheCutOfTheirEpoch() {
        var lineage = StreamLineage(streamID: "s", epochs: [.init(epoch: 1, startOffset: 0)])
        #expect(lineage.isConsistent(epoch: 1, offset: 399, endOffset: 400))
        #expect(!lineage.isConsistent(epoch: 1, offset: 400, endOffset: 400))
        lineage.beginEpoch(at: 70)
        #expect(lineage.isConsistent(epoch: 1, offset: 69, endOffset: 170))
        #expect(!lineage.isConsistent(epoch: 1, offset: 70, endOffset: 170))
        #expect(lineage.isConsistent(epoch: 2, offset: 169, endOffset: 170))
        #expect(!lineage.isConsistent(epoch: 3, offset: 1, endOffset: 170))
    }
}
