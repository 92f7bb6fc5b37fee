/// A record batch: the unit the log writes, checksums, compresses and reads.
///
/// ## Byte format (version 1, all integers little-endian)
///
/// ```
/// offset size field
///      0    4 magic                "OSB1" (0x4F 0x53 0x42 0x31)
///      4    4 batchLength          bytes of the whole batch, header included
///      8    4 crc                  CRC-32 (zlib) of bytes [12, batchLength)
///     12    1 formatVersion        1
///     13    1 codec                0 = none, 1 = zlib, 2 = zlib with the segment's preset
///                                  dictionary
///     14    2 flags                bit 0 (0x0001) group continues, bit 1 (0x0002) control;
///                                  other bits 0
///     16    8 baseOffset           offset of the first entry
///     24    4 entryCount           ≥ 1 (data batch), 0 (control batch)
///     28    4 uncompressedLength   bytes of the payload before compression
///     32    4 storedLength         bytes of the payload as stored (= batchLength - 52)
///     36    8 firstTimestampMs     broker append time of the batch, ms since the Unix epoch
///     44    8 maxTimestampMs       ≥ firstTimestampMs
///     52    … payload              entries, each `u32 length` + `length` bytes; with codec
///                                  zlib the whole payload is one zlib stream (RFC 1950); with
///                                  codec 2 one zlib stream with FDICT set, whose DICTID (the
///                                  Adler-32 of the dictionary) must be the segment's `.zdict`
/// ```
///
/// Codec 2 is decided per batch by the writer (small payloads, once the segment has a
/// dictionary); codecs 0 and 1 read as before, and the version stays 1: a reader without
/// codec 2 reports `unknown codec 2` rather than misreading the batch.
///
/// Invariants checked on every read: magic, version, codec, known flags, `batchLength = 52 +
/// storedLength`, the CRC, entry count ≥ 1 (0 for a control batch), and after decompression
/// the exact uncompressed length and that the frames fill the payload exactly with `entryCount`
/// entries (a control batch: with well-formed control records). An all-zero header marks the
/// end of the data in a segment (segments are pre-written with zeros ahead of the tail).
///
/// ## Flags
///
/// - `0x0001` **group continues**: one group commit (one write, one fdatasync, acknowledged
///   together) is several batches; every batch of it but the last carries this bit. Recovery
///   drops a group whose last batch is missing (a short write on a crash): none of it was
///   acknowledged, and keeping a prefix would let a producer's retry duplicate it.
/// - `0x0002` **control: idempotency keys**: the batch holds no entries (`entryCount` 0,
///   `baseOffset` = the offset after the group's last entry, so `nextOffset == baseOffset` and
///   it consumes no offsets). It is written last in its group, after the group's data batches
///   and in the same write, and never carries "group continues". Readers skip it; its payload
///   (stored uncompressed) holds one control record per keyed append of the group, each
///   framed like an entry (`u32 length` + record):
///
/// ```
/// offset size field (control record, little-endian)
///      0    1 keyLength            k, 1...255
///      1    k key                  visible ASCII (0x21...0x7E)
///    1+k    4 fingerprintCount     entries in the append
///    5+k    8 fingerprintBytes     total bytes of those entries
///   13+k    8 fingerprintHash      CRC-32 << 32 | Adler-32 of the entries, each as u32 length + bytes
///   21+k    8 firstOffset          offset given to the append's first entry
///   29+k    4 count                entries appended (≥ 1)
///   33+k    8 timestampMs          broker time of the write, ms since the Unix epoch
/// ```
public struct RecordBatchHeader: Sendable, Hashable {
    public static let size = 52
    public static let magic: UInt32 = 0x3142_534F  // "OSB1" read as little-endian u32
    public static let formatVersion: UInt8 = 1
    /// Deflate's largest expansion (a run of one byte compresses about 1032:1), with a margin.
    static let zlibExpansionMax: UInt64 = 1_040

    public enum Codec: UInt8, Sendable {
        case none = 0
        case zlib = 1
        /// zlib with the segment's preset dictionary (its `.zdict` file, ``DictionaryFile``).
        case zlibDictionary = 2
    }

    /// Flag bits (header byte 14): see the format above.
    public static let flagGroupContinues: UInt16 = 0x0001
    public static let flagControl: UInt16 = 0x0002
    static let knownFlags: UInt16 = flagGroupContinues | flagControl

    public var batchLength: UInt32
    public var crc: UInt32
    public var codec: Codec
    public var flags: UInt16
    public var baseOffset: UInt64
    public var entryCount: UInt32
    public var uncompressedLength: UInt32
    public var storedLength: UInt32
    public var firstTimestampMs: Int64
    public var maxTimestampMs: Int64

