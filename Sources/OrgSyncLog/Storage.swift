#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SystemPackage

/// The file operations the log needs, behind a protocol so that tests can inject faults
/// (failed writes, torn writes, lost unsynced data) and so that the storage can later be
/// replaced (the plan for replication keeps the log behind this seam).
///
/// Paths are absolute. Every method may throw ``StorageError``.
public protocol LogStorage: Sendable {
    func openFile(_ path: String, create: Bool) throws -> any LogFile
    func fileExists(_ path: String) -> Bool
    /// The size of the file at `path` without opening it (stat(2)): a stream with thousands of
    /// sealed segments learns their sizes without holding a descriptor for each.
    func fileSize(_ path: String) throws -> Int64
    /// Which file `path` names now; nil when nothing does (stat(2), `ENOENT`).
    func identity(ofPath path: String) throws -> FileIdentity?
    /// Creates `path` and its missing parents, each new one made durable (its parent synced).
    func createDirectory(_ path: String) throws
    /// Names (not paths) of the entries of a directory.
    func listDirectory(_ path: String) throws -> [String]
    func removeFile(_ path: String) throws
    /// Atomically replaces `to` with `from` (rename(2)).
    func rename(_ from: String, to: String) throws
    /// Makes a directory's entries (creations, renames, removals) durable.
    func syncDirectory(_ path: String) throws
    /// Takes an exclusive lock on `path` (created if missing) for as long as the returned
    /// object lives, so that two processes never write one stream. Throws ``StorageError``
    /// with `EWOULDBLOCK` when another process holds it.
    func lockFile(_ path: String) throws -> any LogLock
}

/// A held lock; released when the object is deallocated.
public protocol LogLock: AnyObject, Sendable {}

/// One open file. Implementations must allow concurrent `read`s with one writer.
public protocol LogFile: AnyObject, Sendable {
    /// Reads up to `count` bytes at `offset` into `buffer` (appended); returns bytes read
    /// (fewer at end of file).
    @discardableResult
    func read(at offset: Int64, count: Int, into buffer: inout [UInt8]) throws -> Int
    /// Writes all of `bytes` at `offset`.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws
    /// Makes written data durable (fdatasync(2)).
    func sync() throws
    func size() throws -> Int64
    func truncate(to size: Int64) throws
    /// Which file this open file is, and how many names it has left (fstat(2)): a file that was
    /// unlinked or renamed over keeps accepting writes that no later open will see.
    func identity() throws -> FileIdentity
    func close()
}

/// A file as the file system knows it: device and inode, and its link count (names in
/// directories). Compared with ``lossOfOpenFile(_:path:)``.
public struct FileIdentity: Sendable, Hashable {
    public var device: UInt64
    public var inode: UInt64
    public var linkCount: UInt64

    public init(device: UInt64, inode: UInt64, linkCount: UInt64) {
        self.device = device
        self.inode = inode
        self.linkCount = linkCount
    }
}

/// How an open file stopped being the file its path names.
public enum FileLoss: String, Sendable, Hashable, CustomStringConvertible {
    /// Its last name was removed (the path names nothing, or the file has no links left).
    case deleted
    /// The path now names another file (renamed over, or deleted and created again).
    case replaced

    public var description: String {
        switch self {
        case .deleted: "was deleted"
        case .replaced: "was replaced by another file"
        }
    }
}

/// Whether the open file `open` is still the file at its path (whose identity is `path`, nil
/// when the path names nothing); nil when it is, else how it was lost. Pure: the caller does
/// the fstat and the stat.
public func lossOfOpenFile(_ open: FileIdentity, path: FileIdentity?) -> FileLoss? {
    guard let path else { return .deleted }
    if path.device != open.device || path.inode != open.inode { return .replaced }
    if open.linkCount == 0 { return .deleted }
    return nil
}

extension LogStorage {
    /// Replaces the file at `path` crash-atomically: the bytes go to `<path>.tmp`, are synced, and
    /// the temporary file is renamed over `path`. The new name is durable only once the caller
    /// syncs the directory (some callers sync it once after several steps).
    public func replaceFile(_ path: String, with bytes: [UInt8]) throws {
        let temporary = path + ".tmp"
        let file = try openFile(temporary, create: true)
        do {
            try file.truncate(to: 0)
            try file.write(bytes, at: 0)
            try file.sync()
        } catch {
            file.close()
            throw error
        }
        file.close()
        try rename(temporary, to: path)
    }
}

extension LogFile {
    public func write(_ bytes: [UInt8], at offset: Int64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    public func readAll() throws -> [UInt8] {
        var buffer: [UInt8] = []
        let total = Int(try size())
        buffer.reserveCapacity(total)
        try read(at: 0, count: total, into: &buffer)
        return buffer
    }
}

/// A file system operation failed. `errno` is the OS error (`ENOSPC`, `EIO`, …).
public struct StorageError: Error, Sendable, Hashable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var errno: Int32

    public init(operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    /// True when the device is full (`ENOSPC`) or the quota is exceeded (`EDQUOT`).
    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }

    /// True when another process holds the lock.
    public var isLocked: Bool { errno == EWOULDBLOCK || errno == EAGAIN }

