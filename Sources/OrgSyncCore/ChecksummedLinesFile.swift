#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import OrgSyncLog

/// An append-only file of records, one a line: `<CRC-32 of the payload, 8 hex digits> <payload>\n`,
/// kept through a ``LogStorage`` (the segment log's: POSIX files, or a fault-injecting storage in
/// tests).
///
/// Why this shape: a crash can leave a torn last line, and a disk can flip bits. Reading skips
/// any line that is incomplete, does not match its checksum or does not parse, so bad bytes are
/// counted and dropped, never trusted and never a crash. Payloads must not contain a newline
/// (JSON from `JSONEncoder` never does). Not thread-safe: its owner serializes access.
final class ChecksummedLinesFile {
    let path: String
    private let storage: any LogStorage
    private let fsyncEachAppend: Bool
    private var file: any LogFile
    /// Where the next line goes: the end of what this file wrote. A write that failed part-way
    /// is written over by the next append (a torn line is never followed by a good one).
    private var size: Int64

    /// Opens (creating) the file at `path` for appending. A new file's name is made durable
    /// (its directory synced) before anything is appended to it.
    init(path: String, storage: any LogStorage, fsyncEachAppend: Bool) throws(RecordFileError) {
        self.path = path
        self.storage = storage
        self.fsyncEachAppend = fsyncEachAppend
        (file, size) = try Self.openForAppend(path, storage)
    }

    /// The valid payloads of the file at `path` in file order, and how many lines were skipped
    /// (none for a file that does not exist).
    static func read(path: String, storage: any LogStorage) throws(RecordFileError) -> (payloads: [[UInt8]], damagedLineCount: Int) {
        guard storage.fileExists(path) else { return ([], 0) }
        let bytes = try Self.storageCall("read", path) { () throws -> [UInt8] in
            let file = try storage.openFile(path, create: false)
            let size = try file.size()
            var bytes: [UInt8] = []
            guard let count = Int(exactly: size) else { return bytes }
            bytes.reserveCapacity(count)
            while bytes.count < count {
                let read = try file.read(at: Int64(bytes.count), count: min(Self.readChunkBytes, count - bytes.count), into: &bytes)
                if read == 0 { break }  // shorter than its size said: what is there is what counts
            }
            return bytes
        }
        return decode(bytes)
    }

    /// Bytes read per call when reading a whole file.
    static let readChunkBytes = 1 << 20

    /// The valid payloads of a file's bytes in file order, and how many lines were skipped
    /// (separate from the reading so that tests and the fuzzer reach it without a file).
    static func decode(_ bytes: [UInt8]) -> (payloads: [[UInt8]], damagedLineCount: Int) {
        var payloads: [[UInt8]] = []
        var damaged = 0
        var lineStart = 0
        for index in bytes.indices where bytes[index] == UInt8(ascii: "\n") {
            if let payload = decodeLine(bytes[lineStart..<index]) { payloads.append(payload) } else { damaged += 1 }
            lineStart = index + 1
        }
        if lineStart < bytes.count { damaged += 1 }  // torn tail: no newline
        return (payloads, damaged)
    }

    /// Appends one record (and fsyncs it when configured to).
    func append(_ payload: [UInt8]) throws(RecordFileError) {
        let line = Self.encodeLine(payload)
        try Self.storageCall("write", path) {
            try line.withUnsafeBytes { try file.write($0, at: size) }
            if fsyncEachAppend { try file.sync() }
        }
        size += Int64(line.count)
    }

    /// Replaces the file's content with `payloads`, atomically: a temporary file is written and
    /// synced, renamed over the file, and the directory synced. A crash leaves old or new.
    func rewrite(_ payloads: [[UInt8]]) throws(RecordFileError) {
        var content: [UInt8] = []
        for payload in payloads { content += Self.encodeLine(payload) }
        let temporary = path + ".tmp"
        try Self.storageCall("rewrite", temporary) {
            let replacement = try storage.openFile(temporary, create: true)
            try replacement.truncate(to: 0)
            try content.withUnsafeBytes { try replacement.write($0, at: 0) }
            try replacement.sync()
            try storage.rename(temporary, to: path)
            try storage.syncDirectory(Self.directory(of: path))
        }
        (file, size) = try Self.openForAppend(path, storage)
    }

    // MARK: - Encoding

    static func encodeLine(_ payload: [UInt8]) -> [UInt8] {
        let crc = Zlib.crc32(payload)
        var hex = String(crc, radix: 16)
        hex = String(repeating: "0", count: 8 - hex.count) + hex
        return Array(hex.utf8) + [UInt8(ascii: " ")] + payload + [UInt8(ascii: "\n")]
    }

    static func decodeLine(_ line: ArraySlice<UInt8>) -> [UInt8]? {
        guard line.count >= 10, line[line.startIndex + 8] == UInt8(ascii: " ") else { return nil }
        let hexBytes = line[line.startIndex..<line.startIndex + 8]
        guard let hex = String(validating: hexBytes, as: UTF8.self), let crc = UInt32(hex, radix: 16) else { return nil }
        let payload = Array(line[(line.startIndex + 9)...])
        return Zlib.crc32(payload) == crc ? payload : nil
    }

    // MARK: - Storage

    private static func openForAppend(_ path: String, _ storage: any LogStorage) throws(RecordFileError) -> (any LogFile, Int64) {
        try storageCall("open", path) {
            let existed = storage.fileExists(path)
            let file = try storage.openFile(path, create: true)
            // A new file's name is durable only once its directory is synced: without this, a
            // power cut took the whole sync log (or dead-letter file) with records synced into it.
            if !existed { try storage.syncDirectory(directory(of: path)) }
            return (file, try file.size())
        }
    }

    private static func directory(of path: String) -> String {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return directory.isEmpty ? (path.hasPrefix("/") ? "/" : ".") : directory
    }

    /// Runs storage calls, reporting a failure as a ``RecordFileError`` (the storage's errno;
    /// `EIO` for an error without one).
    private static func storageCall<T>(_ operation: String, _ path: String, _ body: () throws -> T) throws(RecordFileError) -> T {
        do {
            return try body()
        } catch let error as StorageError {
            throw RecordFileError(path: error.path, operation: "\(operation): \(error.operation)", code: error.errno)
        } catch {
            throw RecordFileError(path: path, operation: "\(operation): \(error)", code: EIO)
        }
    }
}

/// A sync log or dead-letter file could not be read or written. `code` is the `errno`.
public struct RecordFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var operation: String
    public var code: Int32

    public var description: String { "\(operation) \(path) failed: \(String(cString: strerror(code))) (errno \(code))" }
}

/// Link names become file names: keep them to a safe alphabet.
func validateLinkFileName(_ link: String) throws(RecordFileError) {
    let allowed = link.utf8.allSatisfy { byte in
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "-")
            || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
    }
    guard allowed, !link.isEmpty, !link.hasPrefix("."), link.utf8.count <= 200 else {
        throw RecordFileError(path: link, operation: "name a file after link", code: EINVAL)
    }
}
