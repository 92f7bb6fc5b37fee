import Foundation
@testable import OrgSyncLog
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
}
