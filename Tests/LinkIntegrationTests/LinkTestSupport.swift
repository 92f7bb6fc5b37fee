import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestSupport
import PostgresAdapter
import OrgSyncTestPostgres
import PostgresNIO
import Synchronization
import Testing

/// Link cursors in the stream's real cursor files, published to an ``Observed`` value so that
/// tests can wait on a cursor (bounded, no polling). Observation only: every store goes to the
/// log's crash-safe cursor files first.
final class ObservedCursorStore: LinkCursorStore {
    let inner: StreamLogCursorStore
    let cursors = Observed<[String: Offset]>([:])

    init(log: StreamLog) { self.inner = StreamLogCursorStore(log: log) }

    func load(link: String) async throws -> Offset? { try await inner.load(link: link) }

    func store(link: String, offset: Offset) async throws {
        try await inner.store(link: link, offset: offset)
        cursors.update { $0[link] = offset }
    }

    /// Waits until `link`'s cursor is at least `offset`, for at most `ms`.
    func waitForCursor(link: String, atLeast offset: Offset, ms: UInt64 = 10_000) async throws {
        try await withTimeout(ms: ms, "cursor of \(link) at \(offset)") { [cursors] in
            _ = try await cursors.wait { ($0[link] ?? 0) >= offset }
        }
    }
}

/// One link's transitions as they happen, collected for bounded waits.
final class TransitionRecorder: Sendable {
    let transitions = Observed<[LinkTransition]>([])

    /// Subscribes before returning, so no transition after this call is missed.
    static func start(_ supervisor: LinkSupervisor) async -> (TransitionRecorder, Task<Void, Never>) {
        let recorder = TransitionRecorder()
        let stream = await supervisor.transitions()
        let task = Task { [transitions = recorder.transitions] in
            for await transition in stream { transitions.update { $0.append(transition) } }
        }
        return (recorder, task)
    }

    /// Waits for the `count`-th transition with `event` and returns it.
    @discardableResult
    func wait(for event: SyncLogEvent, count: Int = 1, ms: UInt64 = 10_000) async throws -> LinkTransition {
        let list = try await withTimeout(ms: ms, "\(count) × \(event.rawValue)") { [transitions] in
            try await transitions.wait { list in list.count { $0.event == event } >= count }
        }
        // The wait returned a list holding at least `count` of them.
        return list.filter { $0.event == event }[count - 1]
    }
}

/// Appends one entry at a time until stopped, each a unique key (`k<n>`) with its sequence
/// number in `Seq`, so that the target's final state is simply one row per appended entry.
final class SteadyProducer: Sendable {
    let log: StreamLog
    let object: String
    let intervalMs: Int
    /// Entries appended and acknowledged so far.
    let appendedCount = Observed(0)
    private let stopRequested = Atomic<Bool>(false)

    init(log: StreamLog, object: String = "Item", intervalMs: Int = 3) {
        self.log = log
        self.object = object
        self.intervalMs = intervalMs
    }

    static func entryJSON(sequence: Int, object: String) -> [UInt8] {
        Array(#"{"org":"acme","object":"\#(object)","op":"insert","key":"k\#(sequence)","ts":"2026-11-25T12:00:00Z","fields":{"Seq":\#(sequence)}}"#.utf8)
    }

    /// Runs until ``stop()``; throws the first append failure.
    func run() async throws {
        var sequence = 0
        while !stopRequested.load(ordering: .relaxed), !Task.isCancelled {
            let result = try await log.append([Self.entryJSON(sequence: sequence, object: object)])
            guard result.firstOffset == UInt64(sequence) else {
                throw ProducerError(description: "append of entry \(sequence) got offset \(result.firstOffset)")
            }
            sequence += 1
            appendedCount.update { $0 = sequence }
            // The pace of a steady producer, not a wait for an event.
            try await Task.sleep(for: .milliseconds(intervalMs))
        }
    }

    func stop() { stopRequested.store(true, ordering: .relaxed) }

    /// Waits until at least `count` entries were appended.
    func waitForAppended(_ count: Int, ms: UInt64 = 10_000) async throws {
        try await withTimeout(ms: ms, "\(count) appended entries") { [appendedCount] in
            _ = try await appendedCount.wait { $0 >= count }
        }
    }

    struct ProducerError: Error, CustomStringConvertible {
        var description: String
    }
}

/// A fresh directory under the system's temp dir, removed by the caller.
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.path + "/\(prefix)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// The logger links use in these tests: warnings and above (or `ORGSYNC_TEST_LOG_LEVEL`), so a
/// failing run explains itself.
func testLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["ORGSYNC_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
    return logger
}

/// Short intervals for tests on the real clock: failures show within milliseconds, K = 3
/// probes 200 ms apart.
func fastLinkConfiguration() -> LinkSupervisorConfiguration {
    var configuration = LinkSupervisorConfiguration()
    configuration.probeThreshold = 3
    configuration.verifyIntervalMs = 200
    configuration.verifyWindowMs = 2_000
    configuration.backoffBaseMs = 100
    configuration.backoffCapMs = 500
    configuration.jitterRatio = 0.2
    configuration.batchEntriesMax = 200
    return configuration
}

/// Waits until the link's status satisfies `predicate`, for at most `ms`, and returns it.
///
/// The supervisor sets its in-memory cursor just after the cursor store returns, so a status
/// read right after a cursor wait may still show the previous cursor: this asks again (every
/// 2 ms) until the status agrees, within the bound.
@discardableResult
func waitForStatus(
    _ supervisor: LinkSupervisor, _ what: String, ms: UInt64 = 5_000, where predicate: @escaping @Sendable (LinkStatus) -> Bool
) async throws -> LinkStatus {
    try await waitForReading("status of \(supervisor.name): \(what)", ms: ms, read: { await supervisor.status() }, where: predicate)
}

/// Reads (every 2 ms) until `predicate` holds for the reading, for at most `ms`, and returns it:
/// for statuses that are set just after the event a test can wait on.
func waitForReading<Reading: Sendable>(
    _ what: String, ms: UInt64, read: @escaping @Sendable () async -> Reading, where predicate: @escaping @Sendable (Reading) -> Bool
) async throws -> Reading {
    try await withTimeout(ms: ms, what) {
        while true {
            let reading = await read()
            if predicate(reading) { return reading }
            try await Task.sleep(for: .milliseconds(2))
        }
    }
}

/// Passes every call to `inner` and remembers which call is in flight and since when, so that a
/// test that times out can say whether the link was waiting on its target.
final class CallTracingAdapter: OrgAdapter {
    let inner: any OrgAdapter
    private let clock = SystemLinkClock()
    private let inFlight = Mutex<(call: String, sinceMs: UInt64)?>(nil)

