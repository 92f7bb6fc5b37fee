import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestSupport
import PostgresAdapter
import PostgresNIO
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// With the adapter's **default** timeouts, a PostgreSQL server whose processes are frozen
/// (SIGSTOP: it neither answers nor closes anything) suspends the link within 2 s, and a batch
/// that is merely slow on a healthy server (waiting on a lock for seconds) is not taken for a
/// dead one. Freezes the shared server: part of `PostgresLinkTests`' run on its own in `.ci/run`.
extension PostgresLinkTests {
    /// The link's settings with every timeout left at its default.
    static func defaultSettings(_ server: LinkTestPostgres.Connection, schema: String) -> [String: String] {
        var settings = LinkTestPostgres.adapterSettings(server, schema: schema)
        settings["connect_timeout_ms"] = nil
        settings["query_timeout_ms"] = nil
        return settings
    }

    /// The postmaster and every process it started (its backends and helpers).
    static func serverProcesses() throws -> [pid_t] {
        guard let data = LinkTestPostgres.environment["ORGSYNC_TEST_PG_DATA"] else { throw LinkTestPostgres.NotConfigured() }
        let pidFile = try String(contentsOfFile: data + "/postmaster.pid", encoding: .utf8)
        guard let postmaster = pidFile.split(separator: "\n").first.flatMap({ pid_t($0) }) else { throw LinkTestPostgres.NotConfigured() }
        var pids = [postmaster]
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, pid_t(fields[1]) == postmaster { pids.append(pid) }
        }
        return pids
    }

    static func signal(_ pids: [pid_t], _ number: Int32) {
        for pid in pids { kill(pid, number) }
    }

    @Test func aFrozenServerSuspendsTheLinkWithinTwoSecondsWithDefaultSettings() async throws {
        let server = try LinkTestPostgres.connection()
        let schema = "t_frozen_\(UInt32.random(in: 0...UInt32.max))"
        let rig = try await PostgresLinkRig(
            linkName: "frozen", settings: Self.defaultSettings(server, schema: schema), randomSeed: 11, steadyProducer: true)
        defer { rig.stop() }
        let (adapter, cursors, recorder, clock) = (rig.adapter, rig.cursors, rig.recorder, rig.clock)
        try await cursors.waitForCursor(link: "frozen", atLeast: 50)
        let frozen = try Self.serverProcesses()
        #expect(frozen.count > 1, "the postmaster and its backends")
        let frozeMs = clock.nowMs()
        Self.signal(frozen, SIGSTOP)
        let suspended: LinkTransition
        do {
            suspended = try await recorder.wait(for: .suspended, ms: 10_000)
        } catch {
            Self.signal(frozen, SIGCONT)
            Issue.record("the link did not suspend within 10 s of freezing the server; adapter call in flight: \(adapter.callInFlight)")
            return
        }
        Self.signal(frozen, SIGCONT)
        #expect(suspended.atMs - frozeMs <= 2_000, "suspended \(suspended.atMs - frozeMs) ms after the server froze (default settings)")
        // Thawed, the link verifies and resumes, and the stream drains with every entry once.
        _ = try await recorder.wait(for: .resumed, ms: 15_000)
        try await rig.drainAndCheckEveryEntryOnce(server, schema: schema)
        try await rig.finish()
    }

    @Test func aBatchWaitingSecondsOnALockOfAHealthyServerIsNotTakenForADeadOne() async throws {
        let server = try LinkTestPostgres.connection()
        let schema = "t_slow_\(UInt32.random(in: 0...UInt32.max))"
        let rig = try await PostgresLinkRig(
            linkName: "slow", settings: Self.defaultSettings(server, schema: schema), randomSeed: 12, steadyProducer: false)
        defer { rig.stop() }
        let (log, cursors, supervisor, recorder) = (rig.log, rig.cursors, rig.supervisor, rig.recorder)
        let entry = { (seq: Int) in Array(#"{"org":"o","object":"Item","op":"upsert","key":"k\#(seq)","ts":"t","fields":{"Seq":\#(seq)}}"#.utf8) }
        _ = try await log.append((0..<10).map(entry))
        try await cursors.waitForCursor(link: "slow", atLeast: 10)
        // Another session holds the table for 4 s: the next batch waits on the lock, on a
        // server that answers every liveness probe.
        let locker = try await LinkTestPostgres.connect(server)
        _ = try await locker.query("BEGIN", logger: Logger(label: "test"))
        _ = try await locker.query(PostgresQuery(unsafeSQL: "LOCK TABLE \"\(schema)\".\"Item\" IN ACCESS EXCLUSIVE MODE"), logger: Logger(label: "test"))
        _ = try await log.append((10..<20).map(entry))
        try await Task.sleep(for: .seconds(4))  // the lock is held for a fixed time on purpose: that is the slow batch
        #expect(await supervisor.status().cursor == 10, "the batch is still waiting on the lock")
        _ = try await locker.query("COMMIT", logger: Logger(label: "test"))
        try await cursors.waitForCursor(link: "slow", atLeast: 20, ms: 10_000)
        #expect(recorder.transitions.value.allSatisfy { $0.event != .suspended }, "a slow batch on a live server suspended the link")
        _ = try? await locker.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE"), logger: Logger(label: "test"))
        try? await locker.close()
        try await rig.finish()
    }
}