    public var description: String {
        if isLocked && operation == "lock" { return "\(path) is locked by another process (is a broker or another command using this data directory?)" }
        return "\(operation) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// The real file system (POSIX calls through swift-system and libc).
public struct PosixStorage: LogStorage {
    public init() {}

    public func openFile(_ path: String, create: Bool) throws -> any LogFile {
        do {
            let fd = try FileDescriptor.open(
                FilePath(path), .readWrite, options: create ? [.create, .closeOnExec] : [.closeOnExec],
                permissions: create ? [.ownerReadWrite, .groupRead, .otherRead] : nil)
            return PosixFile(fd: fd, path: path)
        } catch let error as Errno {
            throw StorageError(operation: "open", path: path, errno: error.rawValue)
        }
    }

    public func fileExists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    public func fileSize(_ path: String) throws -> Int64 {
        var info = stat()
        if stat(path, &info) != 0 { throw StorageError(operation: "stat", path: path, errno: errno) }
        return Int64(info.st_size)
    }

    public func identity(ofPath path: String) throws -> FileIdentity? {
        var info = stat()
        if stat(path, &info) != 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw StorageError(operation: "stat", path: path, errno: errno)
        }
        return FileIdentity(info)
    }

    public func createDirectory(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            let parent = prefix.isEmpty ? "/" : prefix
            prefix += "/" + component
            if mkdir(prefix, 0o755) == 0 {
                // A new directory's name is durable only once its parent is synced: without this,
                // a power cut took a new data directory with every entry acknowledged in it.
                try syncDirectory(parent)
            } else if errno != EEXIST {
                throw StorageError(operation: "mkdir", path: prefix, errno: errno)
            }
        }
    }

    public func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw StorageError(operation: "opendir", path: path, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func removeFile(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw StorageError(operation: "unlink", path: path, errno: errno) }
    }

    public func rename(_ from: String, to: String) throws {
        if Glibc.rename(from, to) != 0 { throw StorageError(operation: "rename", path: from, errno: errno) }
    }

    public func lockFile(_ path: String) throws -> any LogLock {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StorageError(operation: "open lock", path: path, errno: errno) }
        // A lock its holder just released can stay held for a moment by a child process forked
        // meanwhile (a plugin, a test's broker) that has not reached exec yet: its copy of the
        // descriptor keeps the lock until then. Retried for at most `lockWaitMs`; a lock really
        // held by another process is refused after that.
        var waitedMs = 0
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            guard code == EWOULDBLOCK || code == EINTR, waitedMs < Self.lockWaitMs else {
                Glibc.close(fd)
                throw StorageError(operation: "lock", path: path, errno: code)
            }
            usleep(UInt32(Self.lockRetryMs * 1000))
            waitedMs += Self.lockRetryMs
        }
        return PosixLock(fd: fd)
    }

    /// How long a held stream lock is retried before the stream is refused as in use.
    static let lockWaitMs = 500
    static let lockRetryMs = 10

    public func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StorageError(operation: "open dir", path: path, errno: errno) }
        defer { Glibc.close(fd) }
        if fsync(fd) != 0 { throw StorageError(operation: "fsync dir", path: path, errno: errno) }
    }
}

/// An flock(2) held on an open descriptor; closing it releases the lock.
final class PosixLock: LogLock {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { Glibc.close(fd) }
}

/// An open file of ``PosixStorage``. pread/pwrite are safe to use from several threads.
final class PosixFile: LogFile {
    let fd: FileDescriptor
    let path: String

    init(fd: FileDescriptor, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { _ = try? fd.close() }

    func read(at offset: Int64, count: Int, into buffer: inout [UInt8]) throws -> Int {
        guard count > 0 else { return 0 }
        let start = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: count))
        var done = 0
        do {
            try buffer.withUnsafeMutableBytes { raw in
                while done < count {
                    let slice = UnsafeMutableRawBufferPointer(rebasing: raw[(start + done)...])
                    let n = try fd.read(fromAbsoluteOffset: offset + Int64(done), into: slice, retryOnInterrupt: true)
                    if n == 0 { break }
                    done += n
                }
            }
        } catch let error as Errno {
            buffer.removeLast(count)
            throw StorageError(operation: "pread", path: path, errno: error.rawValue)
        }
        buffer.removeLast(count - done)
        return done
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        var done = 0
        do {
            while done < bytes.count {
                let n = try fd.write(
                    toAbsoluteOffset: offset + Int64(done),
                    UnsafeRawBufferPointer(rebasing: bytes[done...]), retryOnInterrupt: true)
                done += n
            }
        } catch let error as Errno {
            throw StorageError(operation: "pwrite", path: path, errno: error.rawValue)
        }
    }

    func sync() throws {
        if fdatasync(fd.rawValue) != 0 { throw StorageError(operation: "fdatasync", path: path, errno: errno) }
    }

    func size() throws -> Int64 {
        var info = stat()
        if fstat(fd.rawValue, &info) != 0 { throw StorageError(operation: "fstat", path: path, errno: errno) }
        return Int64(info.st_size)
    }

    func identity() throws -> FileIdentity {
        var info = stat()
        if fstat(fd.rawValue, &info) != 0 { throw StorageError(operation: "fstat", path: path, errno: errno) }
        return FileIdentity(info)
    }

    func truncate(to size: Int64) throws {
        if ftruncate(fd.rawValue, off_t(size)) != 0 { throw StorageError(operation: "ftruncate", path: path, errno: errno) }
    }

    func close() { /* closed on deinit, so that concurrent readers never see a reused descriptor */ }
}

extension FileIdentity {
    init(_ info: stat) {
        self.init(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), linkCount: UInt64(info.st_nlink))
    }
}
