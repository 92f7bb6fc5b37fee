import Foundation
import OrgSyncCore
@testable import OrgSyncLog
import Testing

#if canImport(Glibc)
import Glibc
import OrgSyncTestSupport
#endif

/// The `orgsync` executable built next to the tests (or `ORGSYNC_BIN`).
func orgsyncExecutable() throws -> String {
    if let path = ProcessInfo.processInfo.environment["ORGSYNC_BIN"] { return path }
    // Next to the test binary: the build directory of this very build, whatever its scratch path.
    let sibling = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("orgsync").path
    if FileManager.default.isExecutableFile(atPath: sibling) { return sibling }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let candidates = [".build/debug/orgsync", ".build/x86_64-unknown-linux-gnu/debug/orgsync",
                      ".build/aarch64-unknown-linux-gnu/debug/orgsync", ".build/release/orgsync"]
    for candidate in candidates {
        let path = root.appendingPathComponent(candidate).path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    throw CLIMissing()
}

struct CLIMissing: Error, CustomStringConvertible {
    var description: String { "the orgsync executable is not built: run `swift build --build-tests` first, or set ORGSYNC_BIN" }
}

@Suite struct ProcessCrashTests {
    /// Workload-like entries, each distinct, as JSON lines.
    func workload(count: Int, seed: UInt64) -> [String] {
        var rng = SplitMix64(seed: seed)
        let objects = ["Account", "Contact", "Lead", "Case", "Task", "Opportunity"]
        return (0..<count).map { i in
            let object = objects[Int(rng.next() % 6)]
            let op = ["upsert", "insert", "delete"][Int(rng.next() % 3)]
            return #"{"org":"org-\#(rng.next() % 400)","object":"\#(object)","op":"\#(op)","key":"k\#(seed)-\#(i)","ts":"2026-11-25T00:00:00.\#(i % 1000)Z","fields":{"Name":"Ünïcode \#(rng.next())","Amount":\#(rng.next() % 100000)}}"#
        }
    }

    @Test func everyOffsetAcknowledgedBeforeSIGKILLIsThereWithTheSameBytes() async throws {
        let binary = try orgsyncExecutable()
        let dir = try TemporaryDirectory()
        var rng = SplitMix64(seed: 99)
        var expectedByOffset: [UInt64: String] = [:]
        let rounds = 4
        for round in 0..<rounds {
            let lines = workload(count: 40_000, seed: UInt64(round))
            let input = dir.path + "/input-\(round).jsonl"
            try (lines.joined(separator: "\n") + "\n").write(toFile: input, atomically: true, encoding: .utf8)
            // Kill after a seeded number of acknowledgements: the process is mid-append then.
            let killAfter = 20 + Int(rng.next() % 200)
            let state = dir.path + "/state"
            let acks = try await offThePool { try Self.produceAndKill(binary: binary, state: state, input: input, killAfter: killAfter) }
            #expect(acks.count >= killAfter, "round \(round): the producer died before it was killed")
            for ack in acks {
                let object = try #require(try JSONSerialization.jsonObject(with: Data(ack.utf8)) as? [String: Int])
                let first = try #require(object["first_offset"])
                let last = try #require(object["last_offset"])
                let firstLine = try #require(object["first_line"])
                #expect(last - first == (try #require(object["last_line"])) - firstLine)
                for k in 0...(last - first) { expectedByOffset[UInt64(first + k)] = lines[firstLine - 1 + k] }
            }
            // Reopen as the broker would after the crash; every acked offset holds its line.
            let log = try openLog(dataDirectory: dir.path + "/state", name: "crash")
            let maxAcked = expectedByOffset.keys.max() ?? 0
            #expect(log.endOffset > maxAcked, "round \(round): acked offset \(maxAcked) beyond end \(log.endOffset)")
            var offset: UInt64 = 0
            var checked = 0
            while offset < log.endOffset {
                let records = try log.read(from: offset, maxEntries: 5000)
                for record in records {
                    if let line = expectedByOffset[record.offset] {
                        #expect(record.payload == Array(line.utf8), "round \(round): offset \(record.offset) changed")
                        checked += 1
                    }
                }
                offset = (records.last?.offset ?? offset) + 1
            }
            #expect(checked == expectedByOffset.count, "round \(round): \(expectedByOffset.count - checked) acked entries missing")
        }
        let verify = try StreamLog.verify(dataDirectory: dir.path + "/state", stream: "crash")
        #expect(verify.problem == nil)
    }

    /// Runs `orgsync produce` into `state` and SIGKILLs it after `killAfter` acknowledgements;
    /// returns every acknowledgement it printed (blocking: run it on a thread of its own).
    static func produceAndKill(binary: String, state: String, input: String, killAfter: Int) throws -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["produce", "--data-dir", state, "--stream", "crash", "--batch-size", "25", input]
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        try process.run()
        var acks: [String] = []
        var pending = Data()
        let reader = stdout.fileHandleForReading
        while acks.count < killAfter {
            let chunk = reader.availableData
            if chunk.isEmpty { break }  // the process ended before we killed it
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                acks.append(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                pending.removeSubrange(pending.startIndex...newline)
            }
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        // Lines already in the pipe were printed before the kill: they count as acked too.
        pending.append(reader.readDataToEndOfFile())
        for line in pending.split(separator: 0x0A) where line.last == 0x7D {
            acks.append(String(decoding: line, as: UTF8.self))
        }
        return acks
    }

}
