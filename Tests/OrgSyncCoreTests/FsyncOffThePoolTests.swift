import Foundation
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestSupport
import Testing

/// A link's cursor store fsyncs off Swift's cooperative pool: more links than the pool has
/// threads can be inside fsync(2) at once, and other tasks still run meanwhile.
@Suite struct CursorStoreOffThePoolTests {
    @Test func moreStoresThanPoolThreadsBlockInFsyncAtOnceAndTasksStillRun() async throws {
        let directory = try makeTemporaryDirectory("orgsync-cursor-pool")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let storage = GatedSyncStorage(pathContaining: "/cursors/")
        let log = try StreamLog.open(dataDirectory: directory, name: "events", storage: storage)
        _ = try await log.append([Array(#"{"org":"o","object":"A","op":"upsert","key":"k","ts":"t","fields":{}}"#.utf8)])
        // The cooperative pool has one thread per core; twice that many stores, plus two.
        let storeCount = 2 * ProcessInfo.processInfo.activeProcessorCount + 2
        storage.close()
        let stores = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<storeCount {
                    // One store per link, as the broker makes them.
                    let store = StreamLogCursorStore(log: log)
                    group.addTask { try await store.store(link: "link\(i)", offset: 1) }
                }
                try await group.waitForAll()
            }
        }
        // Every store is inside its fsync at the same time: none waits for a pool thread.
        try await withTimeout(ms: 20_000, "\(storeCount) cursor fsyncs blocked at once") {
            _ = try await storage.blocked.wait { $0 >= storeCount }
        }
        // And the pool still runs other work.
        let ran = try await withTimeout(ms: 5_000, "a task while the fsyncs block") { await Task.detached { true }.value }
        #expect(ran)
        storage.open()
        try await withTimeout(ms: 20_000, "the stores to finish") { try await stores.value }
        #expect(storage.timedOutSyncs.value == 0, "no fsync had to give up waiting for the test")
        for i in 0..<storeCount {
            #expect(try log.cursors.load("link\(i)") == 1)
        }
        await log.close()
    }
}

/// Real files (POSIX), whose `sync()` on paths containing `pathContaining` waits while the gate
/// is closed. A waiting sync gives up after ``syncWaitMsMax`` and goes on, counted in
/// ``timedOutSyncs``: a store that blocks a pool thread then still finishes, and the test fails on
/// its assertion instead of hanging.
final class GatedSyncStorage: LogStorage, Sendable {
    static let syncWaitMsMax = 15_000
    let pathContaining: String
    /// Syncs waiting at the gate now.
    let blocked = Observed(0)
    let timedOutSyncs = Observed(0)
    private let posix = PosixStorage()
    /// Guards `gateIsOpen`; a closed gate's syncs wait on it.
    private let condition = NSCondition()
    nonisolated(unsafe) private var gateIsOpen = true

    init(pathContaining: String) { self.pathContaining = pathContaining }

    func close() { setGate(open: false) }
    func open() { setGate(open: true) }

    private func setGate(open: Bool) {
        condition.lock()
        gateIsOpen = open
        condition.broadcast()
        condition.unlock()
    }

    /// Called on the thread doing the sync: waits until the gate opens or the bound passes.
    func waitAtGate() {
        blocked.update { $0 += 1 }
        defer { blocked.update { $0 -= 1 } }
        let deadline = Date(timeIntervalSinceNow: Double(Self.syncWaitMsMax) / 1000)
        condition.lock()
        defer { condition.unlock() }
        while !gateIsOpen {
            guard condition.wait(until: deadline) else {
                timedOutSyncs.update { $0 += 1 }
                return
            }
        }
    }

    func openFile(_ path: String, create: Bool) throws -> any LogFile {
        let file = try posix.openFile(path, create: create)
        return path.contains(pathContaining) ? GatedFile(file: file, storage: self) : file
    }
    func fileExists(_ path: String) -> Bool { posix.fileExists(path) }
    func fileSize(_ path: String) throws -> Int64 { try posix.fileSize(path) }
    func identity(ofPath path: String) throws -> FileIdentity? { try posix.identity(ofPath: path) }
    func createDirectory(_ path: String) throws { try posix.createDirectory(path) }
    func listDirectory(_ path: String) throws -> [String] { try posix.listDirectory(path) }
    func removeFile(_ path: String) throws { try posix.removeFile(path) }
    func rename(_ from: String, to: String) throws { try posix.rename(from, to: to) }
    func syncDirectory(_ path: String) throws { try posix.syncDirectory(path) }
    func lockFile(_ path: String) throws -> any LogLock { try posix.lockFile(path) }

