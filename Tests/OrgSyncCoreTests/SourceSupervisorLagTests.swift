import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestSupport
import Synchronization
import Testing

/// A change source that plays rounds a test hands it, one per `capture` call: each round
/// waits in `capture` until the test releases it, so the test reads the supervisor's status
/// between rounds with nothing moving. The database behind it is the script.
final class ScriptedChangeSource: ChangeSource {
    enum Round: Sendable {
        /// Appends one entry at `commit` and returns the round.
        case changes(commit: UInt64, caughtUp: Bool, newestCommitTimeMs: UInt64?)
        /// Fails as a lost connection.
        case fail
    }

    struct Lost: Error, CustomStringConvertible { var description: String { "connection lost" } }

    /// Rounds released by the test, taken in order.
    let released = Observed<[Round]>([])
    /// `capture` calls entered so far.
    let entered = Observed(0)
    let pollIntervalMs: UInt64 = 200

    func release(_ round: Round) { released.update { $0.append(round) } }

    func open() async throws {}
    func close() async {}
    func probe() async throws {}

    func capture(after position: SourcePosition?, lastEntry: Entry?, into sink: any CaptureSink) async throws -> CaptureRound {
        let index = entered.update { count in
            defer { count += 1 }
            return count
        }
        let rounds = try await released.wait { $0.count > index }
        switch rounds[index] {
        case .fail:
            throw Lost()
        case .changes(let commit, let caughtUp, let newest):
            let entry = #"{"org":"db","object":"t","op":"upsert","key":"k\#(commit)","ts":"t","fields":{},"commit":\#(commit)}"#
            try await sink.append([Array(entry.utf8)], through: SourcePosition(commit: commit, change: 0))
            return CaptureRound(appendedChanges: 1, transactions: 1, caughtUp: caughtUp, newestCommitTimeMs: newest)
        }
    }

    func position(of entry: Entry) -> SourcePosition? {
        guard case .int(let commit)? = entry.extra["commit"], let value = UInt64(exactly: commit) else { return nil }
        return SourcePosition(commit: value, change: 0)
    }

    func lagBytes() async -> UInt64? { nil }
}

/// A source's lag in time: from the moment up to which every commit is known to be in the
/// stream — the start of the last round that read everything, or the newest commit read —
/// growing while the source is behind or suspended. On a manual clock (also the wall clock),
/// against a real stream of the segment log.
@Suite struct SourceSupervisorLagTests {
    @Test func lagCountsFromWhatIsKnownCapturedAndGrowsWhileBehindOrSuspended() async throws {
        let directory = try makeTemporaryDirectory("orgsync-source-lag")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try StreamLog.open(dataDirectory: directory, name: "events")
        let clock = ManualClock(startMs: 1_000_000)
        let source = ScriptedChangeSource()
        var configuration = LinkSupervisorConfiguration()
        configuration.jitterRatio = 0
        configuration.backoffBaseMs = 1_000
        configuration.idleMemoryReleaseAfterMs = nil
        let supervisor = try SourceSupervisor(
            name: "crm", source: source, stream: StreamLogCaptureStream(log: log), configuration: configuration, clock: clock,
            logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, randomSeed: 1, wallClockMs: { clock.nowMs() })
        let run = Task { try await supervisor.run() }
        defer { run.cancel() }

        try await withTimeout("round 1 to start") { _ = try await source.entered.wait { $0 >= 1 } }
        #expect(await supervisor.status().lagMs == nil, "nothing is known captured before a round ends")

        // Round 1 stops at its size limit: everything up to its newest commit (5 s ago) is in.
        source.release(.changes(commit: 10, caughtUp: false, newestCommitTimeMs: 995_000))
        try await withTimeout("round 2 to start") { _ = try await source.entered.wait { $0 >= 2 } }
        #expect(await supervisor.status().lagMs == 5_000)
        clock.advance(byMs: 3_000)
        #expect(await supervisor.status().lagMs == 8_000, "behind: the lag grows with the clock")

        // Round 2 (started at 1 000 000, before the clock moved) reads everything.
        source.release(.changes(commit: 11, caughtUp: true, newestCommitTimeMs: 996_000))
        try await withTimeout("the poll wait") { try await clock.waitForSleepers() }
        #expect(await supervisor.status().lagMs == 3_000, "caught up as of the round's start")
        #expect(await supervisor.status().position == SourceStatus.Position(SourcePosition(commit: 11, change: 0)))

        // Round 3 fails: the source is suspended, and nothing more is known captured.
        clock.advance(byMs: 200)
        try await withTimeout("round 3 to start") { _ = try await source.entered.wait { $0 >= 3 } }
        source.release(.fail)
        try await withTimeout("the suspension") {
            while await supervisor.status().state != .suspended { await Task.yield() }
        }
        clock.advance(byMs: 60_000)
        let suspended = await supervisor.status()
        #expect(suspended.lagMs == 63_200)
        #expect(suspended.lastError?.contains("connection lost") == true)
    }
}
