/// Who a stream is, and which of its offsets still mean what they meant when they were applied.
///
/// A stream gets a random ``streamID`` when it is created. Its ``epochs`` start at 1 and a new
/// epoch begins whenever acknowledged entries are cut (`orgsync log repair`): the offsets from
/// the cut on are given to new entries, so an offset alone no longer names one entry. A target
/// stores (stream id, epoch, offset) with what it applied; ``isConsistent(epoch:offset:endOffset:)``
/// says whether that position still describes a prefix of this stream (Kafka's leader-epoch
/// check, simpler because one writer owns a stream).
///
/// Kept in the stream's directory as `IDENTITY`, written to a temporary file, flushed, renamed
/// over and the directory flushed, so a crash leaves the old or the new file, never a mix.
public struct StreamLineage: Sendable, Hashable, Codable, CustomStringConvertible {
    /// One epoch: its number and the first offset appended in it.
    public struct Epoch: Sendable, Hashable, Codable {
        public var epoch: UInt64
        public var startOffset: UInt64

        public init(epoch: UInt64, startOffset: UInt64) {
            self.epoch = epoch
            self.startOffset = startOffset
        }
    }

    /// Random, 32 hex digits; never reused.
    public var streamID: String
    /// Increasing epoch numbers with non-decreasing start offsets; never empty.
    public private(set) var epochs: [Epoch]
    /// Whether the stream may hold record batches of codec 2 (preset dictionaries): then its
    /// `IDENTITY` is of version 2, which a release without codec 2 refuses ("unknown format")
    /// rather than read the stream and cut it at its first codec-2 batch as a torn tail. Set
    /// once, before the first such batch is written; never cleared (a one-way upgrade).
    public var usesPresetDictionaries = false

    private enum CodingKeys: String, CodingKey {
        case streamID, epochs
    }

    public init(streamID: String, epochs: [Epoch]) {
        self.streamID = streamID
        self.epochs = epochs.isEmpty ? [Epoch(epoch: 1, startOffset: 0)] : epochs
    }

