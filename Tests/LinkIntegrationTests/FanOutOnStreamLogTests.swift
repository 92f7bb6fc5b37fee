import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestSupport
import Testing

/// Two links on one stream of the real segment log, on the real clock: one target down must not
/// slow the other. Their cursors are kept in memory: the bound on each append is about the links'
/// independence, and an fsync of a cursor file on a disk shared with a parallel test run can take
/// longer than that bound by itself (the cursor files have tests of their own).
@Suite struct FanOutOnStreamLogTests {
    @Test func oneTargetDownTheOtherLinkKeepsUpWithEveryAppend() async throws {
        let directory = try makeTemporaryDirectory("orgsync-fanout")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try StreamLog.open(dataDirectory: directory, name: "events", logger: testLogger("orgsync.log"))
        let cursors = InMemoryCursorStore()
        let configuration = fastLinkConfiguration()
        let clock = SystemLinkClock()
        let down = RecordingAdapter()
        let up = RecordingAdapter()
        down.setDown(true)
        func link(_ name: String, _ adapter: RecordingAdapter) throws -> LinkSupervisor {
            try LinkSupervisor(
                name: name, source: StreamLogLinkSource(log: log), adapter: adapter, cursorStore: cursors,
                configuration: configuration, clock: clock, logger: testLogger("orgsync.link"), randomSeed: 11)
        }
        let downLink = try link("down", down)
        let upLink = try link("up", up)
        let (downRecorder, recording) = await TransitionRecorder.start(downLink)
        let runs = [Task { try await downLink.run() }, Task { try await upLink.run() }]
        defer {
            runs.forEach { $0.cancel() }
            recording.cancel()
        }

        // The first append makes the down link try, fail and suspend.
        _ = try await log.append([SteadyProducer.entryJSON(sequence: 0, object: "Item")])
        try await downRecorder.wait(for: .suspended, ms: 5_000)

        // Every further append reaches the healthy target within a short bound (its lag is back
        // to 0 within 1 s of each append), while the other link stays suspended and probes.
        let entryCount = 200
        for sequence in 1..<entryCount {
            let result = try await log.append([SteadyProducer.entryJSON(sequence: sequence, object: "Item")])
            try await withTimeout(ms: 1_000, "cursor of up at \(result.lastOffset + 1)") {
                try await cursors.waitForCursor(link: "up", atLeast: Offset(result.lastOffset + 1))
            }
        }
        let upStatus = try await waitForStatus(upLink, "lag 0", ms: 1_000) { $0.lagCount == 0 }
        let downStatus = await downLink.status()
        #expect(upStatus.state == .active)
        #expect(upStatus.lagCount == 0)
        #expect(up.appliedOffsets.map(\.rawValue) == Array(0..<UInt64(entryCount)))
        #expect(downStatus.state == .suspended)
        #expect(downStatus.cursor == 0)
        #expect(downStatus.lagCount == UInt64(entryCount))
        #expect(down.appliedOffsets.isEmpty)

        // The target comes back: the down link verifies, resumes and catches up, exactly once.
        down.setDown(false)
        try await downRecorder.wait(for: .resumed, ms: 10_000)
        try await withTimeout(ms: 10_000, "cursor of down at \(entryCount)") {
            try await cursors.waitForCursor(link: "down", atLeast: Offset(UInt64(entryCount)))
        }
        #expect(down.appliedOffsets.map(\.rawValue) == Array(0..<UInt64(entryCount)))
        #expect(cursors.cursors.value["up"] == Offset(UInt64(entryCount)))
        #expect(cursors.cursors.value["down"] == Offset(UInt64(entryCount)))
        #expect(cursors.backwardStoreCount.value == 0, "no cursor moved backwards")
        await log.close()
    }
}
