import CZlib

extension Zlib {
    /// Largest useful preset dictionary: deflate's window (32 KiB); zlib ignores bytes before it.
    public static let dictionaryBytesLimit = 32_768

    /// A preset dictionary and its id: the Adler-32 of its bytes, which zlib writes into every
    /// stream compressed with it (RFC 1950's DICTID) and reports when inflating asks for it.
    public struct PresetDictionary: Sendable, Hashable {
        public let bytes: [UInt8]
        public let id: UInt32

        public init(_ bytes: [UInt8]) {
            precondition(!bytes.isEmpty, "a preset dictionary holds at least one byte")
            self.bytes = bytes
            self.id = Zlib.adler32(bytes)
        }
    }

    /// A zlib stream names a preset dictionary its reader does not have (`given` nil) or has
    /// another one (`given` its id). Ids are the dictionaries' Adler-32, as in RFC 1950's DICTID.
    public struct DictionaryMismatch: Swift.Error, Sendable, Hashable, CustomStringConvertible {
        public var streamDictionaryID: UInt32
        public var givenDictionaryID: UInt32?

        public var description: String {
            let wanted = "0x" + String(streamDictionaryID, radix: 16)
            guard let givenDictionaryID else { return "needs preset dictionary \(wanted), which is missing" }
            return "needs preset dictionary \(wanted), the segment's is 0x\(String(givenDictionaryID, radix: 16))"
        }
    }

    /// A deflate stream primed once with a preset dictionary and copied (`deflateCopy`) for
    /// every input: zlib hashes the whole dictionary when it is set, which for 32 KiB costs
    /// several times more than compressing one small entry; copying the primed state does not.
    ///
    /// Not thread-safe: one owner (a stream's flusher, behind its lock) uses it at a time.
    public final class PresetDeflater {
        /// zlib's memLevel for the primed stream. `deflateCopy` copies the window (64 KiB), the
        /// chain links (64 KiB), the hash table and the pending buffer (64 KiB each at the default
        /// 8, 16 KiB each at 6) for every batch; for one small entry the smaller table stores the
        /// same (2.16× either way on the workload) and the copy is 37 % shorter.
        public static let memoryLevel: Int32 = 6
        public let level: Int32
        /// Adler-32 of the dictionary, as zlib writes it into every stream's header (DICTID).
        public let dictionaryID: UInt32
        /// zlib keeps a pointer to its z_stream in its state: the structs must not move.
        private let primed: UnsafeMutablePointer<z_stream>
        private let working: UnsafeMutablePointer<z_stream>

        public init(dictionary: PresetDictionary, level: Int32) throws {
            self.level = level
            let primed = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            primed.initialize(to: z_stream())
            let working = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            working.initialize(to: z_stream())
            var status = orgsync_deflateInit2Memory(primed, level, Format.zlib.windowBits, Self.memoryLevel)
            guard status == Z_OK else {
                primed.deallocate()
                working.deallocate()
                throw Zlib.Error(operation: "deflateInit2", code: status, message: "status \(status)")
            }
            status = dictionary.bytes.withUnsafeBufferPointer { deflateSetDictionary(primed, $0.baseAddress, uInt($0.count)) }
            guard status == Z_OK else {
                deflateEnd(primed)
                primed.deallocate()
                working.deallocate()
                throw Zlib.Error(operation: "deflateSetDictionary", code: status, message: "status \(status)")
            }
            self.primed = primed
            self.working = working
            dictionaryID = UInt32(truncatingIfNeeded: primed.pointee.adler)
        }

        deinit {
            deflateEnd(primed)
            primed.deallocate()
            working.deallocate()
        }

        /// Compresses `input` into one zlib stream that names the dictionary (FDICT + DICTID),
        /// appending it to `output`.
        public func compress(_ input: UnsafeRawBufferPointer, into output: inout [UInt8]) throws {
            var status = deflateCopy(working, primed)
            guard status == Z_OK else { throw Zlib.Error(operation: "deflateCopy", code: status, message: "status \(status)") }
            defer { deflateEnd(working) }
            // After the dictionary deflateBound counts the 4 DICTID bytes too.
            let bound = Int(deflateBound(working, uLong(input.count)))
            let start = output.count
            output.append(contentsOf: repeatElement(0, count: bound))
            status = output.withUnsafeMutableBufferPointer { out -> Int32 in
                working.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
                working.pointee.avail_in = uInt(input.count)
                working.pointee.next_out = out.baseAddress.map { $0 + start }
                working.pointee.avail_out = uInt(bound)
                return deflate(working, Z_FINISH)
            }
            guard status == Z_STREAM_END else {
                output.removeLast(bound)
                throw Zlib.Error(operation: "deflate", code: status, message: "status \(status)")
            }
            output.removeLast(bound - Int(working.pointee.total_out))
        }