    /// Decodes the JSON form (a cluster keeps a stream's lineage in a NATS bucket, which any
    /// client of that server can write): refused, as an `IDENTITY` file would be, unless it is
    /// one (``problem(streamID:epochs:)``).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let streamID = try container.decode(String.self, forKey: .streamID)
        let epochs = try container.decode([Epoch].self, forKey: .epochs)
        if let problem = Self.problem(streamID: streamID, epochs: epochs) {
            throw DecodingError.dataCorrupted(.init(codingPath: container.codingPath, debugDescription: problem))
        }
        self.init(streamID: streamID, epochs: epochs)
    }

    /// Why `streamID` and `epochs` are not a stream's lineage; nil when they are. One rule for
    /// the `IDENTITY` file and the JSON form: an id of 1–64 of `0-9 a-z A-Z - _`; at least one
    /// epoch; epochs counted from 1 (plugins and targets refuse a stored epoch 0), below 2^63 − 1
    /// (they travel as signed 64-bit JSON integers, and the next one, a repair's, must fit too),
    /// increasing, with start offsets that never go back.
    static func problem(streamID: String, epochs: [Epoch]) -> String? {
        guard isValidStreamID(streamID) else {
            return "stream id \(String(reflecting: String(streamID.prefix(80)))) is not 1-64 of 0-9 a-z A-Z - _"  // escaped: it came from outside
        }
        guard !epochs.isEmpty else { return "no epoch" }
        var previous: Epoch?
        for epoch in epochs {
            guard epoch.epoch >= 1, epoch.epoch < UInt64(Int64.max) else { return "epoch \(epoch.epoch) out of range" }
            if let previous, epoch.epoch <= previous.epoch || epoch.startOffset < previous.startOffset { return "epochs out of order" }
            previous = epoch
        }
        return nil
    }

    /// A new identity with a random id, in epoch 1 from offset 0.
    public static func random() -> StreamLineage {
        var generator = SystemRandomNumberGenerator()
        let id = (0..<2).map { _ in hex64(generator.next()) }.joined()
        return StreamLineage(streamID: id, epochs: [Epoch(epoch: 1, startOffset: 0)])
    }

    /// The epoch new entries are appended in.
    public var currentEpoch: UInt64 { epochs.last?.epoch ?? 1 }

    /// Begins the next epoch at `startOffset` (the first offset a cut gave back).
    public mutating func beginEpoch(at startOffset: UInt64) {
        let next = currentEpoch + 1
        epochs.append(Epoch(epoch: next, startOffset: max(startOffset, epochs.last?.startOffset ?? 0)))
    }

    /// The first offset cut after `epoch` was current: entries at and after it were replaced.
    /// Nil when `epoch` is the current one (nothing was cut since).
    public func cutOffset(after epoch: UInt64) -> UInt64? {
        guard let index = epochs.firstIndex(where: { $0.epoch == epoch }) else { return nil }
        return epochs[(index + 1)...].map(\.startOffset).min()
    }

    /// Whether a target that applied everything up to `offset` while this stream was in
    /// `epoch` holds a prefix of the stream as it is now.
    public func isConsistent(epoch: UInt64, offset: UInt64, endOffset: UInt64) -> Bool {
        guard epochs.contains(where: { $0.epoch == epoch }) else { return false }
        if let cut = cutOffset(after: epoch), offset >= cut { return false }
        return offset < endOffset
    }

    public var description: String { "stream id \(streamID) epoch \(currentEpoch)" }

    private static func hex64(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

// MARK: - The IDENTITY file

extension StreamLineage {
    static let fileName = "IDENTITY"
    static let firstLine = "orgsync stream identity v1"
    /// The first line of a stream that uses preset dictionaries (``usesPresetDictionaries``):
    /// releases that know only v1 refuse it, naming the format unknown.
    static let firstLineWithPresetDictionaries = "orgsync stream identity v2"
    /// An identity file is a few lines; anything larger is not one (nor a JSON form that long).
    public static let fileBytesMax = 64 << 10

    /// `orgsync stream identity v1` (`v2` once it uses preset dictionaries), `id HEX`, one
    /// `epoch N START` per epoch, then `crc32 HEX` over every byte before that line.
    func encoded() -> [UInt8] {
        let first = usesPresetDictionaries ? StreamLineage.firstLineWithPresetDictionaries : StreamLineage.firstLine
        var text = first + "\nid \(streamID)\n"
        for epoch in epochs { text += "epoch \(epoch.epoch) \(epoch.startOffset)\n" }
        var bytes = Array(text.utf8)
        let crc = Zlib.crc32(bytes)
        bytes += Array("crc32 \(String(crc, radix: 16))\n".utf8)
        return bytes
    }

    /// Parses an identity file; nil with the problem when it is not a valid one.
    static func decode(_ bytes: [UInt8]) -> Result<StreamLineage, IdentityProblem> {
        guard bytes.count <= fileBytesMax else { return .failure(IdentityProblem("over \(fileBytesMax) bytes")) }
        guard let crcLineStart = bytes.dropLast().lastIndex(of: UInt8(ascii: "\n")).map({ $0 + 1 }) else {
            return .failure(IdentityProblem("no checksum line"))
        }
        let body = Array(bytes[..<crcLineStart])
        let crcLine = String(decoding: bytes[crcLineStart...], as: UTF8.self).trimmingSuffixNewline()
        let computed = Zlib.crc32(body)
        guard crcLine.hasPrefix("crc32 "), UInt32(crcLine.dropFirst(6), radix: 16) == computed else {
            return .failure(IdentityProblem("checksum mismatch"))
        }
        let lines = String(decoding: body, as: UTF8.self).split(separator: "\n")
        let usesPresetDictionaries: Bool
        switch lines.first.map(String.init) {
        case firstLine: usesPresetDictionaries = false
        case firstLineWithPresetDictionaries: usesPresetDictionaries = true
        default: return .failure(IdentityProblem("unknown format"))
        }
        var id: String?
        var epochs: [Epoch] = []
        for line in lines.dropFirst() {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == "id", isValidStreamID(parts[1]) {
                id = String(parts[1])
            } else if parts.count == 3, parts[0] == "epoch", let epoch = UInt64(parts[1]), let start = UInt64(parts[2]) {
                epochs.append(Epoch(epoch: epoch, startOffset: start))
            } else {
                return .failure(IdentityProblem("unreadable line \"\(line.prefix(80))\""))
            }
        }
        guard let id else { return .failure(IdentityProblem("no id")) }
        if let problem = problem(streamID: id, epochs: epochs) { return .failure(IdentityProblem(problem)) }
        var lineage = StreamLineage(streamID: id, epochs: epochs)
        lineage.usesPresetDictionaries = usesPresetDictionaries
        return .success(lineage)
    }

    /// 1–64 of `0-9 a-z A-Z - _`.
    public static func isValidStreamID(_ id: some StringProtocol) -> Bool {
        (1...64).contains(id.utf8.count) && id.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2D || byte == 0x5F
        }
    }

    /// Reads the stream's identity; nil when it has none yet.
    static func load(directory: String, storage: any LogStorage) throws -> StreamLineage? {
        let path = directory + "/" + fileName
        guard storage.fileExists(path) else { return nil }
        let bytes = try storage.openFile(path, create: false).readAll()
        switch decode(bytes) {
        case .success(let lineage): return lineage
        case .failure(let problem): throw LogError.identityDamaged(path: path, problem: problem.text)
        }
    }

    /// Writes the identity crash-atomically (temporary file, flush, rename, flush directory).
    func store(directory: String, storage: any LogStorage) throws {
        let path = directory + "/" + StreamLineage.fileName
        try wrapStorage {
            try storage.replaceFile(path, with: encoded())
            try storage.syncDirectory(directory)
        }
    }

    /// The stream's identity, made (and stored) now if it has none: a new stream, or one
    /// written before streams had identities. Returns whether it was made.
    static func loadOrCreate(directory: String, storage: any LogStorage) throws -> (StreamLineage, created: Bool) {
        if let existing = try wrapStorage({ try load(directory: directory, storage: storage) }) { return (existing, false) }
        let made = StreamLineage.random()
        try made.store(directory: directory, storage: storage)
        return (made, true)
    }
}

struct IdentityProblem: Error {
    var text: String
    init(_ text: String) { self.text = text }
}

extension String {
    fileprivate func trimmingSuffixNewline() -> String {
        hasSuffix("\n") ? String(dropLast()) : self
    }
}
