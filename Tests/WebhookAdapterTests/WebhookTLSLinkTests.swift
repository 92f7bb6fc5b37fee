import OrgSyncTestHTTP
import Logging
import NIOHTTP1
import OrgSyncCore
import OrgSyncPluginAPI
import OrgSyncTestCertificates
import OrgSyncTestSupport
@testable import WebhookAdapter
import Testing

/// A TLS failure as the link sees it: a connection failure — suspended, the reason in its status
/// and sync log — and the way back is the usual one, K probes in a row, once a valid certificate
/// is in place. The real adapter against a real HTTPS receiver; the link's time on a manual clock.
@Suite struct WebhookTLSLinkTests {
    @Test func anExpiredCertificateSuspendsTheLinkAndARenewedOneResumesItAfterKProbes() async throws {
        try await withCertificates { certificates in
            let expired = try certificates.issue("expired", hosts: ["127.0.0.1"], validity: .expired)
            let renewed = try certificates.issue("renewed", hosts: ["127.0.0.1"])
            let receiver = try await TestHTTPServer.start(tls: ServerTLS(expired), answerOK)
            let adapter = WebhookAdapter(
                streamName: "events",
                settings: WebhookAdapterSettings(
                    url: receiver.url, timeoutMs: 5_000, probeURL: receiver.url + "/probe", tls: WebhookTLSSettings(caFile: certificates.caFile)),
                logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
            let clock = ManualClock()
            let source = InMemoryEntrySource()
            let cursors = InMemoryCursorStore()
            var configuration = LinkSupervisorConfiguration()
            configuration.probeThreshold = 3
            configuration.verifyIntervalMs = 1_000
            configuration.verifyWindowMs = 10_000
            configuration.backoffBaseMs = 500
            configuration.jitterRatio = 0
            let supervisor = try LinkSupervisor(
                name: "hook", source: source, adapter: adapter, cursorStore: cursors, configuration: configuration, clock: clock,
                logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, randomSeed: 42, wallClockMs: { clock.nowMs() })
            let transitions = Observed<[LinkTransition]>([])
            let stream = await supervisor.transitions()
            Task { for await transition in stream { transitions.update { $0.append(transition) } } }
            let run = Task { try await supervisor.run() }
            defer { run.cancel() }
            source.append(count: 3)

            try await withTimeout("the link suspended") {
                _ = try await transitions.wait { $0.contains { $0.event == .suspended } }
            }
            let suspended = await supervisor.status()
            #expect(suspended.state == .suspended)
            #expect(suspended.lastError?.contains("TLS: certificate expired") == true, "\(suspended.lastError ?? "")")
            #expect(supervisor.syncLog.page().first { $0.event == .suspended }?.reason.contains("TLS: certificate expired") == true)
            #expect(receiver.requests.isEmpty, "nothing was sent to a receiver whose certificate failed")

            try receiver.useTLS(ServerTLS(renewed))
            // Probes on the link's clock: the first answered one starts verifying, the third resumes.
            try await withTimeout("probe 1") { _ = try await clock.advanceToNextDeadline() }
            try await withTimeout("verifying") { _ = try await transitions.wait { $0.contains { $0.event == .verifying } } }
            #expect(receiver.requests.allSatisfy { $0.method == .HEAD })
            try await withTimeout("probe 2") { _ = try await clock.advanceToNextDeadline() }
            try await withTimeout("probe 3") { _ = try await clock.advanceToNextDeadline() }
            try await withTimeout("resumed") { _ = try await transitions.wait { $0.contains { $0.event == .resumed } } }
            try await withTimeout("cursor 3") { try await cursors.waitForCursor(link: "hook", atLeast: Offset(3)) }
            let methods = receiver.requests.map(\.method)
            let firstPost = try #require(methods.firstIndex(of: .POST), "\(methods)")
            #expect(methods[..<firstPost].count { $0 == .HEAD } >= 3, "K = 3 probes answered before anything was applied: \(methods)")
            #expect(await supervisor.status().state == .active)
            run.cancel()
            _ = await run.result
            await adapter.close()
            await receiver.stop()
        }
    }
}
