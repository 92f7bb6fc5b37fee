import Foundation
import OrgSyncLog
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The three ways acknowledged entries were silently never applied before targets stored a
/// stream identity with their offset, each against the real `orgsync serve` and a SQLite target:
/// a repair that cut the stream, a new data directory on an existing target, and a second broker
/// with another stream but the same link name and target. Each must now diverge, apply nothing,
/// say so, and apply every entry once an operator resets the link.
@Suite(.serialized) struct DivergedLinkProcessTests {
    struct Setup {
        let directory: String
        let target: String

        init() throws {
            directory = FileManager.default.temporaryDirectory.path + "/orgsync-diverged-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            target = directory + "/target.sqlite"
        }

        /// A configuration with small segments, a link `demo` into the shared target file.
        func config(_ name: String, stream: String = "events") throws -> String {
            let path = directory + "/" + name + ".yaml"
            try """
            auth: { enabled: false }
            streams: [ { name: \(stream), segment_bytes_max: 4096 } ]
            links:
              - name: demo
                stream: \(stream)
                adapter: sqlite
                settings: { path: \(target) }
                supervisor: { probe_threshold: 1, verify_interval_ms: 50, backoff_base_ms: 50, backoff_cap_ms: 200 }
            """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        func start(_ config: String, dataDirectory: String) throws -> BrokerProcess {
            try BrokerProcess(arguments: ["--config", config, "--data-dir", directory + "/" + dataDirectory, "--port", "0"])
        }

        func cleanUp() { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Appends `count` inserts with keys `prefix-i`, in requests of 40.
    func append(_ broker: BrokerProcess, prefix: String, count: Int, stream: String = "events") async throws {
        var sent = 0
        while sent < count {
            let lines = (sent..<min(count, sent + 40)).map {
                // A random pad, so that the batches do not compress to nothing and segments roll.
                #"{"org":"o","object":"Lead","op":"insert","key":"\#(prefix)-\#($0)","ts":"t","fields":{"N":\#($0),"Pad":"\#(UUID().uuidString + UUID().uuidString)"}}"#
            }
            let (status, _) = try await post("http://127.0.0.1:\(broker.port)/v1/streams/\(stream)/entries",
                                             body: Data(lines.joined(separator: "\n").utf8), contentType: "application/x-ndjson")
            try #require(status == 201)
            sent += lines.count
        }
    }

    func linkStatus(_ broker: BrokerProcess) async throws -> [String: Any] {
        let (status, body) = try await get("http://127.0.0.1:\(broker.port)/v1/links/demo")
        try #require(status == 200)
        return try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
    }

    /// Polls the link's status until `condition` holds, at most `timeoutSeconds`.
    func waitForLink(_ broker: BrokerProcess, _ what: String, timeoutSeconds: Double = 30,
                     _ condition: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while true {
            let status = try await linkStatus(broker)
            if condition(status) { return status }
            guard Date() < deadline else { throw ProcessError("link never \(what): \(status)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func rows(_ setup: Setup, prefix: String) throws -> Int {
        try sqliteCount(setup.target, "SELECT count(*) FROM Lead WHERE key LIKE '\(prefix)-%'")
    }

    func run(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try orgsyncExecutable())
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    @Test func aRepairThatCutAppliedEntriesDivergesUntilReset() async throws {
        let setup = try Setup()
        defer { setup.cleanUp() }
        let config = try setup.config("a")
        do {
            let broker = try setup.start(config, dataDirectory: "a")
            try await append(broker, prefix: "old", count: 400)
            _ = try await waitForLink(broker, "applied 400") { ($0["cursor"] as? Int) == 400 }
            #expect(broker.terminate() == 0)
        }
        // Damage an early segment, let `log verify` find it and `log repair` cut there.
        let streamDirectory = setup.directory + "/a/streams/events"
        let segments = try FileManager.default.contentsOfDirectory(atPath: streamDirectory).filter { $0.hasSuffix(".log") }.sorted()
        try #require(segments.count > 3)
        let damaged = try #require(FileHandle(forUpdatingAtPath: streamDirectory + "/" + segments[1]))
        try damaged.seek(toOffset: 100)
        let byte = try #require(try damaged.read(upToCount: 1)?.first)
        try damaged.seek(toOffset: 100)
        try damaged.write(contentsOf: Data([byte ^ 0xFF]))
        try damaged.close()
        let dataDirectory = setup.directory + "/a"
        #expect(try run(["log", "verify", "--data-dir", dataDirectory, "--stream", "events"]) == 1)
        #expect(try run(["log", "repair", "--data-dir", dataDirectory, "--stream", "events", "--yes"]) == 0)
        let log = try StreamLog.open(dataDirectory: dataDirectory, name: "events")
        let cut = log.endOffset
        #expect(log.lineage.currentEpoch == 2, "a repair that cut acknowledged entries begins a new epoch")
        await log.close()
        try #require(cut < 400)

        let broker = try setup.start(config, dataDirectory: "a")
        try await append(broker, prefix: "new", count: 100)
        let diverged = try await waitForLink(broker, "diverged") { ($0["state"] as? String) == "diverged" }
        #expect((diverged["lag"] as? Int) == 100, "a diverged link never reports lag 0 with entries missing")
        #expect((diverged["last_error"] as? String)?.contains("cut by a repair") == true)
        #expect(try rows(setup, prefix: "new") == 0)
        // Resume does not end it; a reset from the cut replays the new entries.
        let (resumeStatus, _) = try await post("http://127.0.0.1:\(broker.port)/v1/links/demo/resume", body: Data(), contentType: "application/json")
        #expect(resumeStatus == 409)
        let (resetStatus, _) = try await post("http://127.0.0.1:\(broker.port)/v1/links/demo/reset?from=\(cut)", body: Data(),
                                              contentType: "application/json")
        #expect(resetStatus == 200)
        _ = try await waitForLink(broker, "drained") { ($0["lag"] as? Int) == 0 && ($0["state"] as? String) == "active" }
        #expect(try rows(setup, prefix: "new") == 100, "every new entry reached the target")
        #expect(broker.terminate() == 0)
    }

    @Test func aNewDataDirectoryOnAnExistingTargetDiverges() async throws {
        let setup = try Setup()
        defer { setup.cleanUp() }
        let config = try setup.config("b")
        do {
            let broker = try setup.start(config, dataDirectory: "first")
            try await append(broker, prefix: "first", count: 400)
            _ = try await waitForLink(broker, "applied 400") { ($0["cursor"] as? Int) == 400 }
            #expect(broker.terminate() == 0)
        }
        let broker = try setup.start(config, dataDirectory: "second")
        try await append(broker, prefix: "second", count: 100)
        let diverged = try await waitForLink(broker, "diverged") { ($0["state"] as? String) == "diverged" }
        #expect((diverged["lag"] as? Int) == 100)
        #expect((diverged["last_error"] as? String)?.contains("another stream") == true)
        #expect(try rows(setup, prefix: "second") == 0)
        let (status, _) = try await post("http://127.0.0.1:\(broker.port)/v1/links/demo/reset?from=0", body: Data(), contentType: "application/json")
        #expect(status == 200)
        _ = try await waitForLink(broker, "drained") { ($0["lag"] as? Int) == 0 && ($0["state"] as? String) == "active" }
        #expect(try rows(setup, prefix: "second") == 100)
        #expect(broker.terminate() == 0)
    }

    @Test func aSecondBrokerWithAnotherStreamButTheSameLinkDiverges() async throws {
        let setup = try Setup()
        defer { setup.cleanUp() }
        let first = try setup.start(try setup.config("c1"), dataDirectory: "c1")
        try await append(first, prefix: "one", count: 100)
        _ = try await waitForLink(first, "applied 100") { ($0["cursor"] as? Int) == 100 }
        #expect(first.terminate() == 0)
        let second = try setup.start(try setup.config("c2", stream: "orders"), dataDirectory: "c2")
        try await append(second, prefix: "two", count: 50, stream: "orders")
        _ = try await waitForLink(second, "diverged") { ($0["state"] as? String) == "diverged" }
        #expect(try rows(setup, prefix: "two") == 0, "nothing of another stream is applied over this target's position")
        #expect(second.terminate() == 0)
    }
}
