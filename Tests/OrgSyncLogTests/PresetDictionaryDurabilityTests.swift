import Foundation
@testable import OrgSyncLog
import OrgSyncTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Preset dictionaries under crashes, I/O errors, retention and downgrades: what a `.zdict`
/// on disk may be, and what the log must never do with one.
@Suite struct PresetDictionaryDurabilityTests {
    static let root = "/data"
    static let directory = StreamLog.streamDirectory(dataDirectory: root, name: "s")
    static let firstDictionaryPath = directory + "/" + Segment.fileName(0, DictionaryFile.suffix)

    static func config() -> LogConfiguration { PresetDictionaryTests.dictionaryConfig() }

    static func codec2Batches(_ storage: FaultInjectingStorage) throws -> Int {
        var count = 0
        try LogScanner(dataDirectory: root, stream: "s", storage: storage).scan(visit: { batch in
            if batch.header.codec == .zlibDictionary { count += 1 }
            return true
        })
        return count
    }

    // MARK: A `.zdict` whose rename was never made durable

    @Test func aDictionaryFoundOnDiskIsMadeDurableBeforeABatchUsesIt() async throws {
        let storage = FaultInjectingStorage()
        var written: [[UInt8]] = []
        do {
            let log = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
            written += try await PresetDictionaryTests.appendOneByOne(log, 0..<3)
            await log.close()
        }
        // A process that already used dictionaries (its identity says so) renamed the active
        // segment's `.zdict` into place and was killed before it synced the directory.
        var lineage = try #require(try StreamLineage.load(directory: Self.directory, storage: storage))
        lineage.usesPresetDictionaries = true
        try lineage.store(directory: Self.directory, storage: storage)
        try storage.replaceFile(Self.firstDictionaryPath, with: DictionaryFile.encode(PresetDictionaryTests.dictionary))
        // Restarted: the file is visible (page cache); batches written with it are acknowledged.
        do {
            let log = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
            written += try await PresetDictionaryTests.appendOneByOne(log, 3..<20)
            await log.close()
        }
        #expect(try Self.codec2Batches(storage) > 0)
        // A power cut: only what was made durable survives.
        storage.crash()
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
        try expectContents(log, written)
        await log.close()
    }

    // MARK: I/O errors are not damage

    /// A stream of one segment whose tail is codec-2 batches, written on `storage`.
    static func streamWithDictionaryBatches(_ storage: FaultInjectingStorage, count: Int = 300) async throws -> [[UInt8]] {
        let log = try openLog(dataDirectory: root, name: "s", configuration: config(), storage: storage)
        let written = try await PresetDictionaryTests.appendOneByOne(log, 0..<count)
        await log.close()
        #expect(try codec2Batches(storage) > count / 2)
        return written
    }

    static func corruptMarkerExists(_ storage: FaultInjectingStorage) -> Bool {
        storage.fileExists(directory + "/" + StreamLog.corruptMarkerName)
    }

    @Test(arguments: [EMFILE, EIO])
    func aFailedReadOfTheDictionaryIsAStorageErrorAndTheNextReadSucceeds(errno code: Int32) async throws {
        let storage = FaultInjectingStorage()
        let written = try await Self.streamWithDictionaryBatches(storage)
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
        // Reopened, the dictionary was read by recovery: a new segment object for reads would
        // read it again. Forget it, as a sealed segment not yet read would have.
        let segment = log.state.withLock { $0.segments[0] }
        segment.forgetDictionaryForTesting()
        storage.failNext(1, pathSuffix: DictionaryFile.suffix, errno: code)
        let error = #expect(throws: LogError.self) { _ = try log.read(from: 0, maxEntries: 1_000) }
        guard case .storage(let storageError) = error else {
            Issue.record("expected a storage error, got \(String(describing: error))")
            return
        }
        #expect(storageError.errno == code)
        #expect(!Self.corruptMarkerExists(storage), "a transient I/O error marked the stream corrupt")
        try expectContents(log, written)
        await log.close()
    }