    /// The offset after the last entry of the batch.
    public var nextOffset: UInt64 { baseOffset + UInt64(entryCount) }
    /// A control batch (idempotency keys): no entries; readers skip it.
    public var isControl: Bool { flags & RecordBatchHeader.flagControl != 0 }
    /// More batches of the same group commit follow this one.
    public var continuesGroup: Bool { flags & RecordBatchHeader.flagGroupContinues != 0 }
    /// Bytes of the entries themselves (uncompressed, without framing); 0 for a control batch.
    public var entryBytes: Int64 { isControl ? 0 : Int64(uncompressedLength) - 4 * Int64(entryCount) }
}

/// Why bytes are not a valid record batch.
public enum BatchDecodeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Fewer bytes than the header or the announced length: a torn write or the end of data.
    case truncated(needed: Int, available: Int)
    /// All-zero header: the end of the written data in a pre-written segment.
    case endOfData
    case badMagic(UInt32)
    case badVersion(UInt8)
    case badCodec(UInt8)
    case badFlags(UInt16)
    case badLength(String)
    case checksumMismatch(stored: UInt32, computed: UInt32)
    case badPayload(String)
    /// A codec-2 batch whose segment has no readable dictionary (`reason` says why).
    case dictionaryUnavailable(id: UInt32, reason: String)
    /// A codec-2 batch that names another dictionary than its segment's.
    case dictionaryMismatch(batch: UInt32, segment: UInt32)

    public var description: String {
        switch self {
        case .truncated(let needed, let available): "truncated batch (\(available) of \(needed) bytes)"
        case .endOfData: "end of data"
        case .badMagic(let magic): "bad magic 0x\(String(magic, radix: 16))"
        case .badVersion(let version): "unknown format version \(version)"
        case .badCodec(let codec): "unknown codec \(codec)"
        case .badFlags(let flags): "bad flags 0x\(String(flags, radix: 16))"
        case .badLength(let why): "bad length: \(why)"
        case .checksumMismatch(let stored, let computed):
            "CRC mismatch (stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16)))"
        case .badPayload(let why): "bad payload: \(why)"
        case .dictionaryUnavailable(let id, let reason):
            "the batch needs preset dictionary 0x\(String(id, radix: 16)), but \(reason)"
        case .dictionaryMismatch(let batch, let segment):
            "the batch needs preset dictionary 0x\(String(batch, radix: 16)), the segment's is 0x\(String(segment, radix: 16))"
        }
    }
}

/// Encodes and decodes record batches. Stateless; the buffers it fills are the caller's.
public enum RecordBatchCodec {
    /// Batches whose payload is smaller than this stay uncompressed: zlib's header and trailer
    /// would eat the gain and cost CPU.
    public static let compressThresholdBytes = 256

    /// Appends one encoded batch holding `entries` to `output`.
    ///
    /// - Parameter compressionLevel: zlib level 0...9; `nil` stores the payload uncompressed.
    /// - Parameter scratch: reused between calls to avoid an allocation per batch.
    /// - Parameter flags: header flags; only ``RecordBatchHeader/flagGroupContinues`` applies
    ///   to a data batch (control batches come from ``encodeControl(records:baseOffset:timestampMs:into:)``).
    /// - Parameter dictionary: when given, the payload is compressed with it (codec 2, at the
    ///   deflater's level, whatever its size) instead of plain zlib at `compressionLevel`; the
    ///   batch must then be written to the segment whose `.zdict` holds that dictionary.
    public static func encode(
        entries: some Collection<[UInt8]>, baseOffset: UInt64, timestampMs: Int64,
        compressionLevel: Int32?, into output: inout [UInt8], scratch: inout [UInt8], flags: UInt16 = 0,
        dictionary: Zlib.PresetDeflater? = nil
    ) throws {
        precondition(flags & ~RecordBatchHeader.flagGroupContinues == 0, "a data batch only takes the group flag")
        precondition(!entries.isEmpty, "a batch holds at least one entry")
        scratch.removeAll(keepingCapacity: true)
        for entry in entries {
            scratch.appendLE(UInt32(entry.count))
            scratch.append(contentsOf: entry)
        }
        let start = output.count
        output.append(contentsOf: repeatElement(0, count: RecordBatchHeader.size))
        var codec = RecordBatchHeader.Codec.none
        if let dictionary {
            // Even a small payload gains: the dictionary holds what it repeats.
            codec = .zlibDictionary
            try scratch.withUnsafeBytes { try dictionary.compress($0, into: &output) }
            if output.count - start - RecordBatchHeader.size >= scratch.count {
                output.removeLast(output.count - start - RecordBatchHeader.size)
                codec = .none
            }
        } else if let level = compressionLevel, scratch.count >= compressThresholdBytes {
            codec = .zlib
            try scratch.withUnsafeBytes { try Zlib.compress($0, level: level, into: &output) }
            // Keep the smaller form: incompressible data is stored as it is.
            if output.count - start - RecordBatchHeader.size >= scratch.count {
                output.removeLast(output.count - start - RecordBatchHeader.size)
                codec = .none
            }
        }
        if codec == .none { output.append(contentsOf: scratch) }
        writeHeader(&output, at: start, codec: codec, flags: flags, baseOffset: baseOffset,
                    entryCount: entries.count, uncompressedLength: scratch.count, timestampMs: timestampMs)
    }