    final class GatedFile: LogFile, Sendable {
        let file: any LogFile
        let storage: GatedSyncStorage
        init(file: any LogFile, storage: GatedSyncStorage) {
            self.file = file
            self.storage = storage
        }
        func read(at offset: Int64, count: Int, into buffer: inout [UInt8]) throws -> Int {
            try file.read(at: offset, count: count, into: &buffer)
        }
        func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws { try file.write(bytes, at: offset) }
        func sync() throws {
            storage.waitAtGate()
            try file.sync()
        }
        func size() throws -> Int64 { try file.size() }
        func truncate(to size: Int64) throws { try file.truncate(to: size) }
        func identity() throws -> FileIdentity { try file.identity() }
        func close() { file.close() }
    }
}

/// A sync log's reader never waits for its writer: while an append is inside its fsync (on a
/// thread of its own here), a reader — an HTTP handler on the pool — gets the records written so
/// far at once, and sees the new one only once it is durable.
@Suite struct SyncLogReadersTests {
    @Test func aReaderDoesNotWaitForAnAppendInItsFsyncAndSeesTheRecordOnlyOnceDurable() async throws {
        let directory = try makeTemporaryDirectory("orgsync-synclog-readers")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let storage = GatedSyncStorage(pathContaining: ".synclog.jsonl")
        let syncLog = try SyncLog.open(directory: directory, link: "demo", recordsMax: 100, storage: storage)
        try syncLog.append(event: .paused, state: .paused, reason: "first", timeMs: 1, linkClockMs: 1)
        storage.close()
        let append = Task {
            try await offThePool { () throws(RecordFileError) -> SyncLogRecord in
                try syncLog.append(event: .resumed, state: .active, reason: "second", timeMs: 2, linkClockMs: 2)
            }
        }
        try await withTimeout(ms: 20_000, "the append inside its fsync") { _ = try await storage.blocked.wait { $0 >= 1 } }
        let seen = try await withTimeout(ms: 5_000, "reading while the append is in its fsync") {
            await Task.detached { (syncLog.page().map(\.reason), syncLog.count, syncLog.latestSequence, syncLog.records(afterSequence: 0).count) }.value
        }
        #expect(seen.0 == ["first"] && seen.1 == 1 && seen.2 == 1 && seen.3 == 1, "shown before durable: \(seen)")
        storage.open()
        let record = try await withTimeout(ms: 20_000, "the append to finish") { try await append.value }
        #expect(record.sequence == 2)
        #expect(syncLog.page().map(\.reason) == ["second", "first"])
        #expect(storage.timedOutSyncs.value == 0, "no fsync had to give up waiting for the test")
        #expect(try SyncLog.open(directory: directory, link: "demo", recordsMax: 100).page().map(\.reason) == ["second", "first"])
    }

    /// Compaction (at twice `recordsMax` lines) keeps the newest records, in order, on disk.
    @Test func compactionKeepsTheNewestRecordsInOrder() throws {
        let directory = try makeTemporaryDirectory("orgsync-synclog-compact")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let syncLog = try SyncLog.open(directory: directory, link: "demo", recordsMax: 3, fsync: false)
        for i in 1...10 {
            try syncLog.append(event: .paused, state: .paused, reason: "r\(i)", timeMs: UInt64(i), linkClockMs: UInt64(i))
        }
        #expect(syncLog.page().map(\.reason) == ["r10", "r9", "r8"])
        let reopened = try SyncLog.open(directory: directory, link: "demo", recordsMax: 3)
        #expect(reopened.page().map(\.reason) == ["r10", "r9", "r8"])
        #expect(reopened.page().map(\.sequence) == [10, 9, 8])
        #expect(reopened.damagedLineCount == 0)
    }
}
