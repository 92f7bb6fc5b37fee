import Foundation
import Logging
@testable import OrgSyncLog
import Testing

/// A temporary directory removed when the value is released.
final class TemporaryDirectory {
    let path: String
    init() throws {
        let base = FileManager.default.temporaryDirectory.path
        path = base + "/orgsync-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func entry(_ i: Int, size: Int = 120) -> [UInt8] {
    var text = #"{"org":"org-\#(i % 7)","object":"Contact","op":"upsert","key":"k\#(i)","ts":"t","fields":{"n":"#
    while text.utf8.count < size { text += "x" }
    return Array((text + "\"}}").utf8)
}

func smallConfig() -> LogConfiguration {
    var config = LogConfiguration()
    config.segmentBytesMax = 16 * 1024
    config.indexIntervalBytes = 512
    config.preallocateBytes = 8 * 1024
    return config
}

/// Reads the whole stream and checks it equals `expected` (offset i holds expected[i]).
func expectContents(_ log: StreamLog, _ expected: [[UInt8]], sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(log.endOffset == UInt64(expected.count), sourceLocation: sourceLocation)
    var offset: UInt64 = 0
    while offset < log.endOffset {
        let records = try log.read(from: offset, maxEntries: 97)
        #expect(!records.isEmpty, sourceLocation: sourceLocation)
        if records.isEmpty { return }
        for record in records {
            #expect(record.offset == offset, sourceLocation: sourceLocation)
            #expect(record.payload == expected[Int(offset)], "offset \(offset)", sourceLocation: sourceLocation)
            offset += 1
        }
    }
}

/// Opens a log whose logger stays quiet: tests that inject faults would otherwise fill the
/// output with the errors they provoke on purpose.
func openLog(
    dataDirectory: String, name: String, configuration: LogConfiguration = LogConfiguration(),
    storage: any LogStorage = PosixStorage(), clock: @escaping @Sendable () -> Int64 = wallClockMs
) throws -> StreamLog {
    try StreamLog.open(
        dataDirectory: dataDirectory, name: name, configuration: configuration, storage: storage,
        logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), clock: clock)
}

