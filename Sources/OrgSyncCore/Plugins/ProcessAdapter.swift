#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import OrgSyncPluginAPI
import Synchronization

/// How to run one out-of-process adapter, and the limits the broker holds it to.
public struct ProcessAdapterConfiguration: Sendable, Hashable {
    /// The plugin's name (from its manifest), for messages and log metadata.
    public var pluginName: String
    /// argv of the plugin. `command[0]` containing a `/` is a path (relative ones resolve
    /// against ``workingDirectory``); a bare name is looked up on `PATH`.
    public var command: [String]
    /// The plugin process starts in this directory (the plugin's own directory).
    public var workingDirectory: String
    /// Extra environment variables. The plugin gets only these plus `PATH`, `HOME`, `LANG`,
    /// `LC_*`, `TZ` and `TMPDIR` from the broker's environment, so the broker's secrets stay
    /// out of third-party code.
    public var environment: [String: String]
    /// Timeouts and line limits.
    public var limits: PluginProcessLimits

    public var handshakeTimeoutMs: Int { limits.handshakeTimeoutMs }
    public var requestTimeoutMs: Int { limits.requestTimeoutMs }
    public var applyTimeoutMs: Int { limits.applyTimeoutMs }
    public var exitGraceMs: Int { limits.exitGraceMs }
    public var lineBytesMax: Int { limits.lineBytesMax }
    public var stderrLineBytesMax: Int { limits.stderrLineBytesMax }

    public init(
        pluginName: String, command: [String], workingDirectory: String, environment: [String: String] = [:],
        limits: PluginProcessLimits = PluginProcessLimits()
    ) {
        self.pluginName = pluginName
        self.command = command
        self.workingDirectory = workingDirectory
        self.environment = environment
        self.limits = limits
    }
}

