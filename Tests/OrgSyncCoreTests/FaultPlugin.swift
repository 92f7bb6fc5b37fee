#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import OrgSyncCore
import OrgSyncPluginAPI
import Synchronization

/// A misbehaving plugin, written by the tests into a temp directory: one Python script whose
/// first argument picks the fault.
enum FaultPlugin {
    static let python3Available: Bool = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/python3") }
    }()

    static let script = #"""
        import json, os, sys, time
        mode = sys.argv[1]
        marker = sys.argv[2] if len(sys.argv) > 2 else None

        def send(message):
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

        if mode == "exit-at-start":
            sys.exit(4)
        for line in sys.stdin:
            request = json.loads(line)
            rid, method = request["id"], request["method"]
            if method == "handshake":
                if mode == "hang-handshake":
                    time.sleep(3600)
                version = 99 if mode == "bad-version" else 1
                send({"id": rid, "result": {"protocolVersion": version, "name": "fault", "version": "0"}})
            elif method == "open" and mode == "open-fails-once":
                if not os.path.exists(marker):
                    open(marker, "w").close()
                    send({"id": rid, "error": {"class": "connection", "message": "target not there yet"}})
                else:
                    send({"id": rid, "result": {}})
            elif method == "open" and mode == "spawn-grandchild":
                import subprocess
                helper = subprocess.Popen(["sleep", "3600"])
                sys.stderr.write("grandchild %d\n" % helper.pid)
                sys.stderr.flush()
                send({"id": rid, "result": {}})
            elif method == "open":
                sys.stderr.write("warning: fault plugin opening in mode " + mode + "\n")
                sys.stderr.flush()
                send({"id": rid, "result": {}})
            elif method == "apply" and mode == "crash-on-apply":
                os._exit(3)
            elif method == "apply" and mode == "reject-outside-batch":
                send({"id": rid, "error": {"class": "rejected", "offset": 999, "message": "no such entry"}})
            elif method == "apply" and mode == "reject":
                offset = request["params"]["entries"][-1]["offset"]
                send({"id": rid, "error": {"class": "rejected", "offset": offset, "message": "bad entry", "targetCode": "E42"}})
            elif method == "probe" and mode == "segfault-on-probe":
                os.kill(os.getpid(), 11)
            elif method == "probe" and mode == "hang-on-probe":
                sys.stderr.write("hanging in probe\n")
                sys.stderr.flush()
                time.sleep(3600)
            elif method == "probe" and mode == "flood-on-probe":
                for _ in range(200):
                    send({"id": rid, "result": {}})
            elif method == "probe" and mode == "garbage-on-probe":
                sys.stdout.write("this is not json\n")
                sys.stdout.flush()
            elif method == "probe" and mode == "overlong-on-probe":
                sys.stdout.write('{"id": %d, "result": "%s"}\n' % (rid, "x" * 5000))
                sys.stdout.flush()
            elif method == "probe" and mode == "wrong-id":
                send({"id": rid + 7, "result": {}})
            elif method == "probe" and mode == "crash-once":
                if not os.path.exists(marker):
                    open(marker, "w").close()
                    os._exit(5)
                send({"id": rid, "result": {}})
            elif method == "probe" and mode == "connection-error":
                send({"id": rid, "error": {"class": "connection", "message": "target down", "targetCode": "ECONNREFUSED"}})
            elif method == "close":
                send({"id": rid, "result": {}})
                if mode == "ignore-close":
                    sys.stdin.close()
                    time.sleep(3600)
                sys.exit(0)
            else:
                send({"id": rid, "result": {}})
        if mode == "ignore-close":
            time.sleep(3600)
        """#

    /// Writes the script into `directory` and returns an adapter running it in `mode`.
    static func adapter(
        _ mode: String, in directory: PluginTestDirectory, limits: PluginProcessLimits = testLimits,
        logger: Logger = Logger(label: "orgsync.test.fault-plugin")
    ) throws -> ProcessAdapter {
        let path = directory.path + "/fault_plugin.py"
        if !FileManager.default.fileExists(atPath: path) {
            try script.write(toFile: path, atomically: true, encoding: .utf8)
        }
        return ProcessAdapter(
            configuration: ProcessAdapterConfiguration(
                pluginName: "fault-\(mode)", command: ["python3", "fault_plugin.py", mode, directory.path + "/marker"],
                workingDirectory: directory.path, limits: limits),
            adapterConfiguration: AdapterConfiguration(linkName: "fault-link", streamName: "s"), logger: logger)
    }

    /// Runs `body` with an adapter running the script in `mode`, in a directory of its own; the
    /// adapter is closed and the directory removed afterwards, also when `body` throws. With
    /// `logTo`, the adapter logs there (for tests that wait on what the plugin said).
    static func withAdapter<T>(
        _ mode: String, limits: PluginProcessLimits = testLimits, logTo handler: RecordingLogHandler? = nil,
        _ body: (ProcessAdapter) async throws -> T
    ) async throws -> T {
        let directory = try PluginTestDirectory()
        defer { directory.remove() }
        let logger = handler.map { handler in Logger(label: "test") { _ in handler } } ?? Logger(label: "orgsync.test.fault-plugin")
        let adapter = try adapter(mode, in: directory, limits: limits, logger: logger)
        do {
            let result = try await body(adapter)
            await adapter.close()
            return result
        } catch {
            await adapter.close()
            throw error
        }
    }

    /// Timeouts long enough for a loaded CI machine; the tests about timeouts shorten them.
    static let testLimits = PluginProcessLimits(
        handshakeTimeoutMs: 10_000, requestTimeoutMs: 10_000, applyTimeoutMs: 10_000, exitGraceMs: 500,
        lineBytesMax: 1024, stderrLineBytesMax: 256)

    /// True once no process with `pid` exists: not running, not a zombie (it was reaped).
    static func isGone(_ pid: Int32) -> Bool {
        kill(pid, 0) == -1 && errno == ESRCH
    }

    /// True once `pid` no longer runs: gone, or a zombie (dead, waiting for its parent — for an
    /// orphan, init — to reap it).
    static func isDead(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        guard let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    static func batch(_ offsets: [UInt64]) -> EntryBatch {
        EntryBatch(stream: "s", identity: StreamIdentity(streamID: "s", epoch: 1), entries: offsets.map {
            Entry(offset: Offset($0), org: "o", object: "T", op: .upsert, key: "k\($0)", ts: "t")
        })
    }
}

/// A fresh temporary directory, removed by ``remove()``.
struct PluginTestDirectory: Sendable {
    let path: String

    init(_ label: String = "orgsync-core-test") throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// A log handler that hands every message to the test, which waits for one with a bound.
final class RecordingLogHandler: LogHandler, Sendable {
    private let messages = Mutex<[String]>([])
    private let arrived = AsyncStream<String>.makeStream()

    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }

    private let pids = Mutex<[Int32]>([])

    /// The `pid` metadata of the first message that had one.
    var firstPID: Int32? { pids.withLock { $0.first } }

    func log(event: LogEvent) {
        if case .string(let pid)? = event.metadata?["pid"], let number = Int32(pid) {
            pids.withLock { $0.append(number) }
        }
        let text = "\(event.level): \(event.message)"
        messages.withLock { $0.append(text) }
        arrived.continuation.yield(text)
    }

    /// The first message (already logged or to come) containing `text`, or nil after `timeoutMs`.
    func waitForMessage(containing text: String, timeoutMs: Int) async -> String? {
        if let found = messages.withLock({ $0.first { $0.contains(text) } }) { return found }
        return await withTaskGroup(of: String?.self) { group in
            group.addTask {
                for await message in self.arrived.stream where message.contains(text) { return message }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(timeoutMs))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}

/// Runs `body`, failing with `TimedOut` if it takes longer than `timeoutMs`.
func withTimeout<T: Sendable>(ms timeoutMs: Int, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(timeoutMs))
            throw TimedOut(timeoutMs: timeoutMs)
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw TimedOut(timeoutMs: timeoutMs) }
        return first
    }
}

struct TimedOut: Error, CustomStringConvertible {
    var timeoutMs: Int
    var description: String { "did not finish within \(timeoutMs) ms" }
}
