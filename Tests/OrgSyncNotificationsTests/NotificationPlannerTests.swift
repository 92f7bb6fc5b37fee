import Logging
import OrgSyncCore
import OrgSyncNotifications
import OrgSyncPluginAPI
import OrgSyncTestSupport
import Testing

@Suite struct NotificationPlannerTests {
    let rules = NotificationPlanner.Rules(stableAfterMs: 600_000, rejectedSummaryMs: 60_000)

    func record(_ sequence: UInt64, _ event: SyncLogEvent, _ state: LinkState, atMs: UInt64, offset: UInt64? = nil) -> SyncLogRecord {
        SyncLogRecord(sequence: sequence, timeMs: atMs, linkClockMs: atMs, event: event, state: state,
                      reason: "\(event.rawValue) at \(atMs)", offset: offset.map(Offset.init(rawValue:)))
    }

    @Test func rejectionsWithinTheWindowAreOneSummaryThatWaitsForTheWindowOrTheNextEvent() {
        var planner = NotificationPlanner(afterSequence: 0, idPrefix: "p")
        let records = [
            record(1, .entryFailed, .active, atMs: 1_000, offset: 10),
            record(2, .entryFailed, .active, atMs: 2_000, offset: 11),
            record(3, .entryFailed, .active, atMs: 30_000, offset: 15),
        ]
        #expect(planner.plan(records, link: "demo", stream: "events", nowMs: 30_000, rules: rules).isEmpty, "the window is open")
        #expect(planner.nextDueMs(rules: rules) == 61_000)
        let summary = planner.plan([], link: "demo", stream: "events", nowMs: 61_000, rules: rules)
        #expect(summary.map(\.type) == [.entryRejected])
        #expect(summary.first?.count == 3 && summary.first?.firstOffset == 10 && summary.first?.lastOffset == 15)
        #expect(summary.first?.id == "p.demo.1.entry.rejected")
        // A rejection past the window starts a new summary; a suspension closes it at once, first.
        let next = planner.plan([record(4, .entryFailed, .active, atMs: 70_000, offset: 20), record(5, .suspended, .suspended, atMs: 71_000)],
                                link: "demo", stream: "events", nowMs: 71_000, rules: rules)
        #expect(next.map(\.type) == [.entryRejected, .linkSuspended])
        #expect(next.first?.count == 1 && next.first?.reason == "entry_failed at 70000")
        #expect(planner.afterSequence == 5)
        #expect(planner.plan([record(5, .resumed, .active, atMs: 72_000)], link: "demo", stream: "events", nowMs: 72_000, rules: rules).isEmpty,
                "a record already planned is not planned again")
    }

    @Test func theSameRecordsPlanTheSameEventsWithTheSameIds() {
        let records = [record(7, .suspended, .suspended, atMs: 5), record(8, .resumed, .active, atMs: 9), record(9, .diverged, .diverged, atMs: 12)]
        var first = NotificationPlanner(afterSequence: 6, idPrefix: "msg_x")
        var again = first
        let a = first.plan(records, link: "l", stream: "s", nowMs: 20, rules: rules)
        let b = again.plan(records, link: "l", stream: "s", nowMs: 20, rules: rules)
        #expect(a == b)
        #expect(a.map(\.id) == ["msg_x.l.7.link.suspended", "msg_x.l.8.link.resumed", "msg_x.l.9.link.diverged"])
    }

    /// A real supervisor on a manual clock flaps (flap limit 0: failing again right after a
    /// resume holds it down), comes back after the hold-down and stays up: its sync log gives one
    /// `link.flapping` (after the suspension that crossed the limit) and, once quiet for
    /// `stable_after_ms`, one `link.stable` — the resumption inside the flapping is not sent.
    @Test func aFlappingSupervisorGivesOneFlappingAndOneStable() async throws {
        var configuration = LinkSupervisorConfiguration()
        configuration.probeThreshold = 1
        configuration.verifyIntervalMs = 1_000
        configuration.backoffBaseMs = 500
        configuration.jitterRatio = 0
        configuration.flapLimit = 0
        configuration.holdDownMs = 60_000
        let clock = ManualClock()
        let source = InMemoryEntrySource()
        let adapter = RecordingAdapter()
        let cursors = InMemoryCursorStore()
        let supervisor = try LinkSupervisor(
            name: "demo", source: source, adapter: adapter, cursorStore: cursors, configuration: configuration, clock: clock,
            logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, randomSeed: 1, wallClockMs: { clock.nowMs() })
        let seen = Observed<[SyncLogEvent]>([])
        let stream = await supervisor.transitions()
        let watcher = Task { for await transition in stream { seen.update { $0.append(transition.event) } } }
        let run = Task { try await supervisor.run() }
        defer { run.cancel(); watcher.cancel() }
        func waitFor(_ event: SyncLogEvent) async throws {
            try await withTimeout(event.rawValue) { _ = try await seen.wait(until: { $0.contains(event) }) }
        }
        var planner = NotificationPlanner(afterSequence: 0, idPrefix: "p")
        var events: [NotificationEvent] = []
        func planNow() { events += planner.plan(supervisor.syncLog.records(afterSequence: planner.afterSequence), link: "demo", stream: "events", nowMs: clock.nowMs(), rules: rules) }

        adapter.failNextApplies([.connection("reset")])
        _ = source.append(count: 1)
        try await waitFor(.suspended)
        _ = try await withTimeout("a probe timer") { try await clock.advanceToNextDeadline() }
        try await withTimeout("cursor 1") { try await cursors.waitForCursor(link: "demo", atLeast: 1) }
        adapter.failNextApplies([.connection("reset again")])
        _ = source.append(count: 1)
        try await waitFor(.heldDown)
        planNow()
        _ = try await withTimeout("the hold-down's end") { try await clock.advanceToNextDeadline() }
        try await withTimeout("cursor 2") { try await cursors.waitForCursor(link: "demo", atLeast: 2) }
        planNow()
        #expect(events.map(\.type) == [.linkSuspended, .linkResumed, .linkSuspended, .linkFlapping, .linkHeldDown], "\(events.map(\.type))")
        #expect(supervisor.syncLog.records(afterSequence: 0).count { $0.event == .resumed } == 2, "the link did resume twice")
        let resumedAt = try #require(supervisor.syncLog.records(afterSequence: 0).last { $0.event == .resumed }).timeMs
        clock.advance(toMs: resumedAt + 599_999)
        planNow()
        #expect(events.count == 5, "not yet quiet for stable_after_ms")
        clock.advance(toMs: resumedAt + 600_000)
        planNow()
        planNow()
        #expect(events.map(\.type) == [.linkSuspended, .linkResumed, .linkSuspended, .linkFlapping, .linkHeldDown, .linkStable])
        #expect(events.count { $0.type == .linkFlapping } == 1 && events.count { $0.type == .linkStable } == 1)
    }
}
