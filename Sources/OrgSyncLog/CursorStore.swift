import Synchronization

/// Durable per-consumer cursors of one stream (`cursors/<name>.cursor`).
///
/// ## Crash atomicity
/// A cursor file has two 24-byte slots, at bytes 0 and 4096 (separate pages and sectors):
/// `magic "OSC1" u32 | sequence u64 | offset u64 | crc32 u32` (little-endian; the CRC covers the
/// first 20 bytes). A store writes the slot *not* holding the newest value with a higher
/// sequence, then fdatasyncs. A crash at any byte can tear only the slot being written, which
/// then fails its CRC: a load takes the valid slot with the highest sequence, so it sees either
/// the old or the new value, never a mix.
public final class CursorStore: Sendable {
    public let directory: String
    private let storage: any LogStorage
    private let files: Mutex<[String: (file: any LogFile, sequence: UInt64, offset: UInt64)]>

    static let slotSize = 24
    static let slotPositions: [Int64] = [0, 4096]
    static let magic: UInt32 = 0x3143_534F  // "OSC1"

    init(directory: String, storage: any LogStorage) throws {
        self.directory = directory
        self.storage = storage
        self.files = Mutex([:])
        try storage.createDirectory(directory)
    }

    /// Names of all cursors of the stream.
    public func names() throws -> [String] {
        try wrapStorage {
            try storage.listDirectory(directory).filter { $0.hasSuffix(".cursor") }.map { String($0.dropLast(7)) }.sorted()
        }
    }

    /// The stored offset of cursor `name`, or nil if it was never stored (or both slots are bad).
    public func load(_ name: String) throws -> UInt64? {
        guard isValidName(name) else { throw LogError.invalidCursorName(name) }
        if let cached = files.withLock({ $0[name] }) { return cached.offset }
        let path = directory + "/" + name + ".cursor"
        guard storage.fileExists(path) else { return nil }
        return try wrapStorage {
            let file = try storage.openFile(path, create: false)
            guard let (sequence, offset) = try CursorStore.readNewest(file) else { return nil }
            files.withLock { $0[name] = (file, sequence, offset) }
            return offset
        }
    }

    /// All cursors with their offsets.
    public func all() throws -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for name in try names() { if let offset = try load(name) { result[name] = offset } }
        return result
    }

    /// Stores `offset` for cursor `name` durably. The caller (``StreamLog/storeCursor(_:offset:)``)
    /// checks the offset against the stream's end.
    func store(_ name: String, offset: UInt64) throws {
        guard isValidName(name) else { throw LogError.invalidCursorName(name) }
        _ = try load(name)
        try wrapStorage {
            var entry = try files.withLock { cache -> (file: any LogFile, sequence: UInt64, offset: UInt64) in
                if let existing = cache[name] { return existing }
                let created = try storage.openFile(directory + "/" + name + ".cursor", create: true)
                return (created, 0, 0)
            }
            let isNew = entry.sequence == 0
            let sequence = entry.sequence + 1
            let slot = CursorStore.slotPositions[Int(sequence % 2)]
            try entry.file.write(CursorStore.encodeSlot(sequence: sequence, offset: offset), at: slot)
            try entry.file.sync()
            if isNew { try storage.syncDirectory(directory) }
            entry.sequence = sequence
            entry.offset = offset
            files.withLock { $0[name] = entry }
        }
    }

    /// Removes cursor `name`.
    public func remove(_ name: String) throws {
        guard isValidName(name) else { throw LogError.invalidCursorName(name) }
        _ = files.withLock { $0.removeValue(forKey: name) }
        try wrapStorage {
            try storage.removeFile(directory + "/" + name + ".cursor")
            try storage.syncDirectory(directory)
        }
    }

    /// Sets every cursor beyond `end` back to `end` (after a tail was cut); returns their names.
    func clamp(to end: UInt64) throws -> [String] {
        var clamped: [String] = []
        for (name, offset) in try all() where offset > end {
            try store(name, offset: end)
            clamped.append(name)
        }
        return clamped
    }

    static func encodeSlot(sequence: UInt64, offset: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLE(magic)
        bytes.appendLE(sequence)
        bytes.appendLE(offset)
        bytes.appendLE(Zlib.crc32(bytes))
        return bytes
    }

    static func decodeSlot(_ bytes: ArraySlice<UInt8>) -> (sequence: UInt64, offset: UInt64)? {
        guard bytes.count >= slotSize else { return nil }
        let slot = Array(bytes.prefix(slotSize))
        return slot.withUnsafeBytes { raw -> (UInt64, UInt64)? in
            guard raw.loadLE(at: 0) as UInt32 == magic else { return nil }
            let crc: UInt32 = raw.loadLE(at: 20)
            guard Zlib.crc32(UnsafeRawBufferPointer(rebasing: raw[0..<20])) == crc else { return nil }
            return (raw.loadLE(at: 4), raw.loadLE(at: 12))
        }
    }

    static func readNewest(_ file: any LogFile) throws -> (sequence: UInt64, offset: UInt64)? {
        var best: (sequence: UInt64, offset: UInt64)?
        for position in slotPositions {
            var bytes: [UInt8] = []
            try file.read(at: position, count: slotSize, into: &bytes)
            if let slot = decodeSlot(bytes[...]), slot.sequence > (best?.sequence ?? 0) { best = slot }
        }
        return best
    }
}

extension StreamLog {
    /// Durably stores cursor `name` at `offset` (the next offset its consumer will read).
    ///
    /// - Throws: ``LogError/cursorBeyondEnd(name:offset:end:)`` if `offset` is past the
    ///   acknowledged end: a cursor can never claim entries the log does not hold.
    public func storeCursor(_ name: String, offset: UInt64) throws {
        let end = endOffset
        guard offset <= end else { throw LogError.cursorBeyondEnd(name: name, offset: offset, end: end) }
        try cursors.store(name, offset: offset)
    }
}

extension CursorStore {
    /// Reads every cursor of a `cursors/` directory without taking the stream's lock (for
    /// read-only tools such as `orgsync log stats`).
    public static func readAll(directory: String, storage: any LogStorage = PosixStorage()) throws -> [String: UInt64] {
        try wrapStorage {
            var result: [String: UInt64] = [:]
            for name in try storage.listDirectory(directory) where name.hasSuffix(".cursor") {
                let file = try storage.openFile(directory + "/" + name, create: false)
                if let (_, offset) = try readNewest(file) { result[String(name.dropLast(7))] = offset }
            }
            return result
        }
    }
}