    /// Appends one control batch holding `records` (the keyed appends of one group) to
    /// `output`. `baseOffset` is the offset after the group's last entry. Stored uncompressed:
    /// keys and fingerprints barely compress, and recovery reads them without inflating.
    public static func encodeControl(
        records: some Collection<IdempotencyRecord>, baseOffset: UInt64, timestampMs: Int64, into output: inout [UInt8]
    ) {
        precondition(!records.isEmpty, "a control batch holds at least one record")
        let start = output.count
        output.append(contentsOf: repeatElement(0, count: RecordBatchHeader.size))
        for record in records { record.appendFramed(to: &output) }
        writeHeader(&output, at: start, codec: .none, flags: RecordBatchHeader.flagControl, baseOffset: baseOffset,
                    entryCount: 0, uncompressedLength: output.count - start - RecordBatchHeader.size, timestampMs: timestampMs)
    }

    /// Fills the header of the batch whose payload is stored from `start + 52` to the end of
    /// `output`, and its CRC.
    private static func writeHeader(
        _ output: inout [UInt8], at start: Int, codec: RecordBatchHeader.Codec, flags: UInt16, baseOffset: UInt64,
        entryCount: Int, uncompressedLength: Int, timestampMs: Int64
    ) {
        let storedLength = output.count - start - RecordBatchHeader.size
        output.withUnsafeMutableBytes { raw in
            let header = UnsafeMutableRawBufferPointer(rebasing: raw[start..<(start + RecordBatchHeader.size)])
            header.storeLE(RecordBatchHeader.magic, at: 0)
            header.storeLE(UInt32(RecordBatchHeader.size + storedLength), at: 4)
            header[12] = RecordBatchHeader.formatVersion
            header[13] = codec.rawValue
            header.storeLE(flags, at: 14)
            header.storeLE(baseOffset, at: 16)
            header.storeLE(UInt32(entryCount), at: 24)
            header.storeLE(UInt32(uncompressedLength), at: 28)
            header.storeLE(UInt32(storedLength), at: 32)
            header.storeLE(timestampMs, at: 36)
            header.storeLE(timestampMs, at: 44)
            let crc = Zlib.crc32(UnsafeRawBufferPointer(rebasing: raw[(start + 12)...]))
            header.storeLE(crc, at: 8)
        }
    }

    /// Sets the base offset (and, when given, the flags) of the encoded batch at `position`
    /// and recomputes its CRC (used for batches encoded before their offsets, or their place in
    /// the group, were known). Returns the patched header.
    @discardableResult
    public static func patchBaseOffset(
        _ buffer: inout [UInt8], at position: Int, baseOffset: UInt64, flags: UInt16? = nil
    ) throws -> RecordBatchHeader {
        try buffer.withUnsafeMutableBytes { raw in
            let batch = UnsafeMutableRawBufferPointer(rebasing: raw[position...])
            var header = try decodeHeader(UnsafeRawBufferPointer(batch))
            if let flags {
                guard flags & ~RecordBatchHeader.knownFlags == 0,
                      (flags & RecordBatchHeader.flagControl != 0) == header.isControl
                else { throw BatchDecodeError.badFlags(flags) }
                batch.storeLE(flags, at: 14)
                header.flags = flags
            }
            batch.storeLE(baseOffset, at: 16)
            let crc = Zlib.crc32(UnsafeRawBufferPointer(rebasing: batch[12..<Int(header.batchLength)]))
            batch.storeLE(crc, at: 8)
            header.baseOffset = baseOffset
            header.crc = crc
            return header
        }
    }

