import OrgSyncLog
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An in-memory `LogStorage` that models what a crash keeps: every file has the bytes readers
/// see (`data`) and the bytes that survive a crash (`durable`, updated by `sync`). Writes since
/// the last sync are remembered in order, so a simulated crash can keep any prefix of them, cut
/// at any byte: a torn write. Faults (failed writes, failed syncs, a crash at the next sync) are
/// switched on through the storage, not by mocking the log.
public final class FaultInjectingStorage: LogStorage, Sendable {
    public init() {}

    /// The largest file, bytes: past it a write or truncate fails with EFBIG, as a file system's
    /// limit would (what a damaged or fuzzed file asks for must not take the test's memory).
    public static let fileBytesMax: Int64 = 1 << 30

    struct Write {
        var offset: Int64
        var bytes: [UInt8]
        var truncate: Int64?  // a truncate instead of a write
    }

    final class File: LogFile, Sendable {
        let path: String
        let owner: FaultInjectingStorage
        init(path: String, owner: FaultInjectingStorage) {
            self.path = path
            self.owner = owner
        }

        func read(at offset: Int64, count: Int, into buffer: inout [UInt8]) throws -> Int {
            try owner.check(path)
            let data = owner.state.withLock { $0.files[path]?.data ?? [] }
            guard offset < Int64(data.count) else { return 0 }
            let end = min(data.count, Int(offset) + count)
            buffer.append(contentsOf: data[Int(offset)..<end])
            return end - Int(offset)
        }

        func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
            try owner.check(path)
            // Compared without adding: a damaged file may name an offset near Int64.max.
            guard offset >= 0, Int64(bytes.count) <= FaultInjectingStorage.fileBytesMax,
                  offset <= FaultInjectingStorage.fileBytesMax - Int64(bytes.count) else {
                throw StorageError(operation: "pwrite", path: path, errno: EFBIG)
            }
            let copy = Array(bytes)
            try owner.state.withLock { s in
                if let budget = s.writeBytesBudget {
                    if copy.count > budget {
                        // Write what fits, then fail like a full disk.
                        owner.apply(&s, path: path, Write(offset: offset, bytes: Array(copy.prefix(budget))))
                        s.writeBytesBudget = 0
                        throw StorageError(operation: "pwrite", path: path, errno: ENOSPC)
                    }
                    s.writeBytesBudget = budget - copy.count
                }
                owner.apply(&s, path: path, Write(offset: offset, bytes: copy))
            }
        }

        func sync() throws {
            try owner.check(path)
            try owner.state.withLock { s in
                if s.crashAtNextSync {
                    s.crashed = true
                    throw StorageError(operation: "fdatasync", path: path, errno: EIO)
                }
                if s.failSyncs { throw StorageError(operation: "fdatasync", path: path, errno: EIO) }
                if var file = s.files[path] {
                    file.durable = file.data
                    file.unsynced = []
                    s.files[path] = file
                }
                s.syncCount += 1
            }
        }

        func size() throws -> Int64 {
            try owner.check(path)
            return Int64(owner.state.withLock { $0.files[path]?.data.count ?? 0 })
        }

        func truncate(to size: Int64) throws {
            try owner.check(path)
            guard size >= 0, size <= FaultInjectingStorage.fileBytesMax else { throw StorageError(operation: "ftruncate", path: path, errno: EFBIG) }
            owner.state.withLock { s in owner.apply(&s, path: path, Write(offset: 0, bytes: [], truncate: size)) }
        }

        func identity() throws -> FileIdentity {
            try owner.check(path)
            // In memory a path is its file (removal and rename are not modelled for open files).
            return FileIdentity(device: 0, inode: 0, linkCount: 1)
        }

