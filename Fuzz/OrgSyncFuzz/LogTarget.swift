import Logging
@testable import OrgSyncLog
import OrgSyncTestSupport

let quietLogger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

/// A stream directory in fuzz input form, and back. The input is a mode byte (bit 0: fix the
/// CRCs of batches in `.log` files; bit 1: fix the checksums of `.keys`, IDENTITY and cursor
/// files; bit 2: append after recovery, which costs thread hand-offs), then files, each `kind u8 | base u8 | length u16 LE | bytes`. `kind % 8` picks the
/// file: 0 `.log`, 1 `.index`, 2 `.keys` of the segment with base offset `base`, 3 IDENTITY,
/// 4 a cursor (named by `base % 4`), 5 CORRUPT, 6 a `.log` with base `base * 256`, 7 an odd
/// name (`base` bytes of junk names); but a kind byte of 8 modulo 16 is the `.zdict` (preset
/// dictionary) of the segment at `base` (its length, id and CRC fixed with mode bit 1).
enum LogDirectoryInput {
    static let dataDirectory = "/d"
    static let stream = "s"
    static var directory: String { StreamLog.streamDirectory(dataDirectory: dataDirectory, name: stream) }

    static func files(_ data: [UInt8]) -> (mode: UInt8, files: [(String, [UInt8])]) {
        guard let mode = data.first else { return (0, []) }
        var files: [(String, [UInt8])] = []
        var at = 1
        while data.count - at >= 4 {
            let kind = data[at] % 16 == 8 ? 8 : data[at] % 8
            let base = data[at + 1]
            let length = Int(data[at + 2]) | Int(data[at + 3]) << 8
            at += 4
            let end = min(data.count, at + length)
            var bytes = Array(data[at..<end])
            at = end
            let name: String
            switch kind {
            case 0:
                name = Segment.fileName(UInt64(base), ".log")
                if mode & 1 != 0 { fixBatchChecksums(&bytes) }
            case 1: name = Segment.fileName(UInt64(base), ".index")
            case 2:
                name = Segment.fileName(UInt64(base), ".keys")
                if mode & 2 != 0 { fixKeysChecksum(&bytes) }
            case 3:
                name = StreamLineage.fileName
                if mode & 2 != 0 { bytes = identityWithChecksum(bytes) }
            case 4:
                name = "cursors/c\(base % 4).cursor"
                if mode & 2 != 0 { fixCursorChecksums(&bytes) }
            case 5: name = StreamLog.corruptMarkerName
            case 6:
                name = Segment.fileName(UInt64(base) * 256, ".log")
                if mode & 1 != 0 { fixBatchChecksums(&bytes) }
            case 8:
                name = Segment.fileName(UInt64(base), DictionaryFile.suffix)
                if mode & 2 != 0 { fixDictionaryFile(&bytes) }
            default: name = ["LOCK", "x.log", "00000000000000000001.log.tmp", "IDENTITY.tmp", "cursors", "junk.index"][Int(base) % 6]
            }
            files.append((name, bytes))
        }
        return (mode, files)
    }
}

func fixKeysChecksum(_ bytes: inout [UInt8]) {
    guard bytes.count >= KeysFile.headerBytes else { return }
    bytes.withUnsafeMutableBytes { raw in
        raw.storeLE(Zlib.crc32(UnsafeRawBufferPointer(rebasing: raw[8...])), at: 4)
    }
}

/// Sets a `.zdict`'s length, dictionary id and CRC from the bytes after its header.
func fixDictionaryFile(_ bytes: inout [UInt8]) {
    guard bytes.count > DictionaryFile.headerBytes, bytes.count - DictionaryFile.headerBytes <= Zlib.dictionaryBytesLimit else { return }
    let dictionary = Zlib.PresetDictionary(Array(bytes[DictionaryFile.headerBytes...]))
    bytes = DictionaryFile.encode(dictionary)
}

func identityWithChecksum(_ body: [UInt8]) -> [UInt8] {
    var bytes = body
    if bytes.last != UInt8(ascii: "\n") { bytes.append(UInt8(ascii: "\n")) }
    let crc = bytes.withUnsafeBytes { Zlib.crc32($0) }
    return bytes + Array("crc32 \(String(crc, radix: 16))\n".utf8)
}

