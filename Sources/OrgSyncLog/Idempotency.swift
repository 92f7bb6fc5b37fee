/// What a keyed append did: appended now, or answered from the key's first append.
public enum AppendOutcome: Sendable, Hashable {
    case appended(AppendResult)
    /// The key was seen within the window with the same entries: nothing was appended; this is
    /// the first append's answer.
    case replayed(AppendResult)

    public var result: AppendResult {
        switch self {
        case .appended(let result), .replayed(let result): result
        }
    }
}

/// Idempotency keys: what a producer sends to make a retried append safe.
public enum IdempotencyKey {
    public static let bytesMax = 255

    /// 1–255 visible ASCII bytes (0x21–0x7E).
    public static func isValid(_ key: String) -> Bool {
        let utf8 = key.utf8
        return !utf8.isEmpty && utf8.count <= bytesMax && utf8.allSatisfy { $0 >= 0x21 && $0 <= 0x7E }
    }
}

/// Identifies an append's entries without keeping them: a retry with the same key must carry
/// the same entries. Count and bytes catch most differences for free; the hash (CRC-32 and
/// Adler-32 of the entries as `u32 length` + bytes, both from zlib) catches the rest.
public struct EntriesFingerprint: Sendable, Hashable {
    public var entryCount: UInt32
    public var totalBytes: UInt64
    public var hash: UInt64

    public init(entryCount: UInt32, totalBytes: UInt64, hash: UInt64) {
        self.entryCount = entryCount
        self.totalBytes = totalBytes
        self.hash = hash
    }

    public init(entries: [[UInt8]]) {
        var crc: UInt32 = 0
        var adler: UInt32 = 1
        var total: UInt64 = 0
        for entry in entries {
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: entry.count).littleEndian) { length in
                crc = Zlib.crc32(length, initial: crc)
                adler = Zlib.adler32(length, initial: adler)
            }
            entry.withUnsafeBytes { bytes in
                crc = Zlib.crc32(bytes, initial: crc)
                adler = Zlib.adler32(bytes, initial: adler)
            }
            total += UInt64(entry.count)
        }
        self.init(entryCount: UInt32(truncatingIfNeeded: entries.count), totalBytes: total,
                  hash: UInt64(crc) << 32 | UInt64(adler))
    }
}

/// One remembered keyed append: stored in control batches and `.keys` files (layout in
/// `RecordBatch.swift`) and held in memory for the window.
public struct IdempotencyRecord: Sendable, Hashable {
    public var key: String
    public var fingerprint: EntriesFingerprint
    public var result: AppendResult
    /// Broker time of the write that made the append durable, ms since the Unix epoch.
    public var timestampMs: Int64

    public init(key: String, fingerprint: EntriesFingerprint, result: AppendResult, timestampMs: Int64) {
        self.key = key
        self.fingerprint = fingerprint
        self.result = result
        self.timestampMs = timestampMs
    }

    /// Bytes of a record after its key.
    static let fixedBytes = 40

    /// Appends `u32 length` + the record.
    func appendFramed(to output: inout [UInt8]) {
        let keyBytes = Array(key.utf8)
        precondition(!keyBytes.isEmpty && keyBytes.count <= IdempotencyKey.bytesMax, "keys are checked on append")
        output.appendLE(UInt32(1 + keyBytes.count + IdempotencyRecord.fixedBytes))
        output.append(UInt8(keyBytes.count))
        output.append(contentsOf: keyBytes)
        output.appendLE(fingerprint.entryCount)
        output.appendLE(fingerprint.totalBytes)
        output.appendLE(fingerprint.hash)
        output.appendLE(result.firstOffset)
        output.appendLE(UInt32(result.count))
        output.appendLE(timestampMs)
    }

