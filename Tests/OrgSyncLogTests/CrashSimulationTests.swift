import Foundation
import OrgSyncCore
@testable import OrgSyncLog
import OrgSyncTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Crashes simulated through `FaultInjectingStorage`: torn writes at every byte, lost unsynced
/// data, bit flips, failing disks. After each, the reopened log must hold exactly the
/// acknowledged prefix (plus, at most, a whole unacknowledged batch) and never a corrupt entry.
@Suite struct CrashSimulationTests {
    static let root = "/data"

    func config() -> LogConfiguration {
        var config = LogConfiguration()
        config.segmentBytesMax = 8 * 1024
        config.indexIntervalBytes = 256
        config.preallocateBytes = 0
        return config
    }

    /// Appends `count` single-entry appends and returns the entries.
    func fill(_ log: StreamLog, from: Int, count: Int) async throws -> [[UInt8]] {
        var entries: [[UInt8]] = []
        for i in from..<(from + count) {
            entries.append(entry(i, size: 40 + (i * 37) % 200))
            _ = try await log.append([entries.last ?? []])
        }
        return entries
    }

    func activeSegmentPath(_ storage: FaultInjectingStorage) -> String {
        storage.filePaths().filter { $0.hasSuffix(".log") }.sorted().last ?? ""
    }

    @Test func aWriteCutAtEveryByteLeavesTheAckedPrefix() async throws {
        // One acknowledged history, then an append whose flush never completes; the machine
        // crashes with that write torn after k bytes, for every k.
        let probe = FaultInjectingStorage()
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: probe)
        let acked = try await fill(log, from: 0, count: 30)
        let pendingEntries = (0..<5).map { entry(100 + $0, size: 90) }
        probe.setCrashAtNextSync()
        await #expect(throws: LogError.self) { try await log.append(pendingEntries) }
        let writeBytes = probe.lastUnsyncedWriteBytes(activeSegmentPath(probe))
        #expect(writeBytes > 100)

