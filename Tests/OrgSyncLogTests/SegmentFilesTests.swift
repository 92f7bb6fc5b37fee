import Foundation
import Synchronization
@testable import OrgSyncLog
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Writes a stream of `count` sealed-and-active segments directly in the on-disk format: segment
/// `i` is `<i as 20 digits>.log` holding one batch of one entry at offset `i` (no `.index`, no
/// `.keys`: both are caches the log rebuilds). Thousands in well under a second, where rolling
/// them through the log would fsync each.
func writeSegments(streamDirectory: String, count: Int, timestampMs: Int64, payload: (Int) -> [UInt8]) throws {
    try FileManager.default.createDirectory(atPath: streamDirectory, withIntermediateDirectories: true)
    var bytes: [UInt8] = []
    var scratch: [UInt8] = []
    for i in 0..<count {
        bytes.removeAll(keepingCapacity: true)
        try RecordBatchCodec.encode(entries: [payload(i)], baseOffset: UInt64(i), timestampMs: timestampMs,
                                    compressionLevel: nil, into: &bytes, scratch: &scratch)
        let path = streamDirectory + "/" + Segment.fileName(UInt64(i), ".log")
        // Plain open/write/close: Foundation's file writes cost milliseconds each.
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StorageError(operation: "open", path: path, errno: errno) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else { throw StorageError(operation: "write", path: path, errno: errno) }
    }
}

@Suite struct LeastRecentlyUsedTests {
    @Test func pastCapacityTheLeastRecentlyUsedIsEvicted() {
        var cache = LeastRecentlyUsed<Int, String>(capacity: 2)
        #expect(cache.insert("a", for: 1).isEmpty)
        #expect(cache.insert("b", for: 2).isEmpty)
        #expect(cache.value(for: 1) == "a", "a hit marks 1 as used after 2")
        #expect(cache.insert("c", for: 3) == ["b"])
        #expect(cache.count == 2)
        #expect(cache.value(for: 2) == nil)
        #expect(cache.value(for: 1) == "a")
        #expect(cache.value(for: 3) == "c")
    }

    @Test func replacingAKeyReturnsTheOldValueAndRemoveForgets() {
        var cache = LeastRecentlyUsed<Int, String>(capacity: 3)
        _ = cache.insert("a", for: 1)
        #expect(cache.insert("a2", for: 1) == ["a"])
        #expect(cache.count == 1)
        #expect(cache.remove(1) == "a2")
        #expect(cache.value(for: 1) == nil)
    }
}

@Suite struct SealedSegmentFilesTests {
    /// Counts this process's open descriptors that name files under `directory`: robust against
    /// other tests running in parallel (they use other directories).
    func openDescriptors(under directory: String) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").filter { fd in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd))?.hasPrefix(directory + "/") ?? false
        }.count
    }

    @Test func aStreamOfManySegmentsHoldsABoundedNumberOfDescriptors() throws {
        let dir = try TemporaryDirectory()
        let streamDirectory = StreamLog.streamDirectory(dataDirectory: dir.path, name: "events")
        let count = 600
        // Two days old: out of the idempotency window, so opening reads one segment's keys, not
        // 600 (each rebuilt `.keys` is fsync'ed, which would make this test slow, not different).
        try writeSegments(streamDirectory: streamDirectory, count: count, timestampMs: wallClockMs() - 2 * 86_400_000) { entry($0) }
        var config = LogConfiguration()
        config.openSealedSegmentsMax = 8
        let log = try openLog(dataDirectory: dir.path, name: "events", configuration: config)
        #expect(log.endOffset == UInt64(count))
        // Opening stat'ed the sealed segments (it read the newest one's keys through the cache):
        // the active segment and the lock are open, and at most one sealed segment.
        #expect(log.sealedFiles.openCount <= 1)
        let atOpen = try openDescriptors(under: streamDirectory)
        #expect(atOpen >= 2, "the lock and the active segment are seen (the count works)")
        #expect(atOpen <= 1 + 2)
        // Every entry from the oldest segment on is served, through a cache of 8.
        try expectContents(log, (0..<count).map { entry($0) })
        #expect(log.sealedFiles.openCount == 8)
        #expect(try openDescriptors(under: streamDirectory) <= 8 + 2)
    }

    @Test func aReaderKeepsAValidFileWhenTheCacheEvictsIt() throws {
        let dir = try TemporaryDirectory()
        let streamDirectory = StreamLog.streamDirectory(dataDirectory: dir.path, name: "events")
        try writeSegments(streamDirectory: streamDirectory, count: 20, timestampMs: wallClockMs()) { entry($0) }
        var config = LogConfiguration()
        config.openSealedSegmentsMax = 2
        let log = try openLog(dataDirectory: dir.path, name: "events", configuration: config)
        let oldest = try #require(log.state.withLock { $0.segments.first })
        let held = try oldest.file()
        // Reading the others evicts segment 0 from the cache many times over.
        _ = try log.read(from: 1, maxEntries: 100)
        #expect(log.sealedFiles.openCount == 2)
        var bytes: [UInt8] = []
        let n = try held.read(at: 0, count: RecordBatchHeader.size, into: &bytes)
        #expect(n == RecordBatchHeader.size)
        let header = try bytes.withUnsafeBytes { try RecordBatchCodec.decodeHeader($0) }
        #expect(header.baseOffset == 0, "the held descriptor still reads segment 0, not a reused number")
    }

    @Test func retentionDropsTheDeletedSegmentsFiles() async throws {
        let dir = try TemporaryDirectory()
        let streamDirectory = StreamLog.streamDirectory(dataDirectory: dir.path, name: "events")
        try writeSegments(streamDirectory: streamDirectory, count: 10, timestampMs: wallClockMs()) { entry($0) }
        var config = LogConfiguration()
        config.openSealedSegmentsMax = 16
        config.retentionBytesMax = 0
        config.retentionDropsUnconsumed = true
        let log = try openLog(dataDirectory: dir.path, name: "events", configuration: config)
        _ = try log.read(from: 0, maxEntries: 100)
        #expect(log.sealedFiles.openCount == 9)
        let report = try log.applyRetention()
        #expect(report.deletedSegments.count == 9)
        #expect(log.sealedFiles.openCount == 0, "deleted segments' space is freed, not held by the cache")
        #expect(try openDescriptors(under: streamDirectory) <= 2)
    }

    @Test func theCacheSizeHasARange() {
        var config = LogConfiguration()
        config.openSealedSegmentsMax = 0
        #expect(throws: LogError.invalidConfiguration(field: "openSealedSegmentsMax", problem: "must be 1...4096")) {
            try config.validate()
        }
    }
}