    /// Parses one record (the bytes inside its frame); every field is checked.
    init(decoding raw: UnsafeRawBufferPointer) throws {
        guard raw.count >= 1 else { throw BatchDecodeError.badPayload("empty control record") }
        let keyLength = Int(raw[0])
        guard keyLength >= 1, raw.count == 1 + keyLength + IdempotencyRecord.fixedBytes else {
            throw BatchDecodeError.badPayload("control record of \(raw.count) bytes with a key of \(keyLength)")
        }
        let keyBytes = UnsafeRawBufferPointer(rebasing: raw[1..<(1 + keyLength)])
        guard keyBytes.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
            throw BatchDecodeError.badPayload("control record key is not visible ASCII")
        }
        let at = 1 + keyLength
        let count: UInt32 = raw.loadLE(at: at + 28)
        let firstOffset: UInt64 = raw.loadLE(at: at + 20)
        guard count >= 1, firstOffset <= UInt64.max - UInt64(count) else {
            throw BatchDecodeError.badPayload("control record with \(count) entries at offset \(firstOffset)")
        }
        self.init(
            key: String(decoding: keyBytes, as: UTF8.self),
            fingerprint: EntriesFingerprint(entryCount: raw.loadLE(at: at), totalBytes: raw.loadLE(at: at + 4),
                                            hash: raw.loadLE(at: at + 12)),
            result: AppendResult(firstOffset: firstOffset, lastOffset: firstOffset + UInt64(count) - 1),
            timestampMs: raw.loadLE(at: at + 32))
    }
}

/// The keys a stream remembers, and the keys of appends still queued or being written.
///
/// A pure value kept under the log's state mutex: ``claim(_:fingerprint:nowMs:)`` checks a key
/// and marks it in flight in one step, so two appends with one key can never both be admitted.
///
/// Invariants:
/// - a key is in at most one of `remembered` and `inFlight`;
/// - `remembered.count ≤ keysMax`; a remembered key is younger than `windowMs` when answered
///   (older ones are dropped, oldest first);
/// - `order` lists remembered keys oldest first (entries whose sequence no longer matches are
///   stale and skipped).
struct IdempotencyTable {
    var windowMs: Int64
    var keysMax: Int

    struct Remembered {
        var record: IdempotencyRecord
        var sequence: UInt64
    }

    private(set) var remembered: [String: Remembered] = [:]
    private(set) var inFlight: [String: EntriesFingerprint] = [:]
    private var order: [(key: String, sequence: UInt64)] = []
    private var orderHead = 0
    private var nextSequence: UInt64 = 0

    init(windowMs: Int64, keysMax: Int) {
        self.windowMs = windowMs
        self.keysMax = keysMax
    }

    enum Decision: Equatable {
        /// Not seen: the append goes ahead; the key is now in flight.
        case admit
        case replay(AppendResult)
        case reused
        case inFlight
    }

    var count: Int { remembered.count }

    /// Decides what an append with `key` does, marking the key in flight when it is admitted.
    mutating func claim(_ key: String, fingerprint: EntriesFingerprint, nowMs: Int64) -> Decision {
        evict(nowMs: nowMs)
        if let known = remembered[key] {
            if isExpired(known.record, nowMs: nowMs) {
                remembered.removeValue(forKey: key)
            } else {
                return known.record.fingerprint == fingerprint ? .replay(known.record.result) : .reused
            }
        }
        if inFlight[key] != nil { return .inFlight }
        inFlight[key] = fingerprint
        return .admit
    }

    /// The append that claimed `record.key` is durable: remember it (and stop marking it in flight).
    mutating func complete(_ record: IdempotencyRecord, nowMs: Int64) {
        inFlight.removeValue(forKey: record.key)
        remember(record, nowMs: nowMs)
    }

    /// The append that claimed `key` failed: a retry may go ahead.
    mutating func release(_ key: String) {
        inFlight.removeValue(forKey: key)
    }

    /// Adds a record (newest last), then drops what is over the window or the count.
    mutating func remember(_ record: IdempotencyRecord, nowMs: Int64) {
        nextSequence += 1
        remembered[record.key] = Remembered(record: record, sequence: nextSequence)
        order.append((record.key, nextSequence))
        evict(nowMs: nowMs)
    }

