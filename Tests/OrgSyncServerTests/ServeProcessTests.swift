import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import OrgSyncLog
import Testing

#if canImport(Glibc)
import Glibc
import OrgSyncTestSupport
#endif

/// Runs the real `orgsync serve` executable as a child process.
final class BrokerProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    private let output = Pipe()
    /// Where the broker's standard error goes: `ORGSYNC_TEST_BROKER_LOG` when set (kept), else a
    /// temporary file removed with this value.
    private let errorLogPath: String
    private let keepsErrorLog: Bool

    /// Starts `orgsync serve` with `arguments` and waits (bounded, on a thread of its own) for
    /// its "listening" line. `launcher` runs it through another program (e.g.
    /// `["/usr/bin/prlimit", "--nofile=256:256"]`).
    static func start(
        arguments: [String], launcher: [String] = [], currentDirectory: String? = nil, environment: [String: String] = [:],
        timeoutSeconds: Double = 30
    ) async throws -> BrokerProcess {
        try await offThePool {
            try BrokerProcess(arguments: arguments, launcher: launcher, currentDirectory: currentDirectory, environment: environment,
                              timeoutSeconds: timeoutSeconds)
        }
    }

    private init(arguments: [String], launcher: [String], currentDirectory: String?, environment: [String: String], timeoutSeconds: Double) throws {
        if let program = launcher.first {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = Array(launcher.dropFirst()) + [try orgsyncExecutable(), "serve"] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: try orgsyncExecutable())
            process.arguments = ["serve"] + arguments
        }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardOutput = output
        let requestedLog = ProcessInfo.processInfo.environment["ORGSYNC_TEST_BROKER_LOG"]
        errorLogPath = requestedLog ?? FileManager.default.temporaryDirectory.path + "/orgsync-stderr-" + UUID().uuidString
        keepsErrorLog = requestedLog != nil
        _ = FileManager.default.createFile(atPath: errorLogPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: errorLogPath)
        try process.run()
        // The first line says where it listens. Waited for with a bound (poll, then read; an
        // interrupted call is retried): a broker that hangs at start, or prints nothing, fails
        // the test instead of blocking it forever.
        let (text, started) = Self.readFirstLine(output.fileHandleForReading.fileDescriptor, timeoutSeconds: timeoutSeconds)
        guard started, process.isRunning else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw ProcessError("the broker did not start within \(timeoutSeconds) s: \(text)")
        }
        guard let range = text.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression),
              let port = Int(text[range].split(separator: ":").last ?? "")
        else {
            process.terminate()
            throw ProcessError("no port in \(text)")
        }
        self.port = port
    }

    /// Reads `fd` until a newline, end of file or `timeoutSeconds`; the text, and whether a whole
    /// line came in time.
    static func readFirstLine(_ fd: Int32, timeoutSeconds: Double) -> (String, Bool) {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        var collected: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !collected.contains(0x0A) {
            let remainingMs = Int32(max(0, min(Double(Int32.max), deadline.timeIntervalSinceNow * 1000)))
            guard remainingMs > 0 else { return (String(decoding: collected, as: UTF8.self), false) }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, remainingMs)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return (String(decoding: collected, as: UTF8.self), false) }
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return (String(decoding: collected, as: UTF8.self), false) }
            collected += buffer[0..<count]
        }
        return (String(decoding: collected, as: UTF8.self), true)
    }

    /// Signals the broker and awaits its exit (on a thread of its own); its exit status.
    func terminate(signal: Int32 = SIGTERM) async -> Int32 {
        kill(process.processIdentifier, signal)
        let process = self.process
        return await offThePool { () -> Int32 in
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    /// What the broker wrote to standard error so far (its log).
    var standardError: String {
        (try? String(contentsOfFile: errorLogPath, encoding: .utf8)) ?? ""
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        if !keepsErrorLog { try? FileManager.default.removeItem(atPath: errorLogPath) }
    }
}

struct ProcessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func orgsyncExecutable() throws -> String {
    if let path = ProcessInfo.processInfo.environment["ORGSYNC_BIN"] { return path }
    // Next to the test binary: the build directory of this very build, whatever its scratch path.
    let sibling = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("orgsync").path
    if FileManager.default.isExecutableFile(atPath: sibling) { return sibling }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    for candidate in [".build/debug/orgsync", ".build/x86_64-unknown-linux-gnu/debug/orgsync", ".build/release/orgsync"] {
        let path = root.appendingPathComponent(candidate).path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    throw ProcessError("the orgsync executable is not built: run `swift build --build-tests` first, or set ORGSYNC_BIN")
}

/// POSTs `body` and returns (status, body).
func post(_ url: String, body: Data, contentType: String) async throws -> (Int, Data) {
    var request = URLRequest(url: URL(string: url)!)
    request.httpMethod = "POST"
    request.httpBody = body
    request.setValue(contentType, forHTTPHeaderField: "Content-Type")
    request.timeoutInterval = 30
    let (data, response) = try await URLSession.shared.data(for: request)
    return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
}

func get(_ url: String) async throws -> (Int, Data) {
    var request = URLRequest(url: URL(string: url)!)
    request.timeoutInterval = 30
    let (data, response) = try await URLSession.shared.data(for: request)
    return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
}

/// The status of the broker's link `demo` (`GET /v1/links/demo`).
func linkStatus(_ broker: BrokerProcess) async throws -> [String: Any] {
    let (status, body) = try await get("http://127.0.0.1:\(broker.port)/v1/links/demo")
    try #require(status == 200)
    return try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
}

/// Polls the link's status until `condition` holds, at most `timeoutSeconds` (another process's
/// state: nothing to wait on but its answers).
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

@Suite(.serialized) struct ServeProcessTests {
    func writeConfig(_ directory: String) throws -> String {
        let path = directory + "/orgsync.yaml"
        try """
        auth: { enabled: false }
        streams: [ { name: events } ]
        """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func appendsSurviveSIGTERMAndRestart() async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-serve-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try writeConfig(directory)
        let arguments = ["--config", config, "--data-dir", directory + "/state", "--port", "0"]
        var acked: [(first: Int, lines: [String])] = []
        do {
            let broker = try await BrokerProcess.start(arguments: arguments)
            let base = "http://127.0.0.1:\(broker.port)"
            for round in 0..<5 {
                let lines = (0..<50).map { #"{"org":"o","object":"Lead","op":"insert","key":"r\#(round)-\#($0)","ts":"t"}"# }
                let (status, body) = try await post(base + "/v1/streams/events/entries", body: Data(lines.joined(separator: "\n").utf8),
                                                    contentType: "application/x-ndjson")
                #expect(status == 201)
                let object = try JSONSerialization.jsonObject(with: body) as? [String: Int]
                acked.append((try #require(object?["first_offset"]), lines))
            }
            let (status, body) = try await get(base + "/v1/streams/events")
            #expect(status == 200)
            #expect((try JSONSerialization.jsonObject(with: body) as? [String: Any])?["end_offset"] as? Int == 250)
            // Appends in flight when SIGTERM arrives: each either gets its 201 (then it is
            // durable) or fails as a request; none is lost after being acknowledged.
            let (lateAcks, lateAck) = AsyncStream<Int>.makeStream()
            let inFlight = Task {
                var mine: [(first: Int, lines: [String])] = []
                for i in 0..<200 {
                    let lines = [#"{"org":"o","object":"Lead","op":"insert","key":"late-\#(i)","ts":"t"}"#]
                    guard let (status, body) = try? await post(base + "/v1/streams/events/entries", body: Data(lines[0].utf8),
                                                                contentType: "application/json"), status == 201,
                          let first = (try? JSONSerialization.jsonObject(with: body) as? [String: Int])?["first_offset"]
                    else { break }
                    mine.append((first, lines))
                    lateAck.yield(mine.count)
                }
                lateAck.finish()
                return mine
            }
            // SIGTERM once appends are flowing: 5 were answered and the next is on its way.
            var answered = 0
            for await count in lateAcks where count >= 5 {
                answered = count
                break
            }
            #expect(answered >= 5, "appends were flowing when SIGTERM was sent")
            #expect(await broker.terminate() == 0, "graceful shutdown exits 0")
            acked += await inFlight.value
        }
        // The data directory holds every acknowledged entry at its offset.
        let log = try StreamLog.open(dataDirectory: directory + "/state", name: "events")
        #expect(log.recovery.truncatedAtPosition == nil, "a graceful stop leaves no torn tail")
        for (first, lines) in acked {
            let records = try log.read(from: UInt64(first), maxEntries: lines.count)
            #expect(records.map { String(decoding: $0.payload, as: UTF8.self) } == lines)
        }
        await log.close()
        // And the restarted broker serves them.
        let again = try await BrokerProcess.start(arguments: arguments)
        let (status, body) = try await get("http://127.0.0.1:\(again.port)/v1/streams/events")
        #expect(status == 200)
        #expect((try JSONSerialization.jsonObject(with: body) as? [String: Any])?["end_offset"] as? Int == acked.reduce(0) { $0 + $1.lines.count })
        #expect(await again.terminate(signal: SIGINT) == 0)
    }

    /// With no configuration (only `--port 0`, to stay off the fixed port) `serve` runs the
    /// default compiled into the binary from any directory: stream `events`, link `demo` into
    /// `data/state/demo.sqlite` under the current directory, which it logs.
    @Test func withNoConfigurationItRunsTheEmbeddedDefaultFromAnyDirectory() async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-anywhere-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let broker = try await BrokerProcess.start(arguments: ["--port", "0"], currentDirectory: directory)
        #expect(try await get("http://127.0.0.1:\(broker.port)/health/ready").0 == 200, "ready once it listens")
        let line = #"{"org":"acme","object":"Contact","op":"upsert","key":"c1","ts":"2026-11-27T00:00:00Z","fields":{"Name":"A"}}"#
        let (status, _) = try await post("http://127.0.0.1:\(broker.port)/v1/streams/events/entries", body: Data(line.utf8),
                                         contentType: "application/json")
        #expect(status == 201)
        let applied = try await waitForLink(broker, "applied the entry") { ($0["cursor"] as? Int) == 1 }
        #expect(applied["state"] as? String == "active")
        #expect(FileManager.default.fileExists(atPath: directory + "/data/state/demo.sqlite"), "the demo target under the current directory")
        #expect(await broker.terminate() == 0)
        #expect(broker.standardError.contains("data_directory=\(directory)/data/state"), "it says where its data is: \(broker.standardError)")
    }

    /// A port another process listens on stops `serve` with a message naming the address and the
    /// way out, exit 2, before any stream or link is opened (the data directory is not created).
    @Test func aBusyPortStopsStartupBeforeAnythingIsOpened() async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-busy-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try writeConfig(directory)
        let (listener, port) = try listeningSocket()
        defer { close(listener) }
        let dataDirectory = directory + "/state"
        let (status, message) = try await runServe(["--config", config, "--data-dir", dataDirectory, "--port", String(port)])
        #expect(status == 2, "\(message)")
        #expect(message.contains("orgsync serve: cannot listen on 127.0.0.1:\(port): address in use (another broker? --port)"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: dataDirectory), "no stream or link was opened")
    }

    @Test func aBadConfigurationStopsStartupNamingTheField() async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-badcfg-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/bad.yaml"
        try "auth: { enabled: false }\nserver: { port: many }\n".write(toFile: path, atomically: true, encoding: .utf8)
        let (status, message) = try await runServe(["--config", path, "--data-dir", directory])
        #expect(status == 2)
        #expect(message.contains("server.port"))
        #expect(!message.contains("Fatal error"))
    }
}

/// A TCP socket listening on a free port of 127.0.0.1 (as another broker would be).
func listeningSocket() throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ProcessError("socket: errno \(errno)") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound, listen(fd, 8) == 0 else {
        close(fd)
        throw ProcessError("bind/listen: errno \(errno)")
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

/// Runs `orgsync serve` that is expected to stop by itself, on a thread of its own (not the
/// cooperative pool); its exit status and standard error.
func runServe(_ arguments: [String]) async throws -> (Int32, String) {
    let executable = try orgsyncExecutable()
    return try await offThePool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["serve"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Bounded: reading ends when the process exits, or is killed after 30 s.
        let watchdog = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 30, execute: watchdog)
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        watchdog.cancel()
        return (process.terminationStatus, message)
    }
}