/// An ``OrgAdapter`` that runs a plugin executable and talks to it with the JSON-lines protocol
/// of `plugins/PROTOCOL.md` over its stdin and stdout. One process per link.
///
/// - The process starts on ``open()`` (handshake, then `open`), and again on the next call
///   after it died or was killed: one start per call at most, so a broken plugin never makes
///   the adapter spin. Backoff between attempts is the link supervisor's.
/// - A process that exits, crashes, does not answer within its timeout, prints a line that is
///   not a JSON response to the pending request or is longer than ``ProcessAdapterConfiguration/lineBytesMax``,
///   or names a protocol version the broker does not speak, is killed (with its process group),
///   reaped, and the call throws ``AdapterError/Kind/connection`` saying which.
/// - Errors the plugin reports (`connection`, `rejected` with an offset, `retryable`) pass
///   through as ``AdapterError``s; the process keeps running.
/// - Each stderr line becomes a log line (`warning:`/`error:`/`debug:` prefixes set its level).
/// - ``close()`` asks the plugin to close, closes its stdin, waits ``ProcessAdapterConfiguration/exitGraceMs``
///   and then kills it. A cancelled call kills the process too. Either way it is reaped
///   before the call returns.
public final class ProcessAdapter: OrgAdapter {
    public let configuration: ProcessAdapterConfiguration
    public let adapterConfiguration: AdapterConfiguration
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var child: PluginChild?
        var nextRequestID: UInt64 = 1
        /// A request is on the wire; a concurrent close() must not send another.
        var requestInFlight = false
        /// The protocol version the running process answered the handshake with.
        var protocolVersion = 1
    }

    public init(configuration: ProcessAdapterConfiguration, adapterConfiguration: AdapterConfiguration, logger: Logger) {
        self.configuration = configuration
        self.adapterConfiguration = adapterConfiguration
        var logger = logger
        logger[metadataKey: "plugin"] = "\(configuration.pluginName)"
        logger[metadataKey: "link"] = "\(adapterConfiguration.linkName)"
        self.logger = logger
    }

    deinit {
        // Nobody called close(): still never leave the process behind (its reaper thread reaps it).
        state.withLock { $0.child }?.kill()
    }

    /// The PID of the running plugin process, if one runs. For tests and diagnostics.
    public var processID: Int32? { state.withLock { $0.child?.pid } }

    // MARK: - OrgAdapter

    public func open() async throws {
        if let old = state.withLock({ state -> PluginChild? in
            defer { state.child = nil }
            return state.child
        }) {
            await shutDown(old)
        }
        _ = try await runningChild()
    }

    public func apply(_ batch: EntryBatch) async throws {
        guard !batch.entries.isEmpty else { return }
        let child = try await runningChild()
        // A plugin before version 3 ignores the owner epoch: it could not refuse a member that
        // lost the link, so it never gets a batch that needs that.
        if batch.ownerEpoch > 0, state.withLock({ $0.protocolVersion }) < PluginWireProtocol.fencingVersion {
            throw AdapterError.connection(
                "plugin \(configuration.pluginName) speaks protocol version \(state.withLock { $0.protocolVersion }), which does not store owner epochs; "
                    + "a link that moves between cluster members needs version \(PluginWireProtocol.fencingVersion) (or pin the link to one node)")
        }
        let params = PluginWireProtocol.applyParams(batch)
        do {
            _ = try await call(child, .apply, params: params, timeoutMs: configuration.applyTimeoutMs)
        } catch let error as AdapterError {
            // A rejection must name an entry of this batch, or the link would dead-letter the wrong one.
            if case .rejected(let offset) = error.kind, !batch.entries.contains(where: { $0.offset == offset }) {
                throw AdapterError.connection(
                    "plugin \(configuration.pluginName) rejected offset \(offset), which is not in the batch "
                        + "\(batch.firstOffset.map(String.init(describing:)) ?? "?")...\(batch.lastOffset.map(String.init(describing:)) ?? "?"): \(error.message)")
            }
            throw error
        }
    }

    public func probe() async throws {
        let child = try await runningChild()
        _ = try await call(child, .probe, params: nil, timeoutMs: configuration.requestTimeoutMs)
    }

    public func appliedPosition() async throws -> AppliedPosition? {
        let child = try await runningChild()
        guard state.withLock({ $0.protocolVersion }) >= PluginWireProtocol.positionVersion else {
            return try await legacyAppliedOffset(child).map { AppliedPosition(identity: nil, offset: $0) }
        }
        let result = try await call(child, .appliedPosition, params: nil, timeoutMs: configuration.requestTimeoutMs)
        switch PluginWireProtocol.decodePosition(result) {
        case .success(let position): return position
        case .failure(let problem): try await fail(child, "answered appliedPosition with \(problem.text)")
        }
    }

    /// Version 2 rewrites the row; a version-1 plugin cannot, so only a change it needs no
    /// rewrite for (its stored offset is none or below the new position) is accepted.
    public func setAppliedPosition(_ position: AppliedPosition?) async throws {
        let child = try await runningChild()
        guard state.withLock({ $0.protocolVersion }) >= PluginWireProtocol.positionVersion else {
            guard let stored = try await legacyAppliedOffset(child) else { return }
            if let position, stored <= position.offset { return }
            throw LinkSupervisorError.cursorChangeRefused(link: adapterConfiguration.linkName, reason:
                "plugin \(configuration.pluginName) speaks protocol version 1, which cannot rewrite the offset it stores (\(stored)); "
                    + "it would skip entries up to it. Upgrade the plugin to protocol version 2, or remove its stored offset in the target by hand")
        }
        _ = try await call(child, .setAppliedPosition, params: PluginWireProtocol.positionParams(position),
                           timeoutMs: configuration.requestTimeoutMs)
    }

    private func legacyAppliedOffset(_ child: PluginChild) async throws -> Offset? {
        let result = try await call(child, .appliedOffset, params: nil, timeoutMs: configuration.requestTimeoutMs)
        let value: JSONValue?
        switch result {
        case .object(let members)?: value = members["appliedOffset"]
        default: value = result
        }
        switch value {
        case nil, .null?: return nil
        case .int(let number)? where number >= 0: return Offset(UInt64(number))
        case let other?:
            try await fail(child, "answered appliedOffset with \(other.typeName) instead of a non-negative integer or null")
        }
    }

    public func close() async {
        guard let child = state.withLock({ state -> PluginChild? in
            defer { state.child = nil }
            return state.child
        }) else { return }
        await shutDown(child)
    }

    // MARK: - Process lifecycle

    /// The live process, starting one (spawn, handshake, open) if there is none.
    private func runningChild() async throws -> PluginChild {
        if let child = state.withLock({ $0.child }), child.exitStatus == nil { return child }
        if let dead = state.withLock({ state -> PluginChild? in
            defer { state.child = nil }
            return state.child
        }) {
            _ = await dead.killAndReap()
        }
        let child = try spawn()
        state.withLock { $0.child = child }
        do {
            try await start(child)
        } catch {
            // A process that did not finish starting (an error answer to handshake or open)
            // must not be used as if it had: end it, so that the next call starts afresh.
            let owned = state.withLock { state -> Bool in
                guard state.child === child else { return false }
                state.child = nil
                return true
            }
            if owned { await shutDown(child) }
            throw error
        }
        return child
    }

    /// Handshake, then `open`.
    private func start(_ child: PluginChild) async throws {
        let hello = try await call(
            child, .handshake, params: PluginWireProtocol.handshakeParams(), timeoutMs: configuration.handshakeTimeoutMs)
        guard case .object(let members)? = hello, case .int(let version)? = members["protocolVersion"] else {
            try await fail(child, "answered the handshake without an integer protocolVersion")
        }
        guard PluginWireProtocol.supportedVersions.contains(Int(version)) else {
            try await fail(
                child,
                "speaks protocol version \(version); this broker speaks \(PluginWireProtocol.supportedVersions.map(String.init).joined(separator: ", "))"
            )
        }
        state.withLock { $0.protocolVersion = Int(version) }
        logger.info(
            "plugin process started",
            metadata: ["pid": "\(child.pid)", "protocolVersion": "\(version)", "pluginVersion": "\(members["version"]?.stringValue ?? "?")"])
        _ = try await call(
            child, .open, params: PluginWireProtocol.openParams(adapterConfiguration), timeoutMs: configuration.requestTimeoutMs)
    }

    private func spawn() throws(AdapterError) -> PluginChild {
        var command = configuration.command
        if let program = command.first, program.contains("/"), !program.hasPrefix("/") {
            command[0] = configuration.workingDirectory + "/" + program
        }
        let logger = self.logger
        do {
            return try PluginChild.spawn(
                command: command, directory: configuration.workingDirectory, environment: pluginEnvironment(),
                lineBytesMax: configuration.lineBytesMax, stderrLineBytesMax: configuration.stderrLineBytesMax,
                stderrLine: { pid, line in Self.logStderr(line, pid: pid, logger) })
        } catch {
            throw AdapterError.connection("plugin \(configuration.pluginName): \(error)")
        }
    }

    private func pluginEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        let passed: Set<String> = ["PATH", "HOME", "LANG", "TZ", "TMPDIR"]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                let name = String(text[..<equals])
                if passed.contains(name) || name.hasPrefix("LC_") {
                    environment[name] = String(text[text.index(after: equals)...])
                }
            }
            pointer += 1
        }
        if environment["PATH"] == nil { environment["PATH"] = "/usr/local/bin:/usr/bin:/bin" }
        for (name, value) in configuration.environment { environment[name] = value }
        return environment
    }

    /// Closes politely, then by force; returns once the process is reaped (or after a bound).
    private func shutDown(_ child: PluginChild) async {
        let busy = state.withLock { $0.requestInFlight }
        if !busy, child.exitStatus == nil, child.expiryReason == nil {
            let grace = configuration.exitGraceMs
            _ = try? await call(child, .close, params: nil, timeoutMs: min(grace, configuration.requestTimeoutMs))
            child.closeStdin()
            if await child.waitForExit(timeoutMs: grace) == nil {
                logger.warning("plugin process did not exit after close; killing it", metadata: ["pid": "\(child.pid)"])
            }
        }
        if await child.killAndReap() == nil {
            logger.error("plugin process could not be reaped after SIGKILL", metadata: ["pid": "\(child.pid)"])
        }
    }

    // MARK: - One request

    /// Sends one request and waits for its answer. Framing and liveness failures kill the
    /// process and throw `.connection`; an error the plugin reports is thrown as it classified it.
    private func call(
        _ child: PluginChild, _ method: PluginWireProtocol.Method, params: [UInt8]?, timeoutMs: Int
    ) async throws -> JSONValue? {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextRequestID += 1 }
            state.requestInFlight = true
            return state.nextRequestID
        }
        defer { state.withLock { $0.requestInFlight = false } }
        let watchdog = Task {
            try await Task.sleep(for: .milliseconds(timeoutMs))
            child.expire(.timeout(method: method.rawValue, timeoutMs: timeoutMs))
        }
        defer { watchdog.cancel() }
        let response = try await withTaskCancellationHandler {
            try await exchange(child, id: id, method: method, params: params, timeoutMs: timeoutMs)
        } onCancel: {
            child.expire(.cancelled)
        }
        if child.expiryReason != nil {
            // The answer came as the deadline or the cancellation struck: it stands, but the
            // process is being killed, so the next call must start a new one.
            await forget(child)
        }
        if let error = response.error {
            throw classify(error, method: method)
        }
        return response.result
    }

    private func exchange(
        _ child: PluginChild, id: UInt64, method: PluginWireProtocol.Method, params: [UInt8]?, timeoutMs: Int
    ) async throws -> PluginWireProtocol.Response {
        if let errorNumber = await child.write(PluginWireProtocol.requestLine(id: id, method: method, params: params)) {
            try await fail(child, "cannot send \(method.rawValue) (\(String(cString: strerror(errorNumber))))", method: method)
        }
        // The watchdog kills the process at the deadline, which ends the stream; the extra
        // margin only guards against a plugin whose descendants keep stdout open.
        switch await child.inbox.next(timeoutMs: timeoutMs + 5_000) {
        case .line(let line)?:
            guard let response = PluginWireProtocol.decodeResponse(line) else {
                try await fail(child, "printed a line that is not a JSON response: \(Self.excerpt(line))", method: method)
            }
            guard response.id == id else {
                try await fail(child, "answered request \(response.id.map(String.init) ?? "without id") while request \(id) (\(method.rawValue)) was pending", method: method)
            }
            guard response.hasResult != (response.error != nil) else {
                try await fail(child, "answered request \(id) with neither or both of result and error", method: method)
            }
            return response
        case .overlong?:
            try await fail(child, "printed a line longer than \(configuration.lineBytesMax) bytes (lineBytesMax)", method: method)
        case .flood?:
            try await fail(child, "printed more than \(PluginInbox.queuedLinesMax) lines nobody asked for", method: method)
        case .end?, nil:
            try await fail(child, nil, method: method)
        }
    }

    private func classify(_ body: PluginWireProtocol.Response.ErrorBody, method: PluginWireProtocol.Method) -> AdapterError {
        let message = body.message.flatMap { $0.isEmpty ? nil : $0 } ?? "no message"
        let prefix = "plugin \(configuration.pluginName): "
        switch body.class {
        case "connection":
            return AdapterError.connection(prefix + message, targetCode: body.targetCode)
        case "retryable":
            return AdapterError.retryable(prefix + message, targetCode: body.targetCode)
        case "position_conflict" where method == .apply:
            return AdapterError.positionConflict(prefix + message)
        case "fenced" where method == .apply:
            return AdapterError.fenced(prefix + message)
        case "rejected" where method != .apply:
            return AdapterError.connection(prefix + "reported a rejected entry outside apply (during \(method.rawValue)): \(message)")
        case "rejected":
            guard let offset = body.offset else {
                return AdapterError.connection(prefix + "reported a rejected entry without its offset: \(message)")
            }
            return AdapterError.rejected(offset: Offset(offset), prefix + message, targetCode: body.targetCode)
        default:
            return AdapterError.connection(
                prefix + "answered \(method.rawValue) with an error of unknown class \"\(body.class)\": \(message)",
                targetCode: body.targetCode)
        }
    }

    /// Kills and reaps the process, forgets it, and throws `.connection` with what went wrong
    /// (or, when `problem` is nil, how the process ended). Throws `CancellationError` instead
    /// when the call was cancelled.
    private func fail(
        _ child: PluginChild, _ problem: String?, method: PluginWireProtocol.Method? = nil
    ) async throws -> Never {
        let status = await forget(child)
        let during = method.map { " during \($0.rawValue)" } ?? ""
        let what: String
        switch child.expiryReason {
        case .cancelled?:
            logger.info("plugin process killed: call cancelled", metadata: ["pid": "\(child.pid)"])
            throw CancellationError()
        case .timeout(let timedOutMethod, let timeoutMs)?:
            what = "did not answer \(timedOutMethod) within \(timeoutMs) ms; killed"
        case nil:
            if let problem {
                what = problem + "; killed"
            } else {
                what = "\(status.map { "\($0)" } ?? "ended")\(during)"
            }
        }
        let message = "plugin \(configuration.pluginName) (pid \(child.pid)) \(what)"
        logger.warning("\(message)")
        throw AdapterError.connection(message)
    }

    /// Kills and reaps `child` and drops it if it is still the current process.
    @discardableResult
    private func forget(_ child: PluginChild) async -> PluginExitStatus? {
        let status = await child.killAndReap()
        state.withLock { state in
            if state.child === child { state.child = nil }
        }
        return status
    }

    private static func excerpt(_ line: [UInt8]) -> String {
        let limit = 120
        let text = String(decoding: line.prefix(limit), as: UTF8.self)
        return "\"\(text)\"" + (line.count > limit ? " …(\(line.count) bytes)" : "")
    }

    private static func logStderr(_ line: String, pid: Int32, _ logger: Logger) {
        let lower = line.prefix(9).lowercased()
        let level: Logger.Level
        if lower.hasPrefix("error") || lower.hasPrefix("critical") {
            level = .error
        } else if lower.hasPrefix("warn") {
            level = .warning
        } else if lower.hasPrefix("debug") {
            level = .debug
        } else {
            level = .info
        }
        logger.log(level: level, "\(line)", metadata: ["source": "stderr", "pid": "\(pid)"])
    }
}
