import CZlib

extension Zlib {
    /// The wrapper around deflate data: zlib (RFC 1950, HTTP's `deflate` coding) or gzip (RFC 1952).
    public enum Format: Sendable, Hashable {
        case zlib
        case gzip

        var windowBits: Int32 { self == .gzip ? 15 + 16 : 15 }
    }

    /// Inflating would produce more than the inflater's `outputBytesMax`: nothing past that was
    /// kept (a "zip bomb" is found while inflating, never after).
    public struct OutputLimitExceeded: Swift.Error, Sendable, Hashable, CustomStringConvertible {
        public var outputBytesMax: Int
        public init(outputBytesMax: Int) { self.outputBytesMax = outputBytesMax }
        public var description: String { "inflates to more than \(outputBytesMax) bytes" }
    }

    /// Compresses `input` into one stream of `format` (a whole gzip member, or a zlib stream).
    public static func compress(_ input: [UInt8], level: Int32 = 6, format: Format) throws -> [UInt8] {
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        defer { stream.deallocate() }
        var status = orgsync_deflateInit2(stream, level, format.windowBits)
        guard status == Z_OK else { throw Zlib.Error(operation: "deflateInit2", code: status, message: "status \(status)") }
        defer { deflateEnd(stream) }
        let bound = Int(deflateBound(stream, uLong(input.count))) + 32
        var output = [UInt8](repeating: 0, count: bound)
        status = input.withUnsafeBytes { inBytes in
            output.withUnsafeMutableBufferPointer { out in
                stream.pointee.next_in = UnsafeMutablePointer(mutating: inBytes.baseAddress?.assumingMemoryBound(to: Bytef.self))
                stream.pointee.avail_in = uInt(inBytes.count)
                stream.pointee.next_out = out.baseAddress
                stream.pointee.avail_out = uInt(out.count)
                return deflate(stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { throw Zlib.Error(operation: "deflate", code: status, message: "status \(status)") }
        output.removeLast(bound - Int(stream.pointee.total_out))
        return output
    }

    /// Inflates one zlib or gzip stream fed in pieces (as an HTTP body arrives), never holding
    /// more than `outputBytesMax` inflated bytes: the piece that would pass it throws
    /// ``OutputLimitExceeded`` after at most one chunk of work past the limit is discarded.
    public final class Inflater {
        public let format: Format
        public let outputBytesMax: Int
        /// Inflated bytes so far.
        public private(set) var outputCount = 0
        /// The stream's end (and trailer checksum) was read.
        public private(set) var isFinished = false
        /// zlib keeps a pointer to its z_stream in its state: the struct must not move.
        private let stream: UnsafeMutablePointer<z_stream>
        private let chunk: UnsafeMutablePointer<UInt8>
        private static let chunkBytes = 64 << 10

        public init(format: Format, outputBytesMax: Int) throws {
            self.format = format
            self.outputBytesMax = outputBytesMax
            stream = .allocate(capacity: 1)
            stream.initialize(to: z_stream())
            chunk = .allocate(capacity: Self.chunkBytes)
            let status = orgsync_inflateInit2(stream, format.windowBits)
            guard status == Z_OK else {
                stream.deallocate()
                chunk.deallocate()
                throw Zlib.Error(operation: "inflateInit2", code: status, message: "status \(status)")
            }
        }

        deinit {
            inflateEnd(stream)
            stream.deallocate()
            chunk.deallocate()
        }

        /// Inflates `input`, appending what it yields to `output`.
        ///
        /// - Throws: ``OutputLimitExceeded``; ``Zlib/Error`` for corrupt data or bytes after the
        ///   end of the stream.
        public func inflate(_ input: UnsafeRawBufferPointer, into output: inout [UInt8]) throws {
            guard input.count > 0 else { return }
            guard !isFinished else { throw Zlib.Error(operation: "inflate", code: Z_DATA_ERROR, message: "bytes after the end of the stream") }
            stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.pointee.avail_in = uInt(input.count)
            defer {
                // zlib must not keep a pointer into `input` past this call.
                stream.pointee.next_in = nil
                stream.pointee.avail_in = 0
            }
            while true {
                stream.pointee.next_out = chunk
                stream.pointee.avail_out = uInt(Self.chunkBytes)
                let status = CZlib.inflate(stream, Z_NO_FLUSH)
                let produced = Self.chunkBytes - Int(stream.pointee.avail_out)
                if produced > 0 {
                    guard outputCount + produced <= outputBytesMax else { throw OutputLimitExceeded(outputBytesMax: outputBytesMax) }
                    output.append(contentsOf: UnsafeBufferPointer(start: chunk, count: produced))
                    outputCount += produced
                }
                switch status {
                case Z_STREAM_END:
                    isFinished = true
                    guard stream.pointee.avail_in == 0 else {
                        throw Zlib.Error(operation: "inflate", code: Z_DATA_ERROR, message: "bytes after the end of the stream")
                    }
                    return
                case Z_OK:
                    // More output may be pending (the chunk filled up) or the input is used up.
                    if stream.pointee.avail_in == 0 && stream.pointee.avail_out > 0 { return }
                case Z_BUF_ERROR where stream.pointee.avail_in == 0:
                    return  // needs more input
                case Z_NEED_DICT:
                    throw Zlib.Error(operation: "inflate", code: Z_DATA_ERROR, message: "a preset dictionary is needed")
                default:
                    let message = stream.pointee.msg.map { String(cString: $0) } ?? "status \(status)"
                    throw Zlib.Error(operation: "inflate", code: status, message: message)
                }
            }
        }

        public func inflate(_ input: [UInt8], into output: inout [UInt8]) throws {
            try input.withUnsafeBytes { try inflate($0, into: &output) }
        }

        /// Checks that the whole stream was read (call after the last piece).
        public func finish() throws {
            guard isFinished else {
                throw Zlib.Error(operation: "inflate", code: Z_DATA_ERROR, message: "the stream is truncated")
            }
        }
    }
}