func fixCursorChecksums(_ bytes: inout [UInt8]) {
    for position in CursorStore.slotPositions.map(Int.init) where bytes.count >= position + CursorStore.slotSize {
        bytes.withUnsafeMutableBytes { raw in
            raw.storeLE(Zlib.crc32(UnsafeRawBufferPointer(rebasing: raw[position..<(position + 20)])), at: position + 20)
        }
    }
}

func fuzzLogConfiguration() -> LogConfiguration {
    var configuration = LogConfiguration()
    configuration.preallocateBytes = 0
    configuration.segmentBytesMax = 1 << 20
    configuration.indexIntervalBytes = 64
    configuration.groupCommitWaitMicros = 0
    // Small, so that a few appends make a dictionary and codec-2 batches.
    configuration.dictionaryBytesMax = 256
    return configuration
}

/// Any stream directory: opening it recovers a log or throws; never a crash. A log that opens
/// reads densely from its start to its end, takes an append and reads it back; a full scan
/// never throws for what is in the files; repair leaves a stream that verifies clean.
@Sendable func fuzzLogDirectory(_ data: [UInt8]) {
    let (mode, files) = LogDirectoryInput.files(data)
    let storage = FaultInjectingStorage()
    let directory = LogDirectoryInput.directory
    storage.put(directory + "/LOCK", [])
    for (name, bytes) in files { storage.put(directory + "/" + name, bytes) }
    let configuration = fuzzLogConfiguration()

    if let log = try? StreamLog.open(dataDirectory: LogDirectoryInput.dataDirectory, name: LogDirectoryInput.stream,
                                     configuration: configuration, storage: storage, logger: quietLogger) {
        checkOpenedLog(log, append: mode & 4 != 0)
    }
    // What `orgsync log verify` and `log repair` do, on the same files (after the open above,
    // which may have cut a torn tail).
    guard let scanner = try? LogScanner(dataDirectory: LogDirectoryInput.dataDirectory, stream: LogDirectoryInput.stream, storage: storage),
          (try? scanner.scan()) != nil
    else { return }
    guard (try? StreamLog.repair(dataDirectory: LogDirectoryInput.dataDirectory, stream: LogDirectoryInput.stream, storage: storage)) != nil else { return }
    do {
        let summary = try StreamLog.verify(dataDirectory: LogDirectoryInput.dataDirectory, stream: LogDirectoryInput.stream, storage: storage)
        fuzzCheck(summary.problem == nil, "a repaired stream still has a problem: \(summary.problem.map { "\($0)" } ?? "")")
    } catch {
        fuzzCheck(false, "verify after repair threw: \(error)")
    }
}

private func checkOpenedLog(_ log: StreamLog, append: Bool) {
    let start = log.startOffset
    let end = log.endOffset
    fuzzCheck(start <= end, "start \(start) after end \(end)")
    var offset = start
    var readable = true
    while offset < end {
        guard let records = try? log.read(from: offset, maxEntries: 1_000) else {
            readable = false  // a damaged sealed segment: an error, and the stream is marked
            break
        }
        guard let first = records.first else {
            fuzzCheck(false, "read from \(offset) below end \(end) returned nothing")
            return
        }
        fuzzCheck(first.offset == offset, "read from \(offset) started at \(first.offset)")
        for (i, record) in records.enumerated() {
            fuzzCheck(record.offset == offset + UInt64(i), "offsets not dense at \(record.offset)")
        }
        offset += UInt64(records.count)
    }
    fuzzCheck(!readable || offset == end, "read to \(offset), end is \(end)")
    guard append else { return }
    let entry = Array(#"{"org":"o","object":"O","op":"upsert","key":"k","ts":"t","fields":{}}"#.utf8)
    let appended: AppendResult? = blocking {
        let result = try? await log.append([entry])
        return result
    }
    if let appended, readable {
        fuzzCheck(appended.firstOffset == end, "append after recovery at \(appended.firstOffset), end was \(end)")
        let back = try? log.read(from: appended.firstOffset, maxEntries: 1)
        fuzzCheck(back?.first?.payload == entry, "an append after recovery does not read back")
    }
    blocking { await log.close() }
}
