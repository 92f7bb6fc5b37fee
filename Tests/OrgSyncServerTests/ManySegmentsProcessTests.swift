import Foundation
import OrgSyncLog
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 12: a stream of thousands of segments under a low open-file limit. The broker used to
/// hold one descriptor per segment from start to exit, so 1 075 segments under a soft limit of
/// 1 024 made `serve` exit 3 at start.
@Suite(.serialized) struct ManySegmentsProcessTests {
    static let segmentCount = 5000
    static let prlimit = "/usr/bin/prlimit"

    /// Segment `i` holds one insert at offset `i`, written directly in the on-disk format (the
    /// log's own rolls would fsync 5 000 times). Two days old: out of the idempotency window.
    func writeSegments(_ streamDirectory: String) throws {
        try FileManager.default.createDirectory(atPath: streamDirectory, withIntermediateDirectories: true)
        let timestampMs = Int64(Date().timeIntervalSince1970 * 1000) - 2 * 86_400_000
        var bytes: [UInt8] = []
        var scratch: [UInt8] = []
        for i in 0..<Self.segmentCount {
            bytes.removeAll(keepingCapacity: true)
            let line = #"{"org":"o","object":"Lead","op":"insert","key":"s-\#(i)","ts":"t"}"#
            try RecordBatchCodec.encode(entries: [Array(line.utf8)], baseOffset: UInt64(i), timestampMs: timestampMs,
                                        compressionLevel: nil, into: &bytes, scratch: &scratch)
            let digits = String(i)
            let name = String(repeating: "0", count: 20 - digits.count) + digits + ".log"
            // Plain open/write/close: Foundation's file writes cost milliseconds each, 5 000 times.
            let path = streamDirectory + "/" + name
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            try #require(fd >= 0, "open \(path): errno \(errno)")
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
            try #require(written == bytes.count, "write \(path)")
        }
    }

    /// Descriptors of process `pid` naming files under `directory`.
    func openDescriptors(pid: Int32, under directory: String) throws -> Int {
        let fds = "/proc/\(pid)/fd"
        return try FileManager.default.contentsOfDirectory(atPath: fds).filter { fd in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: fds + "/" + fd))?.hasPrefix(directory + "/") ?? false
        }.count
    }

    @Test func fiveThousandSegmentsUnderAnOpenFileLimitOf256StartServeTheOldestAndAppend() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.prlimit), "util-linux prlimit is needed")
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-segments-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let streamDirectory = directory + "/state/streams/events"
        try writeSegments(streamDirectory)
        let target = directory + "/target.sqlite"
        let config = directory + "/orgsync.yaml"
        try """
        auth: { enabled: false }
        streams: [ { name: events } ]
        links:
          - name: demo
            stream: events
            adapter: sqlite
            settings: { path: \(target) }
        """.write(toFile: config, atomically: true, encoding: .utf8)

        let broker = try await BrokerProcess.start(
            arguments: ["--config", config, "--data-dir", directory + "/state", "--port", "0"],
            launcher: [Self.prlimit, "--nofile=256:256"], timeoutSeconds: 60)
        let base = "http://127.0.0.1:\(broker.port)"
        // The link reads from offset 0 (the oldest segment) through every one of them.
        let deadline = Date().addingTimeInterval(120)
        var cursor = -1
        while cursor < Self.segmentCount {
            let (status, body) = try await get(base + "/v1/links/demo")
            try #require(status == 200)
            cursor = (try JSONSerialization.jsonObject(with: body) as? [String: Any])?["cursor"] as? Int ?? -1
            guard Date() < deadline else { throw ProcessError("the link applied \(cursor) of \(Self.segmentCount) entries") }
            if cursor < Self.segmentCount { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(try await sqliteCount(target, "SELECT count(*) FROM Lead WHERE key = 's-0'") == 1, "the oldest segment was served")
        #expect(try await sqliteCount(target, "SELECT count(*) FROM Lead") == Self.segmentCount)
        // Having read all 5 000, the broker holds a bounded number of the stream's files open
        // (the cache of 64 sealed segments, the active one, index and lock), not one per segment.
        let held = try openDescriptors(pid: broker.process.processIdentifier, under: streamDirectory)
        #expect(held >= 2 && held <= 64 + 8, "descriptors on the stream's files: \(held)")

        let line = #"{"org":"o","object":"Lead","op":"insert","key":"new","ts":"t"}"#
        let (status, body) = try await post(base + "/v1/streams/events/entries", body: Data(line.utf8), contentType: "application/json")
        #expect(status == 201)
        #expect((try JSONSerialization.jsonObject(with: body) as? [String: Any])?["first_offset"] as? Int == Self.segmentCount)
        #expect(await broker.terminate() == 0)
    }
}
