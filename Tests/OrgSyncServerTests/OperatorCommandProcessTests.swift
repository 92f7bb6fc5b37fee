import Foundation
import Testing

#if canImport(Glibc)
import Glibc
import OrgSyncTestSupport
#endif

/// `orgsync links resume --wait` and `orgsync status --watch` against a real `orgsync serve`.
@Suite(.serialized) struct OperatorCommandProcessTests {
    /// A broker with three links on `events`: `good` (SQLite, verifies with 2 probes 300 ms apart),
    /// `slow` (SQLite, its second probe 10 minutes after the first) and `down` (a webhook whose
    /// receiver does not listen, so every probe fails).
    static func startBroker(_ directory: String) async throws -> BrokerProcess {
        let (socket, closedPort) = try listeningSocket()
        close(socket)  // nothing listens there now: the webhook's probes are refused
        let config = directory + "/orgsync.yaml"
        try """
        auth: { enabled: false }
        streams: [ { name: events } ]
        links:
          - name: good
            stream: events
            adapter: sqlite
            settings: { path: \(directory)/good.sqlite }
            supervisor: { probe_threshold: 2, verify_interval_ms: 300, verify_window_ms: 10000 }
          - name: slow
            stream: events
            adapter: sqlite
            settings: { path: \(directory)/slow.sqlite }
            supervisor: { probe_threshold: 3, verify_interval_ms: 600000, verify_window_ms: 1200000 }
          - name: down
            stream: events
            adapter: webhook
            settings: { url: "http://127.0.0.1:\(closedPort)/hook", timeout_ms: "1000" }
            supervisor: { probe_threshold: 2, verify_interval_ms: 50, backoff_base_ms: 60000, backoff_cap_ms: 60000 }
        """.write(toFile: config, atomically: true, encoding: .utf8)
        return try await BrokerProcess.start(arguments: ["--config", config, "--data-dir", directory + "/state", "--port", "0"])
    }

    @Test func resumeWaitFollowsVerifyingUntilActiveOrSaysWhyNot() async throws {
        let directory = try CommandLineTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let broker = try await Self.startBroker(directory)
        let url = ["--url", "http://127.0.0.1:\(broker.port)"]
        for link in ["good", "slow", "down"] {
            let paused = try await CommandLineTests.run(["links", "suspend", link] + url)
            #expect(paused.status == 0, "\(link): \(paused.standardError)")
        }

        let good = try await CommandLineTests.run(["links", "resume", "good", "--wait"] + url)
        #expect(good.status == 0, "\(good.standardError)")
        let lines = good.standardOutput.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("good: verifying ") == true, "progress first: \(lines)")
        #expect(lines.last?.hasPrefix("good: active (cursor ") == true, "ends active: \(lines)")

        let down = try await CommandLineTests.run(["links", "resume", "down", "--wait=30s"] + url)
        #expect(down.status == 1, "\(down.standardOutput) \(down.standardError)")
        #expect(down.standardError.contains("orgsync links resume: down: went back to suspended"), "\(down.standardError)")
        #expect(down.standardError.contains("127.0.0.1"), "the reason names the target: \(down.standardError)")

        let slow = try await CommandLineTests.run(["links", "resume", "slow", "--wait=3s"] + url)
        #expect(slow.status == 1, "\(slow.standardOutput) \(slow.standardError)")
        #expect(slow.standardError.contains("slow: not active after 3 s (still verifying 1/3)"), "\(slow.standardError)")
        #expect(slow.standardOutput.contains("slow: verifying"), "\(slow.standardOutput)")

        let bad = try await CommandLineTests.run(["links", "resume", "good", "--wait=soon"] + url)
        #expect(bad.status == 2, "a timeout that is not one is a usage error: \(bad.standardError)")
        #expect(bad.standardError.contains("--wait=soon: not a timeout"), "\(bad.standardError)")
        let help = try await CommandLineTests.run(["links", "resume", "--help"])
        #expect(help.status == 0)
        #expect(help.standardOutput.contains("--wait"), "\(help.standardOutput)")
        #expect(help.standardOutput.contains("default as flag: 60s"), "the default timeout is said: \(help.standardOutput)")
        #expect(await broker.terminate() == 0)
    }

    /// `status --watch` draws the table again every interval and ends with exit 0 on SIGINT.
    @Test func statusWatchRedrawsUntilInterrupted() async throws {
        let directory = try CommandLineTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let broker = try await Self.startBroker(directory)
        let outputPath = directory + "/watch.out"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        let watcher = Process()
        watcher.executableURL = URL(fileURLWithPath: try orgsyncExecutable())
        watcher.arguments = ["status", "--watch", "--interval-ms", "100", "--url", "http://127.0.0.1:\(broker.port)"]
        watcher.standardOutput = FileHandle(forWritingAtPath: outputPath)
        watcher.standardError = FileHandle(forWritingAtPath: directory + "/watch.err") ?? FileHandle.nullDevice
        let exited = DispatchSemaphore(value: 0)
        watcher.terminationHandler = { _ in exited.signal() }
        try watcher.run()
        defer { if watcher.isRunning { kill(watcher.processIdentifier, SIGKILL) } }
        func frames() -> Int {
            let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
            return text.components(separatedBy: "\nLINK ").count - 1
        }
        // The frames are another process's output: a bounded poll of the file.
        let deadline = Date().addingTimeInterval(30)
        while frames() < 3, Date() < deadline, watcher.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        #expect(frames() >= 3, "three tables drawn")
        kill(watcher.processIdentifier, SIGINT)
        let stopped = await offThePool { exited.wait(timeout: .now() + .seconds(10)) == .success }
        #expect(stopped, "Ctrl-C ends the watch")
        #expect(watcher.terminationStatus == 0, "and cleanly")
        let text = try String(contentsOfFile: outputPath, encoding: .utf8)
        #expect(text.contains("orgsync status of http://127.0.0.1:\(broker.port) at "), "\(text)")
        #expect(!text.contains("\u{1B}["), "no terminal escapes in a pipe")
        for link in ["good", "slow", "down"] { #expect(text.contains("\n\(link) "), "\(link) in the table") }

        let misuse = try await CommandLineTests.run(["status", "--interval-ms", "100"])
        #expect(misuse.status == 2, "--interval-ms without --watch: \(misuse.standardError)")
        let tooFast = try await CommandLineTests.run(["status", "--watch", "--interval-ms", "1"])
        #expect(tooFast.status == 2, "\(tooFast.standardError)")
        #expect(await broker.terminate() == 0)
    }
}
