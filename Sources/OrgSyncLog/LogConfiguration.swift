/// When an append is acknowledged.
public enum FsyncPolicy: Sendable, Hashable {
    /// After its batch is written **and** fdatasync'ed. Survives a crash of the process or the
    /// machine. The default.
    case always
    /// After its batch is written (to the page cache); a background flush runs every
    /// `intervalMs`. **Not durable**: a machine crash or power loss can lose up to the last
    /// interval of acknowledged entries (a process crash alone loses nothing). For users who
    /// trade durability for latency, like PostgreSQL's `synchronous_commit=off`.
    case interval(intervalMs: Int)
}

/// Settings of one stream's log. Every limit names its unit; all have defaults.
public struct LogConfiguration: Sendable, Hashable {
    /// Largest entry accepted by an append.
    public var entryBytesMax: Int = 1 << 20
    /// Largest uncompressed payload of one record batch; a larger group commit is written as
    /// several batches (in one write and one flush). An entry larger than this gets a batch of
    /// its own.
    public var batchBytesMax: Int = 1 << 20
    /// A segment rolls once it holds this many bytes.
    public var segmentBytesMax: Int = 64 << 20
    /// A segment rolls once its first batch is this old (and a new batch arrives).
    public var segmentAgeMsMax: Int64 = 7 * 24 * 3600 * 1000
    /// File descriptors a stream holds for its sealed segments: they are opened when read and
    /// the least recently read is closed past this many. The active segment's descriptor is
    /// not counted (it is always open). So a stream of thousands of segments fits under the
    /// process's open-file limit.
    public var openSealedSegmentsMax: Int = 64
    /// Appends (calls) waiting for the flusher; more wait for room (back-pressure).
    public var queuedAppendsMax: Int = 4096
    /// Bytes of entries waiting for the flusher; more wait for room (back-pressure).
    public var queuedBytesMax: Int = 64 << 20
    /// Entries in one append call.
    public var appendEntriesMax: Int = 100_000
    /// zlib level for batch payloads (0...9; 1 is fastest), or nil for no compression.
    public var compressionLevel: Int32? = 1
    /// Size of the preset zlib dictionary each segment gets, cut from the stream's newest
    /// entries (see ``DictionaryFile``); 0 turns dictionaries off. At most 32768 (zlib's window).
    /// One entry alone gives zlib nothing to learn from; with the stream's recent entries as a
    /// dictionary a single ~270-byte event stores at about 2.2× instead of 0.95×.
    public var dictionaryBytesMax: Int = 32_768
    /// Batches whose payload (entries + 4-byte lengths) is at most this many bytes compress with
    /// the segment's dictionary (codec 2); larger ones with plain zlib at `compressionLevel`,
    /// since a batch that big has its own context and the level costs more than it saves.
    public var dictionaryPayloadBytesMax: Int = 16_384
    /// zlib level of dictionary-coded batches (1...9). They are small, and the primed stream is
    /// copied rather than rebuilt, so level 6 costs little more than level 1 and stores ~15 % less.
    public var dictionaryCompressionLevel: Int32 = 6
    /// A sparse-index point is written every time this many log bytes have passed.
    public var indexIntervalBytes: Int = 4096
    /// Segments are pre-written with zeros this far ahead of the tail, so that flushes
    /// overwrite allocated blocks (faster than growing the file on ext4, and no size metadata
    /// to flush per append).
    public var preallocateBytes: Int = 4 << 20
    public var fsyncPolicy: FsyncPolicy = .always
    /// Longest the flusher waits for producers that were acknowledged by the last flush to
    /// append again, when fewer appends are queued than the last group held (0: never wait).
    public var groupCommitWaitMicros: Int = 200
    /// Appends of at least this many bytes compress their own batch on the caller's task
    /// (parallel, overlapping the flush); smaller ones are grouped and compressed by the flusher.
    public var precompressMinBytes: Int = 128 * 1024
    /// Retention: delete old sealed segments once the stream holds more than this (nil: no limit).
    public var retentionBytesMax: Int64? = nil
    /// Retention: delete sealed segments whose newest batch is older than this (nil: forever).
    public var retentionAgeMsMax: Int64? = nil
    /// Retention may delete a segment that a cursor has not yet passed (the consumer then
    /// reports the lost range). Off by default: retention never passes a cursor.
    public var retentionDropsUnconsumed: Bool = false
    /// A keyed append (`Idempotency-Key`) is remembered this long after it was written: a
    /// retry within it is answered with the first append's offsets and appends nothing.
    public var idempotencyWindowMs: Int64 = 86_400_000
    /// At most this many keys are remembered per stream (the oldest are forgotten first).
    public var idempotencyKeysMax: Int = 1_000_000