    init(_ inner: any OrgAdapter) { self.inner = inner }

    /// "apply for 5012 ms", or "none".
    var callInFlight: String {
        let now = clock.nowMs()
        return inFlight.withLock { $0.map { "\($0.call) for \(now - $0.sinceMs) ms" } } ?? "none"
    }

    private func traced<T>(_ call: String, _ body: () async throws -> T) async rethrows -> T {
        let now = clock.nowMs()
        inFlight.withLock { $0 = (call, now) }
        defer { inFlight.withLock { $0 = nil } }
        return try await body()
    }

    func open() async throws { try await traced("open") { try await inner.open() } }
    func apply(_ batch: EntryBatch) async throws { try await traced("apply") { try await inner.apply(batch) } }
    func probe() async throws { try await traced("probe") { try await inner.probe() } }
    func appliedPosition() async throws -> AppliedPosition? { try await traced("appliedPosition") { try await inner.appliedPosition() } }
    func setAppliedPosition(_ position: AppliedPosition?) async throws {
        try await traced("setAppliedPosition") { try await inner.setAppliedPosition(position) }
    }
    func close() async { await traced("close") { await inner.close() } }
}

/// A link from a real segment log in a temporary directory into the real PostgreSQL, running:
/// log, traced adapter, observed cursor store, supervisor with `fastLinkConfiguration()`, a
/// transition recorder and (when asked) a steady producer. Call `stop()` in a `defer` (it
/// cancels what runs, also when the test fails) and `finish()` at the end; the directory goes
/// with the rig.
final class PostgresLinkRig: Sendable {
    let linkName: String
    let directory: String
    let log: StreamLog
    let adapter: CallTracingAdapter
    let cursors: ObservedCursorStore
    let supervisor: LinkSupervisor
    let recorder: TransitionRecorder
    let producer: SteadyProducer
    let clock = SystemLinkClock()
    let run: Task<Void, any Error>
    /// The producer's task; nil unless started with `steadyProducer`.
    let producing: Task<Void, any Error>?
    private let recording: Task<Void, Never>

    init(linkName: String, settings: [String: String], randomSeed: UInt64, steadyProducer: Bool) async throws {
        self.linkName = linkName
        directory = try makeTemporaryDirectory("orgsync-" + linkName)
        log = try StreamLog.open(dataDirectory: directory, name: "events", logger: testLogger("orgsync.log"))
        adapter = try CallTracingAdapter(PostgresAdapterFactory().makeAdapter(AdapterConfiguration(
            linkName: linkName, streamName: "events", settings: settings, dataDirectory: directory)))
        cursors = ObservedCursorStore(log: log)
        supervisor = try LinkSupervisor(
            name: linkName, source: StreamLogLinkSource(log: log), adapter: adapter, cursorStore: cursors,
            configuration: fastLinkConfiguration(), clock: clock, logger: testLogger("orgsync.link"), randomSeed: randomSeed)
        (recorder, recording) = await TransitionRecorder.start(supervisor)
        producer = SteadyProducer(log: log)
        let supervisor = self.supervisor
        let producer = self.producer
        run = Task { try await supervisor.run() }
        producing = steadyProducer ? Task { try await producer.run() } : nil
    }

    /// A test that returned early leaves no directory behind either.
    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Cancels the producer, the link and the recorder (safe to call more than once).
    func stop() {
        producer.stop()
        producing?.cancel()
        run.cancel()
        recording.cancel()
    }

    /// Stops the producer, waits (at most 15 s) until the link has applied the whole stream, and
    /// checks the target's table `Item` in `schema` holds every entry exactly once (a row each,
    /// each sequence number once); then drops the schema.
    func drainAndCheckEveryEntryOnce(_ server: LinkTestPostgres.Connection, schema: String) async throws {
        producer.stop()
        try await producing?.value
        let endOffset = log.endOffset
        try await cursors.waitForCursor(link: linkName, atLeast: Offset(endOffset), ms: 15_000)
        let db = try await LinkTestPostgres.connect(server)
        let table = "\"\(schema)\".\"Item\""
        do {
            #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table)")) == Int64(endOffset))
            #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT count(DISTINCT \"Seq\") FROM \(table)")) == Int64(endOffset))
        } catch {
            try? await db.close()
            throw error
        }
        _ = try? await db.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE"), logger: Logger(label: "test"))
        try? await db.close()
    }

    /// Ends the link (its error, if it failed, is thrown), closes the log and removes the directory.
    func finish() async throws {
        stop()
        let ended = await run.result
        await log.close()
        try? FileManager.default.removeItem(atPath: directory)
        try ended.get()
    }
}