        for cut in 0...writeBytes {
            let storage = FaultInjectingStorage()
            let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
            _ = try await fill(log, from: 0, count: 30)
            storage.setCrashAtNextSync()
            _ = try? await log.append(pendingEntries)
            storage.crash(tornWriteBytes: cut)
            let reopened = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
            let end = reopened.endOffset
            // All or nothing of the unacknowledged append; every acked entry intact.
            #expect(end == 30 || end == 35, "cut \(cut): end \(end)")
            try expectContents(reopened, end == 30 ? acked : acked + pendingEntries)
            if end == 30 && cut > 0 {
                #expect(reopened.recovery.truncatedAtPosition != nil, "cut \(cut): torn bytes must be reported")
            }
            // And the log keeps working after recovery.
            let next = try await reopened.append([entry(999)])
            #expect(next.firstOffset == end)
            await reopened.close()
        }
    }

    @Test func losingTheUnsyncedTailKeepsEverythingAcked() async throws {
        let storage = FaultInjectingStorage()
        var cfg = config()
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: cfg, storage: storage)
        let acked = try await fill(log, from: 0, count: 200)  // rolls several segments
        storage.crash()
        let reopened = try openLog(dataDirectory: Self.root, name: "s", configuration: cfg, storage: storage)
        try expectContents(reopened, acked)

        // With the interval policy an ack does not mean durable: a crash may lose acked entries,
        // but what remains is still a clean prefix.
        cfg.fsyncPolicy = .interval(intervalMs: 60_000)
        let storage2 = FaultInjectingStorage()
        let lax = try openLog(dataDirectory: Self.root, name: "s", configuration: cfg, storage: storage2)
        let written = try await fill(lax, from: 0, count: 50)
        storage2.crash()
        let after = try openLog(dataDirectory: Self.root, name: "s", configuration: cfg, storage: storage2)
        #expect(after.endOffset <= 50)
        try expectContents(after, Array(written.prefix(Int(after.endOffset))))
    }

    @Test func seededBitFlipsAreNeverServed() async throws {
        // ORGSYNC_SEED replays another schedule; the failing round is printed with its seed.
        let seed = ProcessInfo.processInfo.environment["ORGSYNC_SEED"].flatMap { UInt64($0) } ?? 2026
        var rng = SplitMix64(seed: seed)
        for round in 0..<300 {
            let storage = FaultInjectingStorage()
            let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
            let acked = try await fill(log, from: 0, count: 60)
            await log.close()
            let segments = storage.filePaths().filter { $0.hasSuffix(".log") || $0.hasSuffix(".index") }
            let victim = segments[Int(rng.next() % UInt64(segments.count))]
            let size = storage.fileBytes(victim).count
            guard size > 0 else { continue }
            storage.flipBit(victim, byte: Int(rng.next() % UInt64(size)), bit: Int(rng.next() % 8))

            // Opening either works (index damage, or a torn-looking tail that is cut and
            // reported) or refuses the stream as corrupt; it never crashes.
            let reopened: StreamLog
            do {
                reopened = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
            } catch LogError.corrupt {
                continue
            }
            // Whatever is read back is exactly what was appended, or the read refuses.
            var offset: UInt64 = 0
            do {
                while offset < reopened.endOffset {
                    let records = try reopened.read(from: offset, maxEntries: 16)
                    for record in records {
                        #expect(record.payload == acked[Int(record.offset)], "round \(round): corrupt entry served at \(record.offset) (seed \(seed))")
                    }
                    guard let last = records.last else { break }
                    offset = last.offset + 1
                }
            } catch LogError.corrupt(let report) {
                #expect(report.firstOffset >= offset, "round \(round): nothing before the damage is called corrupt")
                // The stream is now refused until repaired.
                #expect(throws: LogError.self) {
                    try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
                }
                let repair = try StreamLog.repair(dataDirectory: Self.root, stream: "s", storage: storage)
                #expect(repair.problem != nil)
                let repaired = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
                try expectContents(repaired, Array(acked.prefix(Int(repaired.endOffset))))
            }
        }
    }

    /// Found by the end-to-end harness: bytes after the last batch of a sealed segment were
    /// stepped over by readers (the next read starts in the next segment) while `log verify`
    /// calls them damage. A reader must report them too.
    @Test func garbageAfterTheLastBatchOfASealedSegmentIsNotSteppedOver() async throws {
        // As the broker writes: preallocated segments (the default), batches of several entries.
        var configuration = LogConfiguration()
        configuration.segmentBytesMax = 8 * 1024
        configuration.compressionLevel = nil
        let directory = try TemporaryDirectory()
        let log = try openLog(dataDirectory: directory.path, name: "s", configuration: configuration)
        for i in 0..<30 { _ = try await log.append((0..<10).map { entry(i * 10 + $0, size: 300) }) }
        await log.close()
        let streamDirectory = StreamLog.streamDirectory(dataDirectory: directory.path, name: "s")
        let segments = try FileManager.default.contentsOfDirectory(atPath: streamDirectory)
            .filter { $0.hasSuffix(".log") }.sorted()
        #expect(segments.count >= 3)
        let handle = try #require(FileHandle(forWritingAtPath: streamDirectory + "/" + segments[1]))
        handle.seekToEndOfFile()
        handle.write(Data(repeating: 0xAB, count: 100))
        handle.closeFile()
        let reopened = try openLog(dataDirectory: directory.path, name: "s", configuration: configuration)
        // Read as a link does, from 0 in big reads: a read that crosses into the damaged segment
        // (no index look-up there) must stop at the damage, not hand over to the next segment.
        var offset: UInt64 = 0
        var reported: CorruptionReport?
        for _ in 0..<1000 where offset < reopened.endOffset && reported == nil {
            do {
                let records = try reopened.read(from: offset, maxEntries: 1000)
                guard let last = records.last else { break }
                offset = last.offset + 1
            } catch LogError.corrupt(let report) {
                reported = report
            }
        }
        let report = try #require(reported, "read the whole stream (to \(offset)) over the damage")
        #expect(report.segment == segments[1])
        #expect(offset <= report.firstOffset)
        // ... and `log verify` agrees.
        let summary = try StreamLog.verify(dataDirectory: directory.path, stream: "s")
        #expect(summary.problem?.segment == segments[1])
    }

    @Test func verifyFindsInteriorDamageWithItsOffsetRange() async throws {
        let storage = FaultInjectingStorage()
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
        let acked = try await fill(log, from: 0, count: 200)
        await log.close()
        let segments = storage.filePaths().filter { $0.hasSuffix(".log") }.sorted()
        #expect(segments.count >= 3)
        // Damage the middle of the second segment.
        let victim = segments[1]
        storage.flipBit(victim, byte: storage.fileBytes(victim).count / 2, bit: 3)
        let summary = try StreamLog.verify(dataDirectory: Self.root, stream: "s", storage: storage)
        let problem = try #require(summary.problem)
        #expect(victim.hasSuffix(problem.segment))
        let secondBase = UInt64(problem.segment.dropLast(4)) ?? 0
        #expect(problem.firstOffset >= secondBase)
        #expect(problem.endOffset > problem.firstOffset)
        // verify marked it: the broker refuses the stream until repaired, naming the range.
        #expect(throws: LogError.corrupt(problem)) {
            try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
        }
        let repair = try StreamLog.repair(dataDirectory: Self.root, stream: "s", storage: storage)
        #expect(repair.droppedFrom == problem.firstOffset)
        let repaired = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
        #expect(repaired.endOffset == problem.firstOffset)
        try expectContents(repaired, Array(acked.prefix(Int(problem.firstOffset))))
    }

    @Test func aFullDiskFailsTheAppendCleanlyAndRecovers() async throws {
        let storage = FaultInjectingStorage()
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
        let acked = try await fill(log, from: 0, count: 10)
        storage.setWriteBudget(50)
        do {
            _ = try await log.append([entry(50, size: 400)])
            Issue.record("append on a full disk succeeded")
        } catch LogError.storage(let error) {
            #expect(error.isNoSpace)
        }
        #expect(log.endOffset == 10)
        storage.setWriteBudget(nil)
        let more = try await log.append([entry(11)])
        #expect(more.firstOffset == 10)
        try expectContents(log, acked + [entry(11)])
        await log.close()
        let reopened = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
        try expectContents(reopened, acked + [entry(11)])
        #expect(try StreamLog.verify(dataDirectory: Self.root, stream: "s", storage: storage).problem == nil)
    }

    @Test func aFailedFlushIsNotAcknowledged() async throws {
        let storage = FaultInjectingStorage()
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
        let acked = try await fill(log, from: 0, count: 5)
        storage.setFailSyncs(true)
        await #expect(throws: LogError.self) { try await log.append([entry(5)]) }
        #expect(log.endOffset == 5)
        storage.setFailSyncs(false)
        _ = try await log.append([entry(6)])
        try expectContents(log, acked + [entry(6)])
    }

    @Test func cursorWritesAreAtomicAtEveryByte() throws {
        for cut in 0...CursorStore.slotSize {
            let storage = FaultInjectingStorage()
            let cursors = try CursorStore(directory: "/c", storage: storage)
            try cursors.store("demo", offset: 41)
            try cursors.store("demo", offset: 42)
            storage.setCrashAtNextSync()
            #expect(throws: LogError.self) { try cursors.store("demo", offset: 1_000_000) }
            storage.crash(tornWriteBytes: cut)
            let reopened = try CursorStore(directory: "/c", storage: storage)
            let value = try reopened.load("demo")
            if cut == CursorStore.slotSize {
                #expect(value == 1_000_000)
            } else {
                #expect(value == 42, "cut \(cut)")
            }
        }
    }

    @Test func cursorsPastATruncatedEndAreClamped() async throws {
        let storage = FaultInjectingStorage()
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
        _ = try await fill(log, from: 0, count: 10)
        try log.storeCursor("c", offset: 10)
        await log.close()
        // Destroy the tail batch: the cursor now points past what the log holds.
        let segment = storage.filePaths().filter { $0.hasSuffix(".log") }.sorted().last ?? ""
        let bytes = storage.fileBytes(segment)
        storage.flipBit(segment, byte: bytes.count - 3, bit: 0)
        let reopened = try openLog(dataDirectory: Self.root, name: "s", configuration: config(), storage: storage)
        #expect(reopened.endOffset < 10)
        #expect(reopened.recovery.clampedCursors == ["c"])
        #expect(try reopened.cursors.load("c") == reopened.endOffset)
    }
}