    @Test func aFailedReadOfTheDictionaryAtOpenIsAStorageErrorNotCorruption() async throws {
        let storage = FaultInjectingStorage()
        let written = try await Self.streamWithDictionaryBatches(storage)
        storage.failNext(1, pathSuffix: DictionaryFile.suffix, errno: EIO)
        let error = #expect(throws: LogError.self) {
            _ = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
        }
        guard case .storage(let storageError) = error else {
            Issue.record("expected a storage error, got \(String(describing: error))")
            return
        }
        #expect(storageError.errno == EIO)
        #expect(!Self.corruptMarkerExists(storage), "a transient I/O error marked the stream corrupt")
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
        try expectContents(log, written)
        await log.close()
    }

    @Test func aWriterThatCannotReadTheDictionaryUsesPlainZlibAndNeverReplacesIt() async throws {
        let storage = FaultInjectingStorage()
        var written = try await Self.streamWithDictionaryBatches(storage)
        let before = storage.fileBytes(Self.firstDictionaryPath)
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
        let segment = log.state.withLock { $0.segments[0] }
        segment.forgetDictionaryForTesting()
        storage.failNext(3, pathSuffix: DictionaryFile.suffix, errno: EIO)
        written += try await PresetDictionaryTests.appendOneByOne(log, 300..<320)
        try expectContents(log, written)
        // Even told "absent" (as a stat that failed once said), the writer never renames a new
        // dictionary over the one there: earlier codec-2 batches need it.
        segment.forgetDictionaryForTesting(as: .absent)
        let error = #expect(throws: StorageError.self) { try segment.installDictionary(Zlib.PresetDictionary(Array("another".utf8))) }
        #expect(error?.errno == EEXIST)
        #expect(storage.fileBytes(Self.firstDictionaryPath) == before)
        #expect(try segment.dictionary() == .present(PresetDictionaryTests.dictionaryFromFile(before)))
        written += try await PresetDictionaryTests.appendOneByOne(log, 320..<330)
        await log.close()
        #expect(storage.fileBytes(Self.firstDictionaryPath) == before)
        #expect(try StreamLog.verify(dataDirectory: Self.root, stream: "s", storage: storage).problem == nil)
        let reopened = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
        try expectContents(reopened, written)
        await reopened.close()
    }

    // MARK: Retention under a reader

    /// A stream whose first segment is sealed and holds codec-2 batches (not yet read by the
    /// log opened on it); returns the entries and the first offset of such a batch in it.
    static func streamWithASealedDictionarySegment(_ storage: FaultInjectingStorage) async throws -> ([[UInt8]], UInt64) {
        var config = config()
        config.segmentBytesMax = 16 * 1024
        let log = try openLog(dataDirectory: root, name: "s", configuration: config, storage: storage)
        let written = try await PresetDictionaryTests.appendOneByOne(log, 0..<400)
        #expect(log.info().segmentCount >= 2)
        await log.close()
        var first: UInt64?
        try LogScanner(dataDirectory: root, stream: "s", storage: storage).scan(visit: { batch in
            if batch.segment == Segment.fileName(0, ".log") && batch.header.codec == .zlibDictionary { first = batch.header.baseOffset }
            return first == nil
        })
        return (written, try #require(first))
    }

    @Test func aReaderRacingRetentionGetsOffsetOutOfRangeNotCorruption() async throws {
        let storage = FaultInjectingStorage()
        let (_, codec2Offset) = try await Self.streamWithASealedDictionarySegment(storage)
        var config = Self.config()
        config.segmentBytesMax = 16 * 1024
        config.retentionBytesMax = 1
        config.retentionDropsUnconsumed = true
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config, storage: storage)
        // Between the reader's read of the batch and of its dictionary, retention deletes the
        // segment (`.log`, `.zdict` and all).
        storage.onNextOpen(pathSuffix: Self.firstDictionaryPath) { _ = try? log.applyRetention() }
        let error = #expect(throws: LogError.self) { _ = try log.read(from: codec2Offset, maxEntries: 10) }
        guard case .offsetOutOfRange(let requested, let start, _) = error else {
            Issue.record("expected offset out of range, got \(String(describing: error))")
            return
        }
        #expect(requested == codec2Offset && start > codec2Offset)
        #expect(!storage.fileExists(Self.firstDictionaryPath), "retention did not run")
        #expect(!Self.corruptMarkerExists(storage), "a segment retired under a reader marked the stream corrupt")
        await log.close()
    }

    @Test func verifyRacingRetentionIsAStorageErrorNotCorruption() async throws {
        let storage = FaultInjectingStorage()
        _ = try await Self.streamWithASealedDictionarySegment(storage)
        // `log verify` next to a broker whose retention deletes the segment it is scanning.
        storage.onNextOpen(pathSuffix: Self.firstDictionaryPath) {
            try? StreamLog.removeSegmentFiles(directory: Self.directory, base: 0, storage: storage)
        }
        let error = #expect(throws: LogError.self) { _ = try StreamLog.verify(dataDirectory: Self.root, stream: "s", storage: storage) }
        guard case .storage(let storageError) = error else {
            Issue.record("expected a storage error, got \(String(describing: error))")
            return
        }
        #expect(storageError.errno == ENOENT)
        #expect(!Self.corruptMarkerExists(storage), "a segment deleted under verify marked the stream corrupt")
    }

    // MARK: Downgrades

    static func identityFirstLine(_ storage: FaultInjectingStorage) -> String {
        String(decoding: storage.fileBytes(directory + "/IDENTITY"), as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
    }

    @Test func theIdentityIsVersion2DurablyBeforeTheFirstCodec2BatchAndOnlyThen() async throws {
        let storage = FaultInjectingStorage()
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
        var written: [[UInt8]] = []
        // No dictionary yet: the identity stays the one every release reads.
        while !storage.fileExists(Self.firstDictionaryPath) && written.count < 200 {
            #expect(Self.identityFirstLine(storage) == "orgsync stream identity v1")
            written += try await PresetDictionaryTests.appendOneByOne(log, written.count..<(written.count + 1))
        }
        #expect(try Self.codec2Batches(storage) == 1, "the append that made the dictionary is the first codec-2 batch")
        // A power cut right after that acknowledgement: the identity that survives refuses
        // releases without codec 2 (they know only v1, and say "unknown format").
        storage.crash()
        #expect(Self.identityFirstLine(storage) == "orgsync stream identity v2")
        let lineage = try #require(try StreamLineage.load(directory: Self.directory, storage: storage))
        #expect(lineage.usesPresetDictionaries && lineage.streamID == log.lineage.streamID)
        let reopened = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
        try expectContents(reopened, written)
        await reopened.close()
    }

    @Test func aStreamWithoutCodec2BatchesKeepsTheVersion1Identity() async throws {
        let storage = FaultInjectingStorage()
        var config = Self.config()
        config.dictionaryBytesMax = 0
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config, storage: storage)
        _ = try await PresetDictionaryTests.appendOneByOne(log, 0..<200)
        await log.close()
        #expect(try Self.codec2Batches(storage) == 0)
        #expect(Self.identityFirstLine(storage) == "orgsync stream identity v1")
        #expect(try StreamLineage.load(directory: Self.directory, storage: storage)?.usesPresetDictionaries == false)
    }

    @Test func aStreamWithDictionariesAndAVersion1IdentityIsMarkedWhenOpened() async throws {
        let storage = FaultInjectingStorage()
        _ = try await Self.streamWithDictionaryBatches(storage)
        // As the build before this fix left it: codec-2 batches, a v1 identity.
        var lineage = try #require(try StreamLineage.load(directory: Self.directory, storage: storage))
        lineage.usesPresetDictionaries = false
        try lineage.store(directory: Self.directory, storage: storage)
        #expect(Self.identityFirstLine(storage) == "orgsync stream identity v1")
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: Self.config(), storage: storage)
        #expect(Self.identityFirstLine(storage) == "orgsync stream identity v2")
        #expect(log.lineage.usesPresetDictionaries)
        await log.close()
    }

    @Test func theIdentityRoundTripsItsVersion() throws {
        var lineage = StreamLineage.random()
        lineage.beginEpoch(at: 7)
        #expect(try StreamLineage.decode(lineage.encoded()).get() == lineage)
        lineage.usesPresetDictionaries = true
        #expect(try StreamLineage.decode(lineage.encoded()).get() == lineage)
        var unknown = Array("orgsync stream identity v3\nid ab\nepoch 1 0\n".utf8)
        unknown += Array("crc32 \(String(Zlib.crc32(unknown), radix: 16))\n".utf8)
        guard case .failure(let problem) = StreamLineage.decode(unknown) else {
            Issue.record("a v3 identity was accepted")
            return
        }
        #expect(problem.text == "unknown format")
    }

    // MARK: Smaller points

    @Test func anOversizedDictionaryFileIsUnreadableWithoutBeingReadWhole() throws {
        let storage = FaultInjectingStorage()
        let path = Self.directory + "/big.zdict"
        var bytes = DictionaryFile.encode(Zlib.PresetDictionary([UInt8](repeating: 7, count: Zlib.dictionaryBytesLimit)))
        #expect(try DictionaryFile.load(path: path, storage: storage) == .absent)
        let file = try storage.openFile(path, create: true)
        try file.write(bytes, at: 0)
        #expect(try DictionaryFile.load(path: path, storage: storage).dictionary != nil, "the largest valid file")
        bytes.append(0)
        try file.write(bytes, at: 0)
        guard case .unreadable(let reason) = try DictionaryFile.load(path: path, storage: storage) else {
            Issue.record("an oversized file was accepted")
            return
        }
        #expect(reason.contains("\(DictionaryFile.headerBytes + Zlib.dictionaryBytesLimit + 1) bytes, more than"), "\(reason)")
    }

    @Test func retentionSyncsTheDirectoryBetweenASegmentsLogAndItsDictionary() async throws {
        let storage = FaultInjectingStorage()
        _ = try await Self.streamWithASealedDictionarySegment(storage)
        var config = Self.config()
        config.segmentBytesMax = 16 * 1024
        config.retentionBytesMax = 1
        config.retentionDropsUnconsumed = true
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config, storage: storage)
        storage.clearOperations()
        let report = try log.applyRetention()
        #expect(!report.deletedSegments.isEmpty)
        let operations = storage.operations()
        for name in report.deletedSegments {
            let base = name.dropLast(4)
            let log = try #require(operations.firstIndex(of: "remove \(base).log"))
            let dictionary = try #require(operations.firstIndex(of: "remove \(base).zdict"))
            #expect(operations[log..<dictionary].contains("syncdir s"), "\(operations)")
        }
        await log.close()
    }

    @Test func noDictionaryIsWrittenWhenNoBatchMayUseOne() async throws {
        let storage = FaultInjectingStorage()
        var config = Self.config()
        config.dictionaryPayloadBytesMax = 0
        let log = try openLog(dataDirectory: Self.root, name: "s", configuration: config, storage: storage)
        let written = try await PresetDictionaryTests.appendOneByOne(log, 0..<200)
        try expectContents(log, written)
        await log.close()
        #expect(!storage.filePaths().contains(where: { $0.hasSuffix(DictionaryFile.suffix) }), "\(storage.filePaths())")
        #expect(Self.identityFirstLine(storage) == "orgsync stream identity v1")
    }

    @Test func aCodec2StreamWithACorruptZlibHeaderSaysSo() throws {
        let deflater = try Zlib.PresetDeflater(dictionary: PresetDictionaryTests.dictionary, level: 6)
        let input = entry(5, size: 200)
        var packed = try deflater.compress(input)
        packed[0] ^= 0x0F  // CMF: no longer deflate, and the header check fails
        let error = #expect(throws: Zlib.Error.self) {
            var out: [UInt8] = []
            try packed.withUnsafeBytes { try Zlib.decompress($0, expectedCount: input.count, dictionary: PresetDictionaryTests.dictionary, into: &out) }
        }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.contains("corrupt zlib stream") && !text.contains("names no preset dictionary"), "\(text)")
    }
}
