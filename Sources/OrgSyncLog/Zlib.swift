import CZlib

/// zlib, the log's compression and checksum engine, behind a small typed API.
public enum Zlib {
    /// A zlib call failed. `code` is zlib's own return code (`Z_DATA_ERROR`, `Z_MEM_ERROR`, …).
    public struct Error: Swift.Error, Sendable, Hashable, CustomStringConvertible {
        public var operation: String
        public var code: Int32
        public var message: String

        public var description: String { "zlib \(operation) failed (\(code)): \(message)" }
    }

    /// CRC-32 (the zlib/IEEE polynomial) of `bytes`, continuing from `initial`.
    public static func crc32(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        checksum(bytes, initial: initial) { CZlib.crc32($0, $1, $2) }
    }

    public static func crc32(_ bytes: [UInt8], initial: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { crc32($0, initial: initial) }
    }

    /// Adler-32 of `bytes`, continuing from `initial` (1 for a fresh checksum).
    public static func adler32(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 1) -> UInt32 {
        checksum(bytes, initial: initial) { CZlib.adler32($0, $1, $2) }
    }

    /// Runs one of zlib's running checksums over `bytes`. zlib takes a `uInt` length, so very
    /// large buffers go in chunks.
    private static func checksum(
        _ bytes: UnsafeRawBufferPointer, initial: UInt32, _ update: (UInt, UnsafePointer<UInt8>, uInt) -> UInt
    ) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return initial }
        var value = UInt(initial)
        var pointer = base.assumingMemoryBound(to: UInt8.self)
        var remaining = bytes.count
        while remaining > 0 {
            let chunk = min(remaining, Int(UInt32.max / 2))
            value = update(value, pointer, uInt(chunk))
            pointer += chunk
            remaining -= chunk
        }
        return UInt32(truncatingIfNeeded: value)
    }

    /// Compresses `input` into one zlib stream (header, deflate data, Adler-32 trailer),
    /// appending it to `output`. `level` is 0...9 (1 is fastest).
    public static func compress(_ input: UnsafeRawBufferPointer, level: Int32, into output: inout [UInt8]) throws {
        var stream = z_stream()
        var status = orgsync_deflateInit(&stream, level)
        guard status == Z_OK else { throw Zlib.Error(operation: "deflateInit", code: status, message: describe(status)) }
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, uLong(input.count)))
        let start = output.count
        output.reserveCapacity(start + bound)
        output.append(contentsOf: repeatElement(0, count: bound))
        status = output.withUnsafeMutableBufferPointer { out -> Int32 in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(input.count)
            stream.next_out = out.baseAddress.map { $0 + start }
            stream.avail_out = uInt(bound)
            return deflate(&stream, Z_FINISH)
        }
        guard status == Z_STREAM_END else {
            output.removeLast(bound)
            throw Zlib.Error(operation: "deflate", code: status, message: describe(status))
        }
        output.removeLast(bound - Int(stream.total_out))
    }

    public static func compress(_ input: [UInt8], level: Int32 = 1) throws -> [UInt8] {
        var output: [UInt8] = []
        try input.withUnsafeBytes { (raw) in try compress(raw, level: level, into: &output) }
        return output
    }

    /// Inflates one zlib stream whose uncompressed size is known to be exactly `expectedCount`,
    /// appending it to `output`. Any other size, trailing bytes or a bad checksum is an error:
    /// the log never trusts a stored length it has not verified.
    public static func decompress(_ input: UnsafeRawBufferPointer, expectedCount: Int, into output: inout [UInt8]) throws {
        // zlib counts in 32 bits, and the spare byte below must fit too.
        guard expectedCount >= 0, expectedCount < Int(uInt.max), input.count <= Int(uInt.max) else {
            throw Zlib.Error(operation: "inflate", code: Z_DATA_ERROR, message: "cannot inflate to \(expectedCount) bytes")
        }
        var stream = z_stream()
        var status = orgsync_inflateInit(&stream)
        guard status == Z_OK else { throw Zlib.Error(operation: "inflateInit", code: status, message: describe(status)) }
        defer { inflateEnd(&stream) }
        let start = output.count
        // One spare byte detects a stream longer than announced.
        let room = expectedCount + 1
        output.append(contentsOf: repeatElement(0, count: room))
        status = output.withUnsafeMutableBufferPointer { out -> Int32 in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(input.count)
            stream.next_out = out.baseAddress.map { $0 + start }
            stream.avail_out = uInt(room)
            return inflate(&stream, Z_FINISH)
        }
        let produced = Int(stream.total_out)
        let consumedAll = stream.avail_in == 0
        output.removeLast(room - min(produced, room))
        guard status == Z_STREAM_END else {
            output.removeLast(output.count - start)
            let code = status == Z_BUF_ERROR ? Z_DATA_ERROR : status
            throw Zlib.Error(operation: "inflate", code: code, message: status == Z_BUF_ERROR ? "truncated or longer than announced" : describe(status))
        }
        guard produced == expectedCount, consumedAll else {
            output.removeLast(output.count - start)
            throw Zlib.Error(operation: "inflate", code: Z_DATA_ERROR, message: "inflated \(produced) bytes, expected \(expectedCount)\(consumedAll ? "" : " (trailing bytes)")")
        }
    }

    public static func decompress(_ input: [UInt8], expectedCount: Int) throws -> [UInt8] {
        var output: [UInt8] = []
        try input.withUnsafeBytes { (raw) in try decompress(raw, expectedCount: expectedCount, into: &output) }
        return output
    }

    /// zlib's version string, e.g. "1.2.13".
    public static var version: String { String(cString: zlibVersion()) }

    private static func describe(_ status: Int32) -> String {
        switch status {
        case Z_STREAM_ERROR: "invalid parameters or stream state"
        case Z_DATA_ERROR: "input is corrupt"
        case Z_MEM_ERROR: "out of memory"
        case Z_BUF_ERROR: "no progress possible (output too small or input truncated)"
        case Z_VERSION_ERROR: "incompatible zlib version"
        case Z_NEED_DICT: "a preset dictionary is needed"
        default: "status \(status)"
        }
    }
}
