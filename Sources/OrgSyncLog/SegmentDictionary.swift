#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A segment's preset zlib dictionary, as its `<base>.zdict` file holds it (see
/// ``DictionaryFile``). Batches of codec 2 (``RecordBatchHeader/Codec/zlibDictionary``) in the
/// segment's `.log` inflate with it; no other segment's batches do.
public enum SegmentDictionary: Sendable, Hashable {
    /// No `.zdict` file (`ENOENT`): the segment has no codec-2 batches.
    case absent
    case present(Zlib.PresetDictionary)
    /// The file is there but its content fails its checks: codec-2 batches of the segment
    /// cannot be inflated; the reason is for the operator. Never an I/O error (`EMFILE`,
    /// `EIO`, …): those are thrown, as they may pass.
    case unreadable(String)

    var dictionary: Zlib.PresetDictionary? {
        if case .present(let dictionary) = self { return dictionary }
        return nil
    }
}

/// The `.zdict` file: one preset dictionary, checksummed.
///
/// ```
/// offset size field (little-endian)
///      0    4 magic          "OSD1" (0x4F 0x53 0x44 0x31)
///      4    4 crc            CRC-32 of bytes [8, 16 + length)
///      8    4 dictionaryID   Adler-32 of the dictionary (zlib's DICTID in every codec-2 stream)
///     12    4 length         bytes of the dictionary, 1...32768
///     16    … dictionary
/// ```
/// The file is exactly `16 + length` bytes. It is written once, crash-atomically (temporary
/// file, fsync, rename, directory fsync), before any batch that uses it, and never rewritten.
public enum DictionaryFile {
    public static let magic: UInt32 = 0x3144_534F  // "OSD1" read as little-endian u32
    public static let headerBytes = 16
    public static let suffix = ".zdict"
    /// The largest valid file: the header and a dictionary of zlib's 32 KiB window.
    public static let fileBytesMax = headerBytes + Zlib.dictionaryBytesLimit

    public static func encode(_ dictionary: Zlib.PresetDictionary) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(headerBytes + dictionary.bytes.count)
        bytes.appendLE(magic)
        bytes.appendLE(UInt32(0))
        bytes.appendLE(dictionary.id)
        bytes.appendLE(UInt32(dictionary.bytes.count))
        bytes.append(contentsOf: dictionary.bytes)
        let crc = bytes.withUnsafeBytes { Zlib.crc32(UnsafeRawBufferPointer(rebasing: $0[8...])) }
        bytes.withUnsafeMutableBytes { $0.storeLE(crc, at: 4) }
        return bytes
    }

    /// Checks and decodes a whole `.zdict` file; the error names the first check that failed.
    public static func decode(_ bytes: [UInt8]) -> Result<Zlib.PresetDictionary, DictionaryFileError> {
        bytes.withUnsafeBytes { raw -> Result<Zlib.PresetDictionary, DictionaryFileError> in
            guard raw.count >= headerBytes else { return .failure(.init("\(raw.count) bytes, shorter than its 16-byte header")) }
            let magic: UInt32 = raw.loadLE(at: 0)
            guard magic == Self.magic else { return .failure(.init("bad magic 0x\(String(magic, radix: 16))")) }
            let length = Int(raw.loadLE(at: 12) as UInt32)
            guard (1...Zlib.dictionaryBytesLimit).contains(length) else {
                return .failure(.init("dictionary length \(length) outside 1...\(Zlib.dictionaryBytesLimit)"))
            }
            guard raw.count == headerBytes + length else {
                return .failure(.init("\(raw.count) bytes, expected \(headerBytes + length) (torn or overwritten)"))
            }
            let stored: UInt32 = raw.loadLE(at: 4)
            let computed = Zlib.crc32(UnsafeRawBufferPointer(rebasing: raw[8...]))
            guard stored == computed else {
                return .failure(.init("CRC mismatch (stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16)))"))
            }
            let dictionary = Zlib.PresetDictionary(Array(raw[headerBytes...]))
            let id: UInt32 = raw.loadLE(at: 8)
            guard dictionary.id == id else {
                return .failure(.init("dictionary id 0x\(String(id, radix: 16)) ≠ its Adler-32 0x\(String(dictionary.id, radix: 16))"))
            }
            return .success(dictionary)
        }
    }

    /// Reads the `.zdict` file at `path`: absent (the open found no file), present, or
    /// unreadable (its content fails a check, and why).
    ///
    /// - Throws: ``StorageError`` when the file could not be opened or read for another reason
    ///   than its absence: that says nothing about the dictionary, and must not be taken for a
    ///   missing or damaged one (the caller must not remember it either).
    static func load(path: String, storage: any LogStorage) throws -> SegmentDictionary {
        let file: any LogFile
        do {
            file = try storage.openFile(path, create: false)
        } catch let error as StorageError where error.errno == ENOENT {
            return .absent
        }
        defer { file.close() }
        let size = try file.size()
        // Checked before reading: a damaged or foreign file of any size is not read whole.
        guard size <= Int64(fileBytesMax) else {
            return .unreadable("\(path): \(size) bytes, more than the \(fileBytesMax) a dictionary file can hold")
        }
        var bytes: [UInt8] = []
        try file.read(at: 0, count: Int(size), into: &bytes)
        switch decode(bytes) {
        case .success(let dictionary): return .present(dictionary)
        case .failure(let error): return .unreadable("\(path): \(error.reason)")
        }
    }
}