    private func isExpired(_ record: IdempotencyRecord, nowMs: Int64) -> Bool {
        ageMs(of: record.timestampMs, nowMs: nowMs) >= windowMs
    }

    /// Drops the oldest keys while there are more than `keysMax` or the oldest is out of the window.
    mutating func evict(nowMs: Int64) {
        while orderHead < order.count {
            let (key, sequence) = order[orderHead]
            guard let known = remembered[key], known.sequence == sequence else {
                orderHead += 1  // stale: the key was dropped or remembered again later
                continue
            }
            guard remembered.count > keysMax || isExpired(known.record, nowMs: nowMs) else { break }
            remembered.removeValue(forKey: key)
            orderHead += 1
        }
        // Reclaim the consumed front now and then (amortised O(1) per key).
        if orderHead >= 1024 && orderHead * 2 >= order.count {
            order.removeFirst(orderHead)
            orderHead = 0
        }
    }
}

// MARK: - `.keys` files

/// The idempotency records of one sealed segment, written beside it (`<base>.keys`) when it is
/// sealed, so that opening a stream finds the keys of its window without reading the log.
///
/// ```
/// offset size field (little-endian)
///      0    4 magic                "OSK1"
///      4    4 crc                  CRC-32 of bytes [8, end)
///      8    8 segmentBaseOffset    base offset of the segment
///     16    8 newestTimestampMs    newest batch timestamp of the segment (Int64.min: none)
///     24    4 recordCount
///     28    … records              each `u32 length` + record (layout in `RecordBatch.swift`)
/// ```
///
/// A cache like the `.index`: a missing or damaged file is rebuilt from the segment's control
/// batches.
struct KeysFile: Equatable {
    static let magic: UInt32 = 0x314B_534F  // "OSK1" read as little-endian u32
    static let headerBytes = 28

    var segmentBaseOffset: UInt64
    var newestTimestampMs: Int64?
    var records: [IdempotencyRecord]

    func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLE(KeysFile.magic)
        bytes.appendLE(UInt32(0))
        bytes.appendLE(segmentBaseOffset)
        bytes.appendLE(newestTimestampMs ?? Int64.min)
        bytes.appendLE(UInt32(records.count))
        for record in records { record.appendFramed(to: &bytes) }
        let crc = bytes.withUnsafeBytes { Zlib.crc32(UnsafeRawBufferPointer(rebasing: $0[8...])) }
        bytes.withUnsafeMutableBytes { $0.storeLE(crc, at: 4) }
        return bytes
    }

    /// Parses and checks a `.keys` file; nil when it is not a whole, valid file for `segmentBaseOffset`.
    static func decode(_ bytes: [UInt8], segmentBaseOffset: UInt64) -> KeysFile? {
        bytes.withUnsafeBytes { raw -> KeysFile? in
            guard raw.count >= headerBytes, raw.loadLE(at: 0) as UInt32 == magic,
                  raw.loadLE(at: 4) as UInt32 == Zlib.crc32(UnsafeRawBufferPointer(rebasing: raw[8...])),
                  raw.loadLE(at: 8) as UInt64 == segmentBaseOffset
            else { return nil }
            let newest: Int64 = raw.loadLE(at: 16)
            let count = Int(raw.loadLE(at: 24) as UInt32)
            var ranges: [Range<Int>] = []
            let body = UnsafeRawBufferPointer(rebasing: raw[headerBytes...])
            guard (try? RecordBatchCodec.splitFrames(body, into: &ranges)) != nil, ranges.count == count,
                  let records = try? ranges.map({ try IdempotencyRecord(decoding: UnsafeRawBufferPointer(rebasing: body[$0])) })
            else { return nil }
            return KeysFile(segmentBaseOffset: segmentBaseOffset, newestTimestampMs: newest == Int64.min ? nil : newest,
                            records: records)
        }
    }
}