    /// Parses and checks a header (not the CRC, which needs the whole batch).
    public static func decodeHeader(_ bytes: UnsafeRawBufferPointer) throws -> RecordBatchHeader {
        guard bytes.count >= RecordBatchHeader.size else {
            if bytes.allSatisfy({ $0 == 0 }) { throw BatchDecodeError.endOfData }
            throw BatchDecodeError.truncated(needed: RecordBatchHeader.size, available: bytes.count)
        }
        let magic: UInt32 = bytes.loadLE(at: 0)
        guard magic == RecordBatchHeader.magic else {
            if magic == 0 && bytes[0..<RecordBatchHeader.size].allSatisfy({ $0 == 0 }) { throw BatchDecodeError.endOfData }
            throw BatchDecodeError.badMagic(magic)
        }
        guard bytes[12] == RecordBatchHeader.formatVersion else { throw BatchDecodeError.badVersion(bytes[12]) }
        guard let codec = RecordBatchHeader.Codec(rawValue: bytes[13]) else { throw BatchDecodeError.badCodec(bytes[13]) }
        let flags: UInt16 = bytes.loadLE(at: 14)
        guard flags & ~RecordBatchHeader.knownFlags == 0 else { throw BatchDecodeError.badFlags(flags) }
        let header = RecordBatchHeader(
            batchLength: bytes.loadLE(at: 4), crc: bytes.loadLE(at: 8), codec: codec, flags: flags,
            baseOffset: bytes.loadLE(at: 16), entryCount: bytes.loadLE(at: 24),
            uncompressedLength: bytes.loadLE(at: 28), storedLength: bytes.loadLE(at: 32),
            firstTimestampMs: bytes.loadLE(at: 36), maxTimestampMs: bytes.loadLE(at: 44))
        guard UInt64(header.batchLength) == UInt64(RecordBatchHeader.size) + UInt64(header.storedLength) else {
            throw BatchDecodeError.badLength("batchLength \(header.batchLength) ≠ 52 + storedLength \(header.storedLength)")
        }
        if header.isControl {
            guard header.entryCount == 0 else { throw BatchDecodeError.badLength("control batch with \(header.entryCount) entries") }
            guard !header.continuesGroup else { throw BatchDecodeError.badFlags(flags) }
        } else {
            guard header.entryCount >= 1 else { throw BatchDecodeError.badLength("entry count 0") }
        }
        guard UInt64(header.uncompressedLength) >= UInt64(header.entryCount) * 4 else {
            throw BatchDecodeError.badLength("payload of \(header.uncompressedLength) bytes cannot hold \(header.entryCount) entries")
        }
        if codec == .none && header.uncompressedLength != header.storedLength {
            throw BatchDecodeError.badLength("uncompressed batch with stored \(header.storedLength) ≠ \(header.uncompressedLength)")
        }
        // Deflate expands at most 1032:1. Inflating reserves the announced length up front, so a
        // header announcing more (up to 4 GiB for a few stored bytes) must not get that far.
        if codec != .none && UInt64(header.uncompressedLength) > UInt64(header.storedLength) * RecordBatchHeader.zlibExpansionMax {
            throw BatchDecodeError.badLength("\(header.storedLength) zlib bytes cannot inflate to \(header.uncompressedLength)")
        }
        guard header.maxTimestampMs >= header.firstTimestampMs else { throw BatchDecodeError.badLength("timestamps out of order") }
        return header
    }

    /// Checks the CRC of a whole batch (`bytes` starts at the batch's first byte and holds at
    /// least `header.batchLength` bytes).
    public static func verifyChecksum(_ bytes: UnsafeRawBufferPointer, header: RecordBatchHeader) throws {
        let length = Int(header.batchLength)
        guard bytes.count >= length else { throw BatchDecodeError.truncated(needed: length, available: bytes.count) }
        let computed = Zlib.crc32(UnsafeRawBufferPointer(rebasing: bytes[12..<length]))
        guard computed == header.crc else { throw BatchDecodeError.checksumMismatch(stored: header.crc, computed: computed) }
    }

