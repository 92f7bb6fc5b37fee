import Foundation
import Logging
import OrgSyncCore
import OrgSyncPluginAPI
import Testing

/// Out-of-process faults: each misbehaviour is a connection error with a clear message, and
/// afterwards the plugin process is gone and reaped.
@Suite("ProcessAdapter faults", .enabled(if: FaultPlugin.python3Available, "python3 is not on PATH: fault plugins cannot run here"))
struct ProcessAdapterFaultTests {
    /// Opens `mode`, runs `failing`, and checks the error and that the process is gone.
    private func expectConnectionFailure(
        _ mode: String, limits: PluginProcessLimits = FaultPlugin.testLimits, messageContains expected: String,
        _ failing: @escaping @Sendable (ProcessAdapter) async throws -> Void
    ) async throws {
        try await FaultPlugin.withAdapter(mode, limits: limits) { adapter in
            try await withTimeout(ms: 15_000) { try await adapter.open() }
            let pid = try #require(adapter.processID)
            let error = try await #require(throws: AdapterError.self) {
                try await withTimeout(ms: 15_000) { try await failing(adapter) }
            }
            #expect(error.kind == .connection)
            #expect(error.message.contains(expected), "message: \(error.message)")
            #expect(error.message.contains("fault-\(mode)"), "the message names the plugin: \(error.message)")
            #expect(FaultPlugin.isGone(pid), "plugin process \(pid) still exists (running or zombie)")
            #expect(adapter.processID == nil)
        }
    }

    @Test("a plugin that exits mid-request")
    func crashMidRequest() async throws {
        try await expectConnectionFailure("crash-on-apply", messageContains: "exited with status 3 during apply") {
            try await $0.apply(FaultPlugin.batch([0, 1]))
        }
    }

    @Test("a plugin killed by a signal")
    func killedBySignal() async throws {
        try await expectConnectionFailure("segfault-on-probe", messageContains: "killed by signal 11") {
            try await $0.probe()
        }
    }

    @Test("a plugin that hangs past the request timeout")
    func hang() async throws {
        var limits = FaultPlugin.testLimits
        limits.requestTimeoutMs = 1_500
        try await expectConnectionFailure("hang-on-probe", limits: limits, messageContains: "did not answer probe within 1500 ms") {
            try await $0.probe()
        }
    }

    @Test("a plugin that prints a line that is not JSON")
    func garbage() async throws {
        try await expectConnectionFailure("garbage-on-probe", messageContains: "not a JSON response: \"this is not json\"") {
            try await $0.probe()
        }
    }

    @Test("a plugin that prints a line over the line limit")
    func overlongLine() async throws {
        try await expectConnectionFailure("overlong-on-probe", messageContains: "longer than 1024 bytes") {
            try await $0.probe()
        }
    }

    @Test("a plugin that floods stdout with lines nobody asked for")
    func flood() async throws {
        try await FaultPlugin.withAdapter("flood-on-probe") { adapter in
            try await adapter.open()
            let pid = try #require(adapter.processID)
            // The first line answers the probe; the flood is caught on the next request at the latest.
            var caught: AdapterError?
            for _ in 0..<3 where caught == nil {
                do {
                    try await withTimeout(ms: 15_000) { try await adapter.probe() }
                } catch let error as AdapterError {
                    caught = error
                }
            }
            let error = try #require(caught)
            #expect(error.kind == .connection)
            #expect(
                error.message.contains("nobody asked for") || error.message.contains("while request"), "\(error.message)")
            #expect(FaultPlugin.isGone(pid))
        }
    }

    @Test("close() while a request hangs kills the plugin and ends the request")
    func closeDuringRequest() async throws {
        var limits = FaultPlugin.testLimits
        limits.requestTimeoutMs = 60_000
        let handler = RecordingLogHandler()
        try await FaultPlugin.withAdapter("hang-on-probe", limits: limits, logTo: handler) { adapter in
            try await adapter.open()
            let pid = try #require(adapter.processID)
            let probing = Task { try await adapter.probe() }
            let hanging = await handler.waitForMessage(containing: "hanging in probe", timeoutMs: 10_000)
            #expect(hanging != nil, "the plugin received the probe")
            try await withTimeout(ms: 10_000) { await adapter.close() }
            #expect(FaultPlugin.isGone(pid))
            let outcome = try await withTimeout(ms: 10_000) { () -> AdapterError? in
                do {
                    try await probing.value
                    return nil
                } catch let error as AdapterError {
                    return error
                } catch {
                    return nil
                }
            }
            #expect(outcome?.kind == .connection, "the pending probe fails as a connection error")
        }
    }

    @Test("a plugin that answers another request id")
    func wrongID() async throws {
        try await expectConnectionFailure("wrong-id", messageContains: "while request") {
            try await $0.probe()
        }
    }

    @Test("a rejection naming an offset outside the batch is not trusted")
    func rejectionOutsideBatch() async throws {
        try await FaultPlugin.withAdapter("reject-outside-batch") { adapter in
            try await adapter.open()
            let error = try await #require(throws: AdapterError.self) { try await adapter.apply(FaultPlugin.batch([0, 1])) }
            #expect(error.kind == .connection)
            #expect(error.message.contains("not in the batch"))
        }
    }

    @Test("errors the plugin classifies pass through, and the process keeps running")
    func classifiedErrorsPassThrough() async throws {
        let directory = try PluginTestDirectory()
        defer { directory.remove() }
        let rejecting = try FaultPlugin.adapter("reject", in: directory)
        try await rejecting.open()
        let pid = try #require(rejecting.processID)
        let rejected = try await #require(throws: AdapterError.self) { try await rejecting.apply(FaultPlugin.batch([4, 5])) }
        #expect(rejected.kind == .rejected(offset: 5))
        #expect(rejected.targetCode == "E42")
        #expect(rejecting.processID == pid, "a rejection does not restart the plugin")
        await rejecting.close()
        #expect(FaultPlugin.isGone(pid))

        let down = try FaultPlugin.adapter("connection-error", in: directory)
        try await down.open()
        let connection = try await #require(throws: AdapterError.self) { try await down.probe() }
        #expect(connection.kind == .connection)
        #expect(connection.message.contains("target down"))
        #expect(connection.targetCode == "ECONNREFUSED")
        await down.close()
    }

    @Test("a plugin speaking an unknown protocol version")
    func unknownProtocolVersion() async throws {
        try await FaultPlugin.withAdapter("bad-version") { adapter in
            let error = try await #require(throws: AdapterError.self) { try await withTimeout(ms: 15_000) { try await adapter.open() } }
            #expect(error.kind == .connection)
            #expect(error.message.contains("speaks protocol version 99; this broker speaks 1"), "\(error.message)")
            #expect(adapter.processID == nil)
            let pid = try #require(Self.pid(in: error.message))
            #expect(FaultPlugin.isGone(pid))
        }
    }

    @Test("a plugin that exits before the handshake")
    func exitAtStart() async throws {
        try await FaultPlugin.withAdapter("exit-at-start") { adapter in
            let error = try await #require(throws: AdapterError.self) { try await withTimeout(ms: 15_000) { try await adapter.open() } }
            #expect(error.kind == .connection)
            #expect(error.message.contains("exited with status 4 during handshake"), "\(error.message)")
            let pid = try #require(Self.pid(in: error.message))
            #expect(FaultPlugin.isGone(pid))
        }
    }

    @Test("a plugin that never answers the handshake")
    func handshakeTimeout() async throws {
        var limits = FaultPlugin.testLimits
        limits.handshakeTimeoutMs = 700
        try await FaultPlugin.withAdapter("hang-handshake", limits: limits) { adapter in
            let error = try await #require(throws: AdapterError.self) { try await withTimeout(ms: 15_000) { try await adapter.open() } }
            #expect(error.kind == .connection)
            #expect(error.message.contains("did not answer handshake within 700 ms"), "\(error.message)")
            let pid = try #require(Self.pid(in: error.message))
            #expect(FaultPlugin.isGone(pid))
        }
    }

    @Test("a command that cannot be started")
    func missingCommand() async throws {
        let adapter = ProcessAdapter(
            configuration: ProcessAdapterConfiguration(
                pluginName: "missing", command: ["./no-such-program"], workingDirectory: "/tmp"),
            adapterConfiguration: AdapterConfiguration(linkName: "l", streamName: "s"),
            logger: Logger(label: "test"))
        let error = try await #require(throws: AdapterError.self) { try await adapter.open() }
        #expect(error.kind == .connection)
        #expect(error.message.contains("not found"), "\(error.message)")
    }

    @Test("after a crash the next call starts a new process, once")
    func restartAfterCrash() async throws {
        try await FaultPlugin.withAdapter("crash-once") { adapter in
            try await adapter.open()
            let first = try #require(adapter.processID)
            let error = try await #require(throws: AdapterError.self) { try await adapter.probe() }
            #expect(error.message.contains("exited with status 5"))
            #expect(FaultPlugin.isGone(first))
            try await adapter.open()
            let second = try #require(adapter.processID)
            #expect(second != first)
            try await adapter.probe()
            await adapter.close()
            #expect(FaultPlugin.isGone(second))
        }
    }

    @Test("a plugin whose open fails is ended; the next call starts a new one that opens")
    func openFailure() async throws {
        let handler = RecordingLogHandler()
        try await FaultPlugin.withAdapter("open-fails-once", logTo: handler) { adapter in
            let error = try await #require(throws: AdapterError.self) { try await adapter.open() }
            #expect(error.kind == .connection)
            #expect(error.message.contains("target not there yet"))
            #expect(adapter.processID == nil, "the half-started process is not kept")
            let started = await handler.waitForMessage(containing: "plugin process started", timeoutMs: 1_000)
            let firstPID = try #require(started.flatMap { _ in Self.pid(inLog: handler) })
            #expect(FaultPlugin.isGone(firstPID))
            try await adapter.probe()
            let second = try #require(adapter.processID)
            #expect(second != firstPID)
            await adapter.close()
            #expect(FaultPlugin.isGone(second))
        }
    }

    @Test("close() ends a well-behaved plugin and kills one that will not exit")
    func closeReaps() async throws {
        let directory = try PluginTestDirectory()
        defer { directory.remove() }
        for mode in ["well-behaved", "ignore-close"] {
            let adapter = try FaultPlugin.adapter(mode, in: directory)
            try await adapter.open()
            let pid = try #require(adapter.processID)
            try await withTimeout(ms: 10_000) { await adapter.close() }
            #expect(FaultPlugin.isGone(pid), "\(mode): plugin \(pid) still exists after close()")
            await adapter.close()
        }
    }

    @Test("a plugin's own child processes die with it")
    func grandchildren() async throws {
        let handler = RecordingLogHandler()
        try await FaultPlugin.withAdapter("spawn-grandchild", logTo: handler) { adapter in
            try await adapter.open()
            let pid = try #require(adapter.processID)
            let line = try #require(await handler.waitForMessage(containing: "grandchild ", timeoutMs: 10_000))
            let grandchild = try #require(line.split(separator: " ").last.flatMap { Int32($0) })
            #expect(!FaultPlugin.isDead(grandchild), "the helper runs while the plugin does")
            try await withTimeout(ms: 10_000) { await adapter.close() }
            #expect(FaultPlugin.isGone(pid))
            // SIGKILL was sent to the helper before close() returned; its death is asynchronous and
            // nothing notifies us of it (it is not our child), so look a bounded number of times.
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(5)
            while !FaultPlugin.isDead(grandchild), clock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(FaultPlugin.isDead(grandchild), "helper \(grandchild) of the plugin outlived it")
        }
    }

    @Test("a cancelled call kills the plugin and throws CancellationError")
    func cancellation() async throws {
        var limits = FaultPlugin.testLimits
        limits.requestTimeoutMs = 60_000
        let handler = RecordingLogHandler()
        try await FaultPlugin.withAdapter("hang-on-probe", limits: limits, logTo: handler) { adapter in
            try await adapter.open()
            let pid = try #require(adapter.processID)
            let probing = Task { try await adapter.probe() }
            // Cancel only once the plugin has the request (it says so on stderr): the call is then
            // really in flight, and cancelling must kill the process.
            #expect(await handler.waitForMessage(containing: "hanging in probe", timeoutMs: 10_000) != nil)
            probing.cancel()
            let outcome = try await withTimeout(ms: 10_000) { () -> String in
                do {
                    try await probing.value
                    return "returned"
                } catch is CancellationError {
                    return "cancelled"
                } catch {
                    return "\(error)"
                }
            }
            #expect(outcome == "cancelled")
            #expect(FaultPlugin.isGone(pid))
        }
    }

    @Test("stderr lines become log lines with their level")
    func stderrIsLogged() async throws {
        let handler = RecordingLogHandler()
        try await FaultPlugin.withAdapter("stderr", logTo: handler) { adapter in
            try await adapter.open()
            let line = await handler.waitForMessage(containing: "fault plugin opening in mode stderr", timeoutMs: 10_000)
            #expect(line?.hasPrefix("warning:") == true, "\(line ?? "no log line")")
        }
    }

    /// The PID of the first "plugin process started" log line.
    static func pid(inLog handler: RecordingLogHandler) -> Int32? {
        handler.firstPID
    }

    /// The PID a failure message names (`(pid N)`).
    static func pid(in message: String) -> Int32? {
        guard let range = message.range(of: "(pid ") else { return nil }
        return Int32(message[range.upperBound...].prefix { $0.isNumber })
    }
}