    /// Longest duration a `…Ms` field of a stream may hold: 3650 days. Longer is a mistake, and
    /// the bound keeps time arithmetic far from overflow.
    public static let durationMsMax: Int64 = 315_360_000_000
    /// Largest `fsyncPolicy` interval: an unsynced minute is already a lot to lose.
    public static let fsyncIntervalMsMax = 60_000
    /// Largest `openSealedSegmentsMax`: descriptors are a process-wide budget shared with sockets.
    public static let openSealedSegmentsMaxLimit = 4096
    /// Largest `queuedAppendsMax`.
    public static let queuedAppendsMaxLimit = 1_000_000
    /// Largest `queuedBytesMax`: 16 GiB.
    public static let queuedBytesMaxLimit = 16 << 30

    public init() {}

    /// Checks every field against its documented range; throws naming the first bad one.
    public func validate() throws(LogError) {
        func check(_ ok: Bool, _ field: String, _ problem: String) throws(LogError) {
            if !ok { throw LogError.invalidConfiguration(field: field, problem: problem) }
        }
        try check(entryBytesMax >= 1 && entryBytesMax <= 64 << 20, "entryBytesMax", "must be 1...67108864")
        try check(batchBytesMax >= 1024, "batchBytesMax", "must be at least 1024")
        try check(batchBytesMax <= 256 << 20, "batchBytesMax", "must be at most 268435456")
        try check(segmentBytesMax >= 4096, "segmentBytesMax", "must be at least 4096")
        try check(segmentBytesMax <= Int(UInt32.max / 2), "segmentBytesMax", "must be at most 2147483647")
        try check((1...Self.openSealedSegmentsMaxLimit).contains(openSealedSegmentsMax), "openSealedSegmentsMax",
                  "must be 1...\(Self.openSealedSegmentsMaxLimit)")
        try check((1...Self.durationMsMax).contains(segmentAgeMsMax), "segmentAgeMsMax", "must be 1...\(Self.durationMsMax)")
        try check((1...Self.queuedAppendsMaxLimit).contains(queuedAppendsMax), "queuedAppendsMax", "must be 1...\(Self.queuedAppendsMaxLimit)")
        try check(queuedBytesMax >= entryBytesMax, "queuedBytesMax", "must be at least entryBytesMax")
        try check(queuedBytesMax <= Self.queuedBytesMaxLimit, "queuedBytesMax", "must be at most \(Self.queuedBytesMaxLimit)")
        try check(appendEntriesMax >= 1, "appendEntriesMax", "must be positive")
        if let level = compressionLevel { try check((0...9).contains(level), "compressionLevel", "must be 0...9") }
        try check(dictionaryBytesMax == 0 || (256...Zlib.dictionaryBytesLimit).contains(dictionaryBytesMax), "dictionaryBytesMax",
                  "must be 0 (off) or 256...\(Zlib.dictionaryBytesLimit)")
        try check(dictionaryPayloadBytesMax >= 0, "dictionaryPayloadBytesMax", "must not be negative")
        try check((1...9).contains(dictionaryCompressionLevel), "dictionaryCompressionLevel", "must be 1...9")
        try check(indexIntervalBytes >= 64, "indexIntervalBytes", "must be at least 64")
        try check(preallocateBytes >= 0, "preallocateBytes", "must not be negative")
        try check((0...100_000).contains(groupCommitWaitMicros), "groupCommitWaitMicros", "must be 0...100000")
        try check(precompressMinBytes >= 1, "precompressMinBytes", "must be positive")
        if case .interval(let ms) = fsyncPolicy {
            try check((1...Self.fsyncIntervalMsMax).contains(ms), "fsyncPolicy.intervalMs", "must be 1...\(Self.fsyncIntervalMsMax)")
        }
        if let max = retentionBytesMax { try check(max >= 0, "retentionBytesMax", "must not be negative") }
        if let max = retentionAgeMsMax {
            try check((0...Self.durationMsMax).contains(max), "retentionAgeMsMax", "must be 0...\(Self.durationMsMax)")
        }
        try check(idempotencyWindowMs >= 1, "idempotencyWindowMs", "must be positive")
        try check((1...100_000_000).contains(idempotencyKeysMax), "idempotencyKeysMax", "must be 1...100000000")
    }
}



extension StreamLog {
    /// Whether `name` may name a stream or a cursor (it becomes a file name): 1–128 of
    /// letters, digits, '.', '_', '-', and not "." or "..".
    public static func isValidName(_ name: String) -> Bool { OrgSyncLog.isValidName(name) }
}

func isValidName(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.count <= 128 && name != "." && name != ".."
        && name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
        }
}