public struct DictionaryFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    init(_ reason: String) { self.reason = reason }
    public var description: String { "bad dictionary file: \(reason)" }
}

/// The newest entries a stream wrote, framed as in a batch payload (`u32 length` + bytes),
/// oldest first: what a new preset dictionary is cut from. A pure value; the flusher feeds it.
struct DictionarySample {
    /// Size of the dictionaries cut from the sample once it is full.
    let dictionaryBytesMax: Int
    /// A new stream's first dictionary is cut once the sample holds this many bytes (or
    /// `dictionaryBytesMax` if smaller), then dictionaries twice as big as the sample grows: a
    /// 4 KiB dictionary already stores single entries at ~1.7×, and waiting for 32 KiB would
    /// leave ~120 entries of every new stream without one.
    static let firstDictionaryBytes = 4096
    private(set) var bytes: [UInt8] = []

    init(dictionaryBytesMax: Int) {
        self.dictionaryBytesMax = dictionaryBytesMax
    }

    /// Adds entries (in the order written). Keeps at most twice `dictionaryBytesMax` bytes, so
    /// that trimming the oldest is amortised; only the newest entries of a large append are read.
    mutating func note(_ entries: [[UInt8]]) {
        guard dictionaryBytesMax > 0 else { return }
        var first = entries.endIndex
        var newest = 0
        while first > entries.startIndex && newest < dictionaryBytesMax {
            first -= 1
            newest += entries[first].count + 4
        }
        for entry in entries[first...] {
            bytes.appendLE(UInt32(entry.count))
            bytes.append(contentsOf: entry)
        }
        if bytes.count > 2 * dictionaryBytesMax { bytes.removeFirst(bytes.count - dictionaryBytesMax) }
    }

    /// The size of the dictionary the sample can cut now: `firstDictionaryBytes` doubled as
    /// often as the sample allows, at most `dictionaryBytesMax`; nil before the first.
    var dictionaryBytes: Int? {
        let first = min(Self.firstDictionaryBytes, dictionaryBytesMax)
        guard first > 0, bytes.count >= first else { return nil }
        if bytes.count >= dictionaryBytesMax { return dictionaryBytesMax }
        var size = first
        while size * 2 <= bytes.count { size *= 2 }
        return size
    }

    /// The sample's newest `dictionaryBytes`, most recent last (zlib reaches the end of a
    /// dictionary with the shortest distances).
    func dictionary() -> Zlib.PresetDictionary? {
        dictionaryBytes.map { Zlib.PresetDictionary(Array(bytes.suffix($0))) }
    }

    /// Whether the sample can cut a bigger dictionary than `current` (a young stream's).
    func outgrows(_ current: Zlib.PresetDictionary) -> Bool {
        (dictionaryBytes ?? 0) > current.bytes.count
    }
}
