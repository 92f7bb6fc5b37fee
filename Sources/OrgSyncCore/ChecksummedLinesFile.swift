#if canImport(Glibc)
import Glibc
private let systemRead = Glibc.read
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemRead = Darwin.read
private let systemWrite = Darwin.write
#endif
import OrgSyncLog

/// An append-only file of records, one a line: `<CRC-32 of the payload, 8 hex digits> <payload>\n`.
///
/// Why this shape: a crash can leave a torn last line, and a disk can flip bits. Reading skips
/// any line that is incomplete, does not match its checksum or does not parse, so bad bytes are
/// counted and dropped, never trusted and never a crash. Payloads must not contain a newline
/// (JSON from `JSONEncoder` never does). Not thread-safe: its owner serializes access.
final class ChecksummedLinesFile {
    let path: String
    private let fsyncEachAppend: Bool
    private var descriptor: Int32

    /// Opens (creating) the file at `path` for appending.
    init(path: String, fsyncEachAppend: Bool) throws(RecordFileError) {
        self.path = path
        self.fsyncEachAppend = fsyncEachAppend
        self.descriptor = try Self.openForAppend(path)
    }

    deinit { _ = close(descriptor) }

    /// The valid payloads of the file at `path` in file order, and how many lines were skipped.
    static func read(path: String) throws(RecordFileError) -> (payloads: [[UInt8]], damagedLineCount: Int) {
        decode(try readAll(path))
    }

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
        try Self.writeAll(descriptor, Self.encodeLine(payload), path: path)
        if fsyncEachAppend, fsync(descriptor) != 0 { throw RecordFileError(path: path, operation: "fsync", code: errno) }
    }

    /// Replaces the file's content with `payloads`, atomically: a temporary file is written and
    /// fsynced, renamed over the file, and the directory fsynced. A crash leaves old or new.
    func rewrite(_ payloads: [[UInt8]]) throws(RecordFileError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RecordFileError(path: temporary, operation: "open", code: errno) }
        var content: [UInt8] = []
        for payload in payloads { content += Self.encodeLine(payload) }
        do throws(RecordFileError) {
            try Self.writeAll(fd, content, path: temporary)
            if fsync(fd) != 0 { throw RecordFileError(path: temporary, operation: "fsync", code: errno) }
        } catch {
            _ = close(fd)
            throw error
        }
        _ = close(fd)
        guard rename(temporary, path) == 0 else { throw RecordFileError(path: path, operation: "rename", code: errno) }
        Self.fsyncDirectory(of: path)
        let reopened = try Self.openForAppend(path)
        _ = close(descriptor)
        descriptor = reopened
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

    // MARK: - POSIX

    private static func openForAppend(_ path: String) throws(RecordFileError) -> Int32 {
        let existing = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        if existing >= 0 { return existing }
        guard errno == ENOENT else { throw RecordFileError(path: path, operation: "open", code: errno) }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RecordFileError(path: path, operation: "open", code: errno) }
        // A new file's name is durable only once its directory is synced: without this, a power
        // cut took the whole sync log (or dead-letter file) with records fsynced into it.
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let directoryPath = directory.isEmpty ? (path.hasPrefix("/") ? "/" : ".") : directory
        let dirFd = open(directoryPath, O_RDONLY | O_CLOEXEC)
        if dirFd < 0 || fsync(dirFd) != 0 {
            let code = errno
            if dirFd >= 0 { _ = close(dirFd) }
            _ = close(fd)
            throw RecordFileError(path: directoryPath, operation: "fsync directory", code: code)
        }
        _ = close(dirFd)
        return fd
    }

    private static func readAll(_ path: String) throws(RecordFileError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return [] }
            throw RecordFileError(path: path, operation: "open", code: errno)
        }
        defer { _ = close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { systemRead(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw RecordFileError(path: path, operation: "read", code: errno)
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(RecordFileError) {
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return systemWrite(fd, base + written, buffer.count - written)
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw RecordFileError(path: path, operation: "write", code: errno)
            }
            written += count
        }
    }

    private static func fsyncDirectory(of path: String) {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        _ = close(fd)
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
