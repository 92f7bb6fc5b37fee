import Foundation
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestSupport
import Testing

/// A fresh directory under the system's temporary directory, removed by `cleanUp()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.path + "/orgsync-core-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: path) }

    func append(_ bytes: [UInt8], to name: String) throws {
        try write(try contents(of: name) + bytes, to: name)
    }

    func contents(of name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: path + "/" + name)))
    }

    func write(_ bytes: [UInt8], to name: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path + "/" + name))
    }
}

@Suite struct SyncLogTests {
    @discardableResult
    func appendSome(_ log: SyncLog, count: Int, from: Int = 0) throws -> [SyncLogRecord] {
        try (from..<(from + count)).map { index in
            try log.append(event: .suspended, state: .suspended, reason: "outage \(index)", timeMs: UInt64(index), linkClockMs: UInt64(index))
        }
    }

    @Test func survivesReopenNewestFirst() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        try appendSome(try SyncLog.open(directory: directory.path, link: "demo", recordsMax: 100), count: 3)
        let reopened = try SyncLog.open(directory: directory.path, link: "demo", recordsMax: 100)
        #expect(reopened.page().map(\.reason) == ["outage 2", "outage 1", "outage 0"])
        #expect(reopened.damagedLineCount == 0)
        let next = try reopened.append(event: .resumed, state: .active, reason: "back", timeMs: 9, linkClockMs: 9)
        #expect(next.sequence == 4)  // sequences go on across restarts
    }

    @Test func tornTailIsSkippedAndLaterAppendsSurvive() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        try appendSome(try SyncLog.open(directory: directory.path, link: "demo", recordsMax: 100), count: 3)
        // A crash in the middle of a write: half a line, no newline.
        try directory.append(Array(#"1a2b3c4d {"event":"resumed","reas"#.utf8), to: "demo.synclog.jsonl")
        let reopened = try SyncLog.open(directory: directory.path, link: "demo", recordsMax: 100)
        #expect(reopened.count == 3)
        #expect(reopened.damagedLineCount == 1)
        try appendSome(reopened, count: 1, from: 3)
        let again = try SyncLog.open(directory: directory.path, link: "demo", recordsMax: 100)
        #expect(again.page().map(\.reason) == ["outage 3", "outage 2", "outage 1", "outage 0"])
        #expect(again.damagedLineCount == 0)
    }

    @Test func corruptLinesAndGarbageNeverCrash() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        try appendSome(try SyncLog.open(directory: directory.path, link: "demo", recordsMax: 100), count: 3)
        var bytes = try directory.contents(of: "demo.synclog.jsonl")
        let secondLine = try #require(bytes.firstIndex(of: UInt8(ascii: "\n"))) + 1
        bytes[secondLine + 20] ^= 0x20  // a flipped bit inside the second record
        bytes += [0xFF, 0xFE, 0x00, 0x0A, 0xC3, 0x28, 0x0A] + Array("zzzzzzzz {}\n".utf8)
        try directory.write(bytes, to: "demo.synclog.jsonl")
        let reopened = try SyncLog.open(directory: directory.path, link: "demo", recordsMax: 100)
        #expect(reopened.page().map(\.reason) == ["outage 2", "outage 0"])
        #expect(reopened.damagedLineCount == 4)
    }

    @Test func boundedOldestDroppedAndFileCompacted() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let log = try SyncLog.open(directory: directory.path, link: "demo", recordsMax: 5)
        try appendSome(log, count: 23)
        #expect(log.count == 5)
        #expect(log.page().map(\.sequence) == [23, 22, 21, 20, 19])
        let lineCount = try directory.contents(of: "demo.synclog.jsonl").count { $0 == UInt8(ascii: "\n") }
        #expect(lineCount <= 10)
        let reopened = try SyncLog.open(directory: directory.path, link: "demo", recordsMax: 5)
        #expect(reopened.page().map(\.sequence) == [23, 22, 21, 20, 19])
    }

    @Test func pagesAreCutBySequence() throws {
        let log = SyncLog.inMemory(recordsMax: 100)
        try appendSome(log, count: 12)
        let first = log.page(limit: 5)
        #expect(first.map(\.sequence) == [12, 11, 10, 9, 8])
        let second = log.page(beforeSequence: first.last?.sequence, limit: 5)
        #expect(second.map(\.sequence) == [7, 6, 5, 4, 3])
        #expect(log.page(beforeSequence: 3, limit: 5).map(\.sequence) == [2, 1])
        #expect(log.page(limit: 0).isEmpty)
    }

    @Test func unsafeLinkNamesAreRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        for name in ["../escape", "", ".hidden", "a/b"] {
            #expect(throws: RecordFileError.self) { _ = try SyncLog.open(directory: directory.path, link: name, recordsMax: 10) }
        }
    }

    @Test func deadLettersPersistWithTheirLatestStatus() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let letters = try DeadLetters.open(directory: directory.path, link: "demo", lettersMax: 3)
        for offset in [4, 9, 12, 20] as [Offset] {
            try letters.put(DeadLetter(offset: offset, entryJSON: "{}", error: "bad \(offset)", targetCode: "23505", failedAtMs: 1))
        }
        var resolved = try #require(letters.letter(at: 12))
        resolved.status = .resolved
        try letters.put(resolved)
        try directory.append(Array("0badc0de {\"offset\":".utf8), to: "demo.deadletters.jsonl")
        let reopened = try DeadLetters.open(directory: directory.path, link: "demo", lettersMax: 3)
        #expect(reopened.page().map(\.offset) == [20, 12, 9])  // 4, the oldest, was dropped
        #expect(reopened.letter(at: 12)?.status == .resolved)
        #expect(reopened.failedCount == 2)
        #expect(reopened.damagedLineCount == 1)
        #expect(reopened.page(beforeOffset: 20, status: .failed).map(\.offset) == [9])
    }

    // Through a storage that fails and crashes (the segment log's fault-injecting storage): what a
    // power cut keeps of a sync log is what was synced, and nothing after a torn line.

    @Test func aPowerCutKeepsWhatWasSyncedAndTheNewFilesName() throws {
        let storage = FaultInjectingStorage()
        try storage.createDirectory("/data/links")
        try appendSome(try SyncLog.open(directory: "/data/links", link: "demo", recordsMax: 100, storage: storage), count: 1)
        #expect(storage.operations().contains("syncdir links"), "a new file's name is made durable before it holds anything")
        storage.crash()
        let log = try SyncLog.open(directory: "/data/links", link: "demo", recordsMax: 100, storage: storage)
        #expect(log.page().map(\.reason) == ["outage 0"], "the file and its synced line survive")
        try appendSome(log, count: 2, from: 1)

        storage.setFailSyncs(true)
        let failed = #expect(throws: RecordFileError.self) { try appendSome(log, count: 1, from: 3) }
        #expect(failed?.path == "/data/links/demo.synclog.jsonl" && failed?.code == EIO)
        #expect(log.count == 4, "a record whose write failed stays in memory, for the status")
        storage.crash()
        let reopened = try SyncLog.open(directory: "/data/links", link: "demo", recordsMax: 100, storage: storage)
        #expect(reopened.page().map(\.reason) == ["outage 2", "outage 1", "outage 0"])
        #expect(reopened.damagedLineCount == 0)
    }

    @Test func aTornWriteIsSkippedAndNeverFollowedByAGoodLine() throws {
        let storage = FaultInjectingStorage()
        try storage.createDirectory("/data/links")
        let log = try SyncLog.open(directory: "/data/links", link: "demo", recordsMax: 100, fsync: false, storage: storage)
        try appendSome(log, count: 3)
        storage.crash(tornWriteBytes: 12)  // the last line cut after 12 bytes
        let reopened = try SyncLog.open(directory: "/data/links", link: "demo", recordsMax: 100, storage: storage)
        #expect(reopened.page().map(\.reason) == ["outage 1", "outage 0"])
        #expect(reopened.damagedLineCount == 1)
        try appendSome(reopened, count: 1, from: 7)
        let again = try SyncLog.open(directory: "/data/links", link: "demo", recordsMax: 100, storage: storage)
        #expect(again.page().map(\.reason) == ["outage 7", "outage 1", "outage 0"])
        #expect(again.damagedLineCount == 0, "the torn line was rewritten away before the next append")
    }

    @Test func aFullDiskFailsTheWriteAndTheNextAppendWritesOverTheTornLine() throws {
        let storage = FaultInjectingStorage()
        try storage.createDirectory("/data/links")
        let letters = try DeadLetters.open(directory: "/data/links", link: "demo", lettersMax: 10, storage: storage)
        try letters.put(DeadLetter(offset: 1, entryJSON: "{}", error: "bad 1", targetCode: nil, failedAtMs: 1))
        storage.setWriteBudget(20)  // part of the next line fits, then ENOSPC
        let full = #expect(throws: RecordFileError.self) {
            try letters.put(DeadLetter(offset: 2, entryJSON: "{}", error: "bad 2", targetCode: nil, failedAtMs: 2))
        }
        #expect(full?.code == ENOSPC)
        storage.setWriteBudget(nil)
        try letters.put(DeadLetter(offset: 3, entryJSON: "{}", error: "bad 3", targetCode: nil, failedAtMs: 3))
        storage.crash()
        let reopened = try DeadLetters.open(directory: "/data/links", link: "demo", lettersMax: 10, storage: storage)
        #expect(reopened.page().map(\.offset) == [3, 1], "offset 2 was never written whole; 3 was written over its torn line")
        #expect(reopened.damagedLineCount == 0)
    }
}