    /// Decompresses (if needed) and splits a verified batch's payload into entry byte ranges.
    /// `payload` receives the uncompressed payload; `ranges` the entries' ranges in it. A
    /// control batch yields no ranges (its records are checked; read them with
    /// ``decodeControlRecords(_:header:)``), so every loop over entries skips it.
    /// `dictionary` is the batch's segment's (needed by codec-2 batches only).
    public static func decodePayload(
        _ bytes: UnsafeRawBufferPointer, header: RecordBatchHeader,
        payload: inout [UInt8], ranges: inout [Range<Int>], dictionary: SegmentDictionary = .absent
    ) throws {
        payload.removeAll(keepingCapacity: true)
        ranges.removeAll(keepingCapacity: true)
        try inflatePayload(bytes, header: header, dictionary: dictionary, into: &payload)
        var position = 0
        let end = payload.count
        try payload.withUnsafeBytes { raw in
            while position < end {
                guard end - position >= 4 else { throw BatchDecodeError.badPayload("torn entry length at byte \(position)") }
                let length = Int(raw.loadLE(at: position) as UInt32)
                position += 4
                guard length <= end - position else { throw BatchDecodeError.badPayload("entry of \(length) bytes past the payload end") }
                ranges.append(position..<(position + length))
                position += length
            }
        }
        if header.isControl {
            guard !ranges.isEmpty else { throw BatchDecodeError.badPayload("control batch without records") }
            try payload.withUnsafeBytes { raw in
                for range in ranges { _ = try IdempotencyRecord(decoding: UnsafeRawBufferPointer(rebasing: raw[range])) }
            }
            ranges.removeAll(keepingCapacity: true)
            return
        }
        guard ranges.count == Int(header.entryCount) else {
            throw BatchDecodeError.badPayload("\(ranges.count) entries, header says \(header.entryCount)")
        }
    }

    /// The idempotency-key records of a verified control batch (none for a data batch).
    public static func decodeControlRecords(
        _ bytes: UnsafeRawBufferPointer, header: RecordBatchHeader, dictionary: SegmentDictionary = .absent
    ) throws -> [IdempotencyRecord] {
        guard header.isControl else { return [] }
        var payload: [UInt8] = []
        var ranges: [Range<Int>] = []
        try inflatePayload(bytes, header: header, dictionary: dictionary, into: &payload)
        return try payload.withUnsafeBytes { raw in
            try splitFrames(raw, into: &ranges)
            return try ranges.map { try IdempotencyRecord(decoding: UnsafeRawBufferPointer(rebasing: raw[$0])) }
        }
    }

    /// Appends the uncompressed payload of a verified batch to `payload`.
    private static func inflatePayload(
        _ bytes: UnsafeRawBufferPointer, header: RecordBatchHeader, dictionary: SegmentDictionary, into payload: inout [UInt8]
    ) throws {
        let stored = UnsafeRawBufferPointer(rebasing: bytes[RecordBatchHeader.size..<Int(header.batchLength)])
        let expectedCount = Int(header.uncompressedLength)
        switch header.codec {
        case .none:
            payload.append(contentsOf: stored)
        case .zlib:
            do {
                try Zlib.decompress(stored, expectedCount: expectedCount, into: &payload)
            } catch {
                throw BatchDecodeError.badPayload("\(error)")
            }
        case .zlibDictionary:
            do {
                try Zlib.decompress(stored, expectedCount: expectedCount, dictionary: dictionary.dictionary, into: &payload)
            } catch let mismatch as Zlib.DictionaryMismatch {
                switch dictionary {
                case .present(let segment):
                    throw BatchDecodeError.dictionaryMismatch(batch: mismatch.streamDictionaryID, segment: segment.id)
                case .absent:
                    throw BatchDecodeError.dictionaryUnavailable(id: mismatch.streamDictionaryID, reason: "the segment has no dictionary file")
                case .unreadable(let reason):
                    throw BatchDecodeError.dictionaryUnavailable(id: mismatch.streamDictionaryID, reason: "its file is unreadable (\(reason))")
                }
            } catch {
                throw BatchDecodeError.badPayload("\(error)")
            }
        }
    }

    /// Splits `u32 length` + bytes frames that must fill `raw` exactly.
    static func splitFrames(_ raw: UnsafeRawBufferPointer, into ranges: inout [Range<Int>]) throws {
        ranges.removeAll(keepingCapacity: true)
        var position = 0
        let end = raw.count
        while position < end {
            guard end - position >= 4 else { throw BatchDecodeError.badPayload("torn frame length at byte \(position)") }
            let length = Int(raw.loadLE(at: position) as UInt32)
            position += 4
            guard length <= end - position else { throw BatchDecodeError.badPayload("frame of \(length) bytes past the end") }
            ranges.append(position..<(position + length))
            position += length
        }
    }
}

// MARK: - Little-endian helpers

extension Array where Element == UInt8 {
    @inline(__always)
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always)
    func loadLE<T: FixedWidthInteger>(at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension BatchDecodeError {
    /// A codec-2 batch whose segment's dictionary is missing, unreadable or another one: the
    /// batch itself passed its CRC (it is not a torn write).
    public var isDictionaryError: Bool {
        switch self {
        case .dictionaryUnavailable, .dictionaryMismatch: true
        default: false
        }
    }
}