        public func compress(_ input: [UInt8]) throws -> [UInt8] {
            var output: [UInt8] = []
            try input.withUnsafeBytes { try compress($0, into: &output) }
            return output
        }
    }

    /// Inflates one zlib stream written with a preset dictionary (see ``PresetDeflater``) to
    /// exactly `expectedCount` bytes, appending them to `output`. The stream must name a
    /// dictionary, and it must be `dictionary` (checked by id before inflating any of it).
    ///
    /// - Throws: ``DictionaryMismatch`` when the stream names another dictionary or `dictionary`
    ///   is nil; ``Zlib/Error`` for corrupt data, a stream without a dictionary, any other size
    ///   or trailing bytes.
    public static func decompress(
        _ input: UnsafeRawBufferPointer, expectedCount: Int, dictionary: PresetDictionary?, into output: inout [UInt8]
    ) throws {
        guard expectedCount >= 0, expectedCount < Int(uInt.max), input.count <= Int(uInt.max) else {
            throw Zlib.Error(operation: "inflate", code: Z_DATA_ERROR, message: "cannot inflate to \(expectedCount) bytes")
        }
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        defer { stream.deallocate() }
        var status = orgsync_inflateInit(stream)
        guard status == Z_OK else { throw Zlib.Error(operation: "inflateInit", code: status, message: "status \(status)") }
        defer { inflateEnd(stream) }
        let start = output.count
        // One spare byte detects a stream longer than announced.
        let room = expectedCount + 1
        output.append(contentsOf: repeatElement(0, count: room))
        var mismatch: DictionaryMismatch?
        var namedDictionary = false
        status = output.withUnsafeMutableBufferPointer { out -> Int32 in
            stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.pointee.avail_in = uInt(input.count)
            stream.pointee.next_out = out.baseAddress.map { $0 + start }
            stream.pointee.avail_out = uInt(room)
            var status = inflate(stream, Z_FINISH)
            guard status == Z_NEED_DICT else { return status }
            namedDictionary = true
            // On Z_NEED_DICT zlib leaves the stream's DICTID in `adler`.
            let wanted = UInt32(truncatingIfNeeded: stream.pointee.adler)
            guard let dictionary, dictionary.id == wanted else {
                mismatch = DictionaryMismatch(streamDictionaryID: wanted, givenDictionaryID: dictionary?.id)
                return status
            }
            status = dictionary.bytes.withUnsafeBufferPointer { inflateSetDictionary(stream, $0.baseAddress, uInt($0.count)) }
            guard status == Z_OK else { return status }
            return inflate(stream, Z_FINISH)
        }
        let zlibMessage = stream.pointee.msg.map { String(cString: $0) }
        let produced = Int(stream.pointee.total_out)
        let consumedAll = stream.pointee.avail_in == 0
        output.removeLast(room - min(produced, room))
        if let mismatch {
            output.removeLast(output.count - start)
            throw mismatch
        }
        guard status == Z_STREAM_END, namedDictionary else {
            output.removeLast(output.count - start)
            let message: String
            if namedDictionary {
                message = status == Z_BUF_ERROR ? "truncated or longer than announced" : "status \(status)\(zlibMessage.map { " (\($0))" } ?? "")"
            } else if status == Z_DATA_ERROR || status == Z_STREAM_ERROR {
                // Before any DICTID: the two-byte zlib header itself is bad (or the data right after).
                message = "corrupt zlib stream before its preset dictionary id: \(zlibMessage ?? "status \(status)")"
            } else {
                message = "the stream names no preset dictionary"
            }
            throw Zlib.Error(operation: "inflate", code: status == Z_BUF_ERROR || status == Z_STREAM_END ? Z_DATA_ERROR : status, message: message)
        }
        guard produced == expectedCount, consumedAll else {
            output.removeLast(output.count - start)
            throw Zlib.Error(operation: "inflate", code: Z_DATA_ERROR, message: "inflated \(produced) bytes, expected \(expectedCount)\(consumedAll ? "" : " (trailing bytes)")")
        }
    }

    public static func adler32(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { adler32($0) }
    }
}