@Suite struct ActiveSegmentLossTests {
    @Test func lossOfOpenFileTellsDeletedFromReplaced() {
        let open = FileIdentity(device: 1, inode: 7, linkCount: 1)
        #expect(lossOfOpenFile(open, path: open) == nil)
        #expect(lossOfOpenFile(open, path: nil) == .deleted)
        #expect(lossOfOpenFile(FileIdentity(device: 1, inode: 7, linkCount: 0), path: open) == .deleted)
        #expect(lossOfOpenFile(open, path: FileIdentity(device: 1, inode: 8, linkCount: 1)) == .replaced)
        #expect(lossOfOpenFile(open, path: FileIdentity(device: 2, inode: 7, linkCount: 1)) == .replaced)
    }

    enum Tamper: CaseIterable { case delete, replace }

    @Test(arguments: Tamper.allCases)
    func anAppendIntoAFileThatIsGoneIsNeverAcknowledged(tamper: Tamper) async throws {
        let dir = try TemporaryDirectory()
        let log = try openLog(dataDirectory: dir.path, name: "events")
        _ = try await log.append([entry(0), entry(1)])
        let active = log.directory + "/" + Segment.fileName(0, ".log")
        switch tamper {
        case .delete:
            #expect(unlink(active) == 0)
        case .replace:
            let other = log.directory + "/copy"
            #expect(FileManager.default.createFile(atPath: other, contents: Data()))
            #expect(rename(other, active) == 0)
        }
        let expected = LogError.activeSegmentLost(
            segment: Segment.fileName(0, ".log"), loss: tamper == .delete ? .deleted : .replaced)
        await #expect(throws: expected) { _ = try await log.append([entry(2)]) }
        #expect(log.endOffset == 2, "nothing of the failed append is visible")
        // The stream stays stopped: later appends are refused at once.
        await #expect(throws: expected) { _ = try await log.append([entry(3)]) }
        #expect(log.endOffset == 2)
        // And it is marked for an operator: the next open refuses it, naming the segment.
        let marker = try #require(try StreamLog.readCorruptMarker(directory: log.directory, storage: PosixStorage()))
        #expect(marker.segment == Segment.fileName(0, ".log"))
        #expect(marker.endOffset == 2, "the entries acknowledged into the lost file are named")
        await log.close()
        #expect(throws: LogError.corrupt(marker)) { _ = try openLog(dataDirectory: dir.path, name: "events") }
        if tamper == .delete {
            // Repair begins a new epoch: offsets 0 and 1 will name new entries.
            let repaired = try StreamLog.repair(dataDirectory: dir.path, stream: "events")
            #expect(repaired.newEpoch != nil)
            #expect(repaired.droppedFrom == 0 && repaired.droppedTo == 2)
            let reopened = try openLog(dataDirectory: dir.path, name: "events")
            #expect(reopened.endOffset == 0)
            #expect(try await reopened.append([entry(9)]).firstOffset == 0)
            await reopened.close()
        }
    }

    @Test func aRollNeverSealsAFileThatIsGone() async throws {
        let dir = try TemporaryDirectory()
        var config = smallConfig()
        config.compressionLevel = nil
        let log = try openLog(dataDirectory: dir.path, name: "events", configuration: config)
        _ = try await log.append([entry(0, size: 8000)])
        #expect(unlink(log.directory + "/" + Segment.fileName(0, ".log")) == 0)
        // This append does not fit: the flusher would roll before writing.
        await #expect(throws: LogError.activeSegmentLost(segment: Segment.fileName(0, ".log"), loss: .deleted)) {
            _ = try await log.append([entry(1, size: 9000)])
        }
        #expect(log.info().segmentCount == 1, "no new segment after the lost one")
        #expect(log.endOffset == 1)
        await log.close()
    }
}
