import OrgSyncLog
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A plain in-memory `LogStorage` (no faults, no crash model): the log target writes its input
/// as files here and runs recovery over them, thousands of times a second, without a disk.
final class MemoryStorage: LogStorage, Sendable {
    struct State {
        var files: [String: [UInt8]] = [:]
        var directories: Set<String> = ["/"]
    }

    let state = Mutex(State())

    final class File: LogFile, Sendable {
        let path: String
        let owner: MemoryStorage
        init(path: String, owner: MemoryStorage) {
            self.path = path
            self.owner = owner
        }

        func read(at offset: Int64, count: Int, into buffer: inout [UInt8]) throws -> Int {
            guard offset >= 0, count >= 0 else { throw StorageError(operation: "pread", path: path, errno: EINVAL) }
            let data = owner.state.withLock { $0.files[path] ?? [] }
            guard offset < Int64(data.count) else { return 0 }
            let end = min(data.count, Int(offset) + count)
            buffer.append(contentsOf: data[Int(offset)..<end])
            return end - Int(offset)
        }

        func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
            guard offset >= 0, offset < 1 << 30 else { throw StorageError(operation: "pwrite", path: path, errno: EFBIG) }
            owner.state.withLock { s in
                var data = s.files[path] ?? []
                let end = Int(offset) + bytes.count
                if end > data.count { data.append(contentsOf: repeatElement(0, count: end - data.count)) }
                data.replaceSubrange(Int(offset)..<end, with: bytes)
                s.files[path] = data
            }
        }

        func sync() throws {}

        func size() throws -> Int64 { Int64(owner.state.withLock { $0.files[path]?.count ?? 0 }) }

        func truncate(to size: Int64) throws {
            guard size >= 0, size < 1 << 30 else { throw StorageError(operation: "ftruncate", path: path, errno: EFBIG) }
            owner.state.withLock { s in
                var data = s.files[path] ?? []
                if Int(size) < data.count {
                    data.removeLast(data.count - Int(size))
                } else {
                    data.append(contentsOf: repeatElement(0, count: Int(size) - data.count))
                }
                s.files[path] = data
            }
        }

        func identity() throws -> FileIdentity { FileIdentity(device: 0, inode: 0, linkCount: 1) }

        func close() {}
    }

    final class NoLock: LogLock {}

    func put(_ path: String, _ bytes: [UInt8]) {
        state.withLock { s in
            s.files[path] = bytes
            var directory = path
            while let slash = directory.lastIndex(of: "/"), slash != directory.startIndex {
                directory = String(directory[..<slash])
                s.directories.insert(directory)
            }
        }
    }

    func openFile(_ path: String, create: Bool) throws -> any LogFile {
        try state.withLock { s in
            if s.files[path] == nil {
                guard create else { throw StorageError(operation: "open", path: path, errno: ENOENT) }
                s.files[path] = []
            }
        }
        return File(path: path, owner: self)
    }

    func fileExists(_ path: String) -> Bool { state.withLock { $0.files[path] != nil || $0.directories.contains(path) } }

    func fileSize(_ path: String) throws -> Int64 {
        guard let count = state.withLock({ $0.files[path]?.count }) else {
            throw StorageError(operation: "stat", path: path, errno: ENOENT)
        }
        return Int64(count)
    }

    func identity(ofPath path: String) throws -> FileIdentity? {
        state.withLock { $0.files[path] != nil } ? FileIdentity(device: 0, inode: 0, linkCount: 1) : nil
    }

    func createDirectory(_ path: String) throws { _ = state.withLock { $0.directories.insert(path) } }

    func listDirectory(_ path: String) throws -> [String] {
        let prefix = path.hasSuffix("/") ? path : path + "/"
        return state.withLock { s in
            var names = s.files.keys.filter { $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
                .map { String($0.dropFirst(prefix.count)) }
            names += s.directories.filter { $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") && $0 != prefix }
                .map { String($0.dropFirst(prefix.count)) }
            return names.sorted()
        }
    }

    func removeFile(_ path: String) throws {
        _ = state.withLock { $0.files.removeValue(forKey: path) }
    }

    func rename(_ from: String, to: String) throws {
        try state.withLock { s in
            guard let file = s.files.removeValue(forKey: from) else { throw StorageError(operation: "rename", path: from, errno: ENOENT) }
            s.files[to] = file
        }
    }

    func syncDirectory(_ path: String) throws {}

    func lockFile(_ path: String) throws -> any LogLock {
        state.withLock { s in if s.files[path] == nil { s.files[path] = [] } }
        return NoLock()
    }
}