        func close() {}
    }

    struct FileState {
        var data: [UInt8] = []
        var durable: [UInt8] = []
        var unsynced: [Write] = []
        var durableName = false
    }

    struct State {
        var files: [String: FileState] = [:]
        var directories: Set<String> = ["/"]
        var crashed = false
        var crashAtNextSync = false
        var failSyncs = false
        /// Bytes that may still be written before writes fail with ENOSPC (nil: unlimited).
        var writeBytesBudget: Int?
        var syncCount = 0
        /// Operations on paths ending in `suffix` fail with `errno`, `count` more times.
        var failures: [(suffix: String, errno: Int32, count: Int)] = []
        /// Directory entry changes and directory syncs, in order: `remove NAME`, `rename NAME`,
        /// and `syncdir NAME` (names without their directory).
        var operations: [String] = []
    }

    let state = Mutex(State())
    /// Run (outside the storage's lock) when a file whose path ends in the key is opened, then
    /// forgotten: lets a test act at one exact point of another operation (a retention pass
    /// between a reader's read of a batch and of its dictionary), without sleeps.
    let openHooks = Mutex<[String: @Sendable () -> Void]>([:])

    func check(_ path: String) throws {
        try state.withLock { s in
            if s.crashed { throw StorageError(operation: "io after crash", path: path, errno: EIO) }
            if let i = s.failures.firstIndex(where: { path.hasSuffix($0.suffix) && $0.count > 0 }) {
                s.failures[i].count -= 1
                throw StorageError(operation: "injected", path: path, errno: s.failures[i].errno)
            }
        }
    }

    func record(_ operation: String, _ path: String) {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        state.withLock { $0.operations.append(operation + " " + name) }
    }

    func apply(_ s: inout State, path: String, _ write: Write) {
        var file = s.files[path] ?? FileState()
        FaultInjectingStorage.perform(write, on: &file.data)
        file.unsynced.append(write)
        s.files[path] = file
    }

    static func perform(_ write: Write, on data: inout [UInt8]) {
        if let size = write.truncate {
            if Int(size) < data.count { data.removeLast(data.count - Int(size)) } else {
                data.append(contentsOf: repeatElement(0, count: Int(size) - data.count))
            }
            return
        }
        let end = Int(write.offset) + write.bytes.count
        if end > data.count { data.append(contentsOf: repeatElement(0, count: end - data.count)) }
        data.replaceSubrange(Int(write.offset)..<end, with: write.bytes)
    }

    // MARK: LogStorage

    public func openFile(_ path: String, create: Bool) throws -> any LogFile {
        let hook = openHooks.withLock { hooks -> (@Sendable () -> Void)? in
            guard let key = hooks.keys.first(where: { path.hasSuffix($0) }) else { return nil }
            return hooks.removeValue(forKey: key)
        }
        hook?()
        try check(path)
        try state.withLock { s in
            if s.files[path] == nil {
                guard create else { throw StorageError(operation: "open", path: path, errno: ENOENT) }
                s.files[path] = FileState()
            }
        }
        return File(path: path, owner: self)
    }

    public func fileSize(_ path: String) throws -> Int64 {
        try check(path)
        guard let count = state.withLock({ $0.files[path]?.data.count }) else {
            throw StorageError(operation: "stat", path: path, errno: ENOENT)
        }
        return Int64(count)
    }

    public func identity(ofPath path: String) throws -> FileIdentity? {
        try check(path)
        return state.withLock { $0.files[path] != nil } ? FileIdentity(device: 0, inode: 0, linkCount: 1) : nil
    }

    public func fileExists(_ path: String) -> Bool {
        state.withLock { $0.files[path] != nil || $0.directories.contains(path) }
    }

    public func createDirectory(_ path: String) throws {
        try check(path)
        _ = state.withLock { $0.directories.insert(path) }
    }

    public func listDirectory(_ path: String) throws -> [String] {
        try check(path)
        let prefix = path.hasSuffix("/") ? path : path + "/"
        return state.withLock { s in
            // Files and directories directly inside, as readdir(3) lists them.
            let names = s.files.keys.filter { $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
                + s.directories.filter { $0.hasPrefix(prefix) && $0 != prefix && !$0.dropFirst(prefix.count).contains("/") }
            return names.map { String($0.dropFirst(prefix.count)) }.sorted()
        }
    }

    public func removeFile(_ path: String) throws {
        try check(path)
        record("remove", path)
        _ = state.withLock { $0.files.removeValue(forKey: path) }
    }

    public func rename(_ from: String, to: String) throws {
        try check(from)
        record("rename", to)
        state.withLock { s in
            if let file = s.files.removeValue(forKey: from) { s.files[to] = file }
        }
    }

    public func syncDirectory(_ path: String) throws {
        try check(path)
        record("syncdir", path)
        let prefix = path.hasSuffix("/") ? path : path + "/"
        state.withLock { s in
            for key in s.files.keys where key.hasPrefix(prefix) { s.files[key]?.durableName = true }
        }
    }

    final class NoLock: LogLock {}

    public func lockFile(_ path: String) throws -> any LogLock {
        try check(path)
        return NoLock()
    }

    /// Puts a file as if it had been written and synced, its name too, making the directories
    /// above it: a stream directory as a test or fuzz input gives it, before the log opens it.
    public func put(_ path: String, _ bytes: [UInt8]) {
        state.withLock { s in
            s.files[path] = FileState(data: bytes, durable: bytes, unsynced: [], durableName: true)
            var directory = path
            while let slash = directory.lastIndex(of: "/"), slash != directory.startIndex {
                directory = String(directory[..<slash])
                s.directories.insert(directory)
            }
        }
    }

    // MARK: Faults

    /// Simulates a machine crash. Each file keeps its durable bytes; with `tornWriteBytes` nil
    /// every write since its last sync is lost, otherwise the earlier unsynced writes survive and
    /// the last one is cut after `tornWriteBytes` bytes (a torn write). Files whose directory
    /// entry was never synced vanish. Clears all faults.
    public func crash(tornWriteBytes: Int? = nil) {
        state.withLock { s in
            for (path, var file) in s.files {
                guard file.durableName else {
                    s.files.removeValue(forKey: path)
                    continue
                }
                var data = file.durable
                if let keep = tornWriteBytes {
                    for (i, write) in file.unsynced.enumerated() {
                        var partial = write
                        if i == file.unsynced.count - 1 && write.truncate == nil {
                            partial.bytes = Array(write.bytes.prefix(keep))
                        }
                        FaultInjectingStorage.perform(partial, on: &data)
                    }
                } else {
                    for write in file.unsynced where write.truncate != nil {
                        FaultInjectingStorage.perform(write, on: &data)
                    }
                }
                file.data = data
                file.durable = data
                file.unsynced = []
                s.files[path] = file
            }
            s.crashed = false
            s.crashAtNextSync = false
            s.failSyncs = false
            s.writeBytesBudget = nil
        }
    }

    /// Bytes of the last unsynced write to `path`.
    public func lastUnsyncedWriteBytes(_ path: String) -> Int {
        state.withLock { $0.files[path]?.unsynced.last(where: { $0.truncate == nil })?.bytes.count ?? 0 }
    }

    /// Bytes written since the last sync of `path` (data writes only).
    public func unsyncedBytes(_ path: String) -> Int {
        state.withLock { s in s.files[path]?.unsynced.reduce(0) { $0 + $1.bytes.count } ?? 0 }
    }

    /// The next `count` operations on paths ending in `suffix` fail with `errno`.
    public func failNext(_ count: Int, pathSuffix suffix: String, errno: Int32) {
        state.withLock { $0.failures.append((suffix, errno, count)) }
    }

    /// Runs `hook` once, when a file whose path ends in `suffix` is next opened.
    public func onNextOpen(pathSuffix suffix: String, _ hook: @escaping @Sendable () -> Void) {
        openHooks.withLock { $0[suffix] = hook }
    }

    public func operations() -> [String] { state.withLock { $0.operations } }
    public func clearOperations() { state.withLock { $0.operations = [] } }

    public func setCrashAtNextSync() { state.withLock { $0.crashAtNextSync = true } }
    public func setFailSyncs(_ on: Bool) { state.withLock { $0.failSyncs = on } }
    public func setWriteBudget(_ bytes: Int?) { state.withLock { $0.writeBytesBudget = bytes } }

    /// Flips one bit of the durable and visible bytes of `path`.
    public func flipBit(_ path: String, byte: Int, bit: Int) {
        state.withLock { s in
            guard var file = s.files[path], byte < file.data.count else { return }
            file.data[byte] ^= UInt8(1 << bit)
            file.durable = file.data
            s.files[path] = file
        }
    }

    public func fileBytes(_ path: String) -> [UInt8] { state.withLock { $0.files[path]?.data ?? [] } }
    public func filePaths() -> [String] { state.withLock { Array($0.files.keys).sorted() } }
}
