import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestSupport
import PostgresAdapter
import OrgSyncTestPostgres
import PostgresNIO
import Testing

/// A link from the real segment log into the real PostgreSQL of `.ci/postgres.sh`, under a
/// steady stream, while the server is stopped and started again. It stops the shared server:
/// `.ci/run` runs it on its own (`--filter PostgresLinkTests`), after the other tests.
@Suite(.serialized, .enabled(if: LinkTestPostgres.shouldRun, LinkTestPostgres.skipMessage))
struct PostgresLinkTests {
    static let linkName = "pg-link"

    @Test func serverStopSuspendsWithinOneSecondAndRestartResumesAfterKProbesWithEveryEntryOnce() async throws {
        let server = try LinkTestPostgres.connection()
        let schema = "t_link_\(UInt32.random(in: 0...UInt32.max))"
        let rig = try await PostgresLinkRig(
            linkName: Self.linkName, settings: LinkTestPostgres.adapterSettings(server, schema: schema), randomSeed: 7,
            steadyProducer: true)
        defer { rig.stop() }
        let (log, adapter, cursors, supervisor, recorder, producer, clock) =
            (rig.log, rig.adapter, rig.cursors, rig.supervisor, rig.recorder, rig.producer, rig.clock)
        let configuration = fastLinkConfiguration()
        var serverStopped = false
        do {
            // Up and consuming: the first 50 entries reach the target.
            try await cursors.waitForCursor(link: Self.linkName, atLeast: 50)

            // Stop the server under the stream; the link must notice within a second.
            let stopRequestedMs = clock.nowMs()
            #expect(try await LinkTestPostgres.pgCtl(["stop", "-m", "immediate"]) == 0)
            serverStopped = true
            let stoppedMs = clock.nowMs()
            // The adapter's deadline answers even when a query never returns (a connection that
            // died under it), so the link must suspend, every time.
            let suspended: LinkTransition
            do {
                suspended = try await recorder.wait(for: .suspended, ms: 5_000)
            } catch {
                Issue.record("the link did not suspend; adapter call in flight: \(adapter.callInFlight)")
                #expect(try await LinkTestPostgres.pgCtl(["start"]) == 0)
                producer.stop()
                return
            }
            #expect(suspended.atMs >= stopRequestedMs)
            #expect(suspended.atMs <= stoppedMs + 1_000, "suspended \(suspended.atMs - stoppedMs) ms after the server stopped")
            let frozen = await supervisor.status()
            #expect(frozen.state == .suspended)

            // Producers keep appending while the target is down; the cursor stays frozen.
            let appendedAtSuspension = producer.appendedCount.value
            try await producer.waitForAppended(appendedAtSuspension + 100, ms: 5_000)
            let whileDown = await supervisor.status()
            #expect(whileDown.state == .suspended)
            #expect(whileDown.cursor == frozen.cursor)
            #expect(whileDown.lagCount >= 100)
            #expect(recorder.transitions.value.allSatisfy { $0.event != .resumed }, "resumed while the server was down")

            // Start the server: the link verifies with K probes, then resumes.
            let startRequestedMs = clock.nowMs()
            #expect(try await LinkTestPostgres.pgCtl(["start"]) == 0)
            serverStopped = false
            let resumed = try await recorder.wait(for: .resumed, ms: 10_000)
            let all = recorder.transitions.value
            let verifying = try #require(all.last { $0.event == .verifying && $0.atMs <= resumed.atMs })
            #expect(verifying.atMs >= startRequestedMs, "verification began before the server was started")
            #expect(resumed.atMs - verifying.atMs >= configuration.verifyIntervalMs * UInt64(configuration.probeThreshold - 1))
            #expect(resumed.reason.hasPrefix("target answered \(configuration.probeThreshold) consecutive probes"))
            #expect(all.first?.event == .suspended)

            // Let the stream run on after the resume, then stop it: the lag drains to 0.
            let appendedAtResume = producer.appendedCount.value
            try await producer.waitForAppended(appendedAtResume + 50, ms: 5_000)
            producer.stop()
            try await rig.producing?.value
            let endOffset = log.endOffset
            #expect(endOffset == UInt64(producer.appendedCount.value))
            try await cursors.waitForCursor(link: Self.linkName, atLeast: Offset(endOffset), ms: 10_000)
            let drained = try await waitForStatus(supervisor, "lag 0") { $0.lagCount == 0 }
            #expect(drained.state == .active)
            #expect(drained.lagCount == 0)
            #expect(drained.suspensionCount == 1)
            #expect(drained.rejectedCount == 0)
            #expect(drained.deadLetterFailedCount == 0)
            let syncLogEvents = Array(supervisor.syncLog.page().reversed().map(\.event))
            #expect(syncLogEvents.first == .suspended)
            #expect(syncLogEvents.last == .resumed)

            // The target holds every entry exactly once: one row per unique key, each sequence
            // number once, and the link's applied offset is the last entry's.
            let db = try await LinkTestPostgres.connect(server)
            do {
                let table = "\"\(schema)\".\"Item\""
                let applied = try await db.scalar(PostgresQuery(unsafeSQL:
                    "SELECT applied_offset FROM \"\(schema)\".orgsync_offsets WHERE link = '\(Self.linkName)'"))
                #expect(applied == Int64(endOffset) - 1)
                #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table)")) == Int64(endOffset))
                #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT count(DISTINCT \"Seq\") FROM \(table)")) == Int64(endOffset))
                #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT min(\"Seq\") FROM \(table)")) == 0)
                #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT max(\"Seq\") FROM \(table)")) == Int64(endOffset) - 1)
                #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table) WHERE \"key\" <> 'k' || \"Seq\"")) == 0)
                _ = try? await db.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE"), logger: Logger(label: "test"))
                try? await db.close()
            } catch {
                try? await db.close()
                throw error
            }
        } catch {
            // Say where the link stood, so that a failed run explains itself.
            let status = await supervisor.status()
            print("link at failure: \(status.state.rawValue), cursor \(status.cursor), end \(status.endOffset), last error \(status.lastError ?? "none"); adapter call in flight: \(adapter.callInFlight); transitions \(recorder.transitions.value.map { "\($0.atMs) \($0.event.rawValue)" })")
            // Leave the server running for the other suites, whatever failed.
            let running = await LinkTestPostgres.isRunning()
            if serverStopped || !running { _ = try? await LinkTestPostgres.pgCtl(["start"]) }
            throw error
        }
        try await rig.finish()
    }
}
