#if canImport(Glibc)
import Glibc
#endif

/// Reads a file (or standard input) line by line as raw bytes, without the line terminator.
/// Bytes are not assumed to be UTF-8: validation is the caller's job.
final class LineReader {
    private let file: UnsafeMutablePointer<FILE>
    private let ownsFile: Bool
    private var buffer: UnsafeMutablePointer<CChar>?
    private var capacity = 0
    private(set) var lineNumber = 0
    private(set) var bytesRead: Int64 = 0

    /// `path` nil or "-" reads standard input.
    init(path: String?) throws {
        if let path, path != "-" {
            guard let file = fopen(path, "rb") else {
                throw CLIError("cannot open \(path): \(String(cString: strerror(errno)))")
            }
            self.file = file
            ownsFile = true
        } else {
            guard let input = fdopen(0, "rb") else { throw CLIError("cannot read standard input") }
            file = input
            ownsFile = false
        }
    }

    deinit {
        free(buffer)
        if ownsFile { fclose(file) }
    }

    /// The next line, or nil at the end of the input.
    func next() -> [UInt8]? {
        let count = getline(&buffer, &capacity, file)
        guard count >= 0, let buffer else { return nil }
        lineNumber += 1
        bytesRead += Int64(count)
        var length = count
        if length > 0 && buffer[length - 1] == 0x0A { length -= 1 }
        if length > 0 && buffer[length - 1] == 0x0D { length -= 1 }
        return buffer.withMemoryRebound(to: UInt8.self, capacity: length) { Array(UnsafeBufferPointer(start: $0, count: length)) }
    }
}

/// An error for the user; its message is printed as it is.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
