import Foundation
import Logging
import OrgSyncCore
import OrgSyncPluginAPI
import OrgSyncTestSupport
import Testing

@Suite struct LinkLoggingTests {
    @Test func eachTransitionIsLoggedOnceNotEveryProbe() async throws {
        let captured = CapturedLogs()
        let clock = ManualClock()
        let source = InMemoryEntrySource()
        let adapter = RecordingAdapter()
        let cursors = InMemoryCursorStore()
        let supervisor = try LinkSupervisor(
            name: "logged", source: source, adapter: adapter, cursorStore: cursors,
            configuration: LinkHarness.configuration, clock: clock, logger: captured.logger(), randomSeed: 1)
        let run = Task { try await supervisor.run() }
        defer { run.cancel() }
        adapter.setDown(true)
        source.append(count: 3)
        for _ in 0..<6 {  // six failed probes
            try await withTimeout("a probe timer") { _ = try await clock.advanceToNextDeadline() }
        }
        // The sixth probe has failed once the link sleeps again: the target comes back after it.
        try await withTimeout("the timer after the sixth probe") { try await clock.waitForSleepers() }
        adapter.setDown(false)
        for _ in 0..<3 {
            try await withTimeout("a probe timer") { _ = try await clock.advanceToNextDeadline() }
        }
        try await withTimeout("the cursor") { try await cursors.waitForCursor(link: "logged", atLeast: 3) }
        let events = captured.all.compactMap(\.event)
        #expect(events == ["suspended", "verifying", "resumed"])
        let warnings = captured.all.filter { $0.level == .warning }.map(\.message)
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains("target down") == true)
        #expect(adapter.target.value.probeCount == 3)
    }

    @Test func syncLogAndDeadLettersSurviveARestartOfTheLink() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let source = InMemoryEntrySource()
        let cursors = InMemoryCursorStore()
        source.append(count: 4)
        for generation in 0..<2 {
            let adapter = RecordingAdapter()
            adapter.reject([1])
            let supervisor = try LinkSupervisor(
                name: "durable", source: source, adapter: adapter, cursorStore: cursors, clock: ManualClock(),
                syncLog: try SyncLog.open(directory: directory.path, link: "durable", recordsMax: 100),
                deadLetters: try DeadLetters.open(directory: directory.path, link: "durable", lettersMax: 100),
                logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
            let run = Task { try await supervisor.run() }
            try await withTimeout("the cursor") { try await cursors.waitForCursor(link: "durable", atLeast: 4) }
            run.cancel()
            _ = await run.result
            // The second generation starts at the cursor: nothing new is rejected, the old record stays.
            #expect(supervisor.deadLetters.page().map(\.offset) == [1])
            #expect(supervisor.syncLog.page().filter { $0.event == .entryFailed }.count == 1)
            #expect(adapter.appliedOffsets == (generation == 0 ? [0, 2, 3] : []))
        }
    }
}
