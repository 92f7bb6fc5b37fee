/// Reading one record batch from a segment file: the one loop body that reads, recovery, index
/// rebuild, idempotency scans and `log verify` share (each decides what damage means for it).
enum RecordBatchReader {
    /// Reads the batch at `position` of `file` into `buffer` (replacing its contents) and checks
    /// it whole: header, announced length within `limit`, CRC, and — when given — its base offset.
    ///
    /// - Throws: ``BatchDecodeError`` for bytes that are not a valid batch there (`endOfData` for
    ///   the zeros after the last batch); `StorageError` when the file cannot be read.
    static func read(
        _ file: any LogFile, at position: Int64, limit: Int64, expectedBase: UInt64?, buffer: inout [UInt8]
    ) throws -> RecordBatchHeader {
        buffer.removeAll(keepingCapacity: true)
        let headerBytes = Int(min(Int64(RecordBatchHeader.size), max(0, limit - position)))
        try file.read(at: position, count: headerBytes, into: &buffer)
        let header = try buffer.withUnsafeBytes { raw in try RecordBatchCodec.decodeHeader(raw) }
        if let expectedBase, header.baseOffset != expectedBase {
            throw BatchDecodeError.badLength("base offset \(header.baseOffset), expected \(expectedBase)")
        }
        let length = Int64(header.batchLength)
        guard position + length <= limit else {
            throw BatchDecodeError.truncated(needed: Int(length), available: Int(limit - position))
        }
        try file.read(at: position + Int64(buffer.count), count: Int(length) - buffer.count, into: &buffer)
        guard buffer.count == Int(length) else {
            throw BatchDecodeError.truncated(needed: Int(length), available: buffer.count)
        }
        try buffer.withUnsafeBytes { raw in try RecordBatchCodec.verifyChecksum(raw, header: header) }
        return header
    }
}

extension Segment {
    /// Reads and fully checks the batch at `position` (``RecordBatchReader/read(_:at:limit:expectedBase:buffer:)``).
    func readBatch(at position: Int64, limit: Int64, expectedBase: UInt64?, buffer: inout [UInt8]) throws -> RecordBatchHeader {
        try RecordBatchReader.read(try file(), at: position, limit: limit, expectedBase: expectedBase, buffer: &buffer)
    }

    /// Reads, checks and decodes the batch at `position`: its entries' bytes in `payload`, one
    /// range of it per entry in `ranges` (inflated with this segment's dictionary for codec 2).
    func readAndDecodeBatch(
        at position: Int64, limit: Int64, expectedBase: UInt64, buffer: inout [UInt8],
        payload: inout [UInt8], ranges: inout [Range<Int>]
    ) throws -> RecordBatchHeader {
        let header = try readBatch(at: position, limit: limit, expectedBase: expectedBase, buffer: &buffer)
        let dictionary = header.codec == .zlibDictionary ? try self.dictionary() : .absent
        try buffer.withUnsafeBytes { raw in
            try RecordBatchCodec.decodePayload(raw, header: header, payload: &payload, ranges: &ranges, dictionary: dictionary)
        }
        return header
    }
}
