import OrgSyncTestHTTP
import OrgSyncTestSupport
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import OrgSyncPluginAPI
@testable import WebhookAdapter
import Synchronization
import Testing

func entry(_ offset: UInt64, _ key: String, _ fields: [String: JSONValue] = [:]) -> Entry {
    Entry(offset: Offset(offset), org: "acme", object: "Contact", op: .upsert, key: key, ts: "2026-11-18T11:06:40.000Z", fields: fields)
}

/// Starts a receiver (over TLS with `serverTLS`), runs `body` with an adapter pointed at it
/// (with the client's `tls` settings), and stops both, also on failure.
func withReceiver(
    timeoutMs: Int = 5_000, headers: [String: String] = [:], logs: CapturedLogs = CapturedLogs(),
    serverTLS: ServerTLS? = nil, tls: WebhookTLSSettings = WebhookTLSSettings(),
    respond: @escaping @Sendable (RecordedRequest) -> Reply?,
    _ body: (WebhookAdapter, TestHTTPServer) async throws -> Void
) async throws {
    let server = try await TestHTTPServer.start(tls: serverTLS, respond)
    let adapter = WebhookAdapter(
        streamName: "events",
        settings: WebhookAdapterSettings(
            url: server.url, headers: headers, timeoutMs: timeoutMs, probeURL: server.url + "/probe", tls: tls),
        logger: logs.logger())
    do {
        // No open(): it probes, and these tests count requests; see openProbesTheReceiver.
        try await body(adapter, server)
    } catch {
        await adapter.close()
        await server.stop()
        throw error
    }
    await adapter.close()
    await server.stop()
}

func adapterError(_ body: () async throws -> Void) async -> AdapterError? {
    do {
        try await body()
        return nil
    } catch let error as AdapterError {
        return error
    } catch {
        Issue.record("expected an AdapterError, got \(type(of: error)): \(error)")
        return nil
    }
}

@Suite struct WebhookAdapterTests {
    @Test func postsTheBatchAsJSONWithAnIdempotencyKey() async throws {
        try await withReceiver(respond: { _ in Reply(status: .ok) }) { adapter, server in
            let raw = Array(#"{"org":"acme","object":"Contact","op":"upsert","key":"k7","ts":"t","fields":{"N":1},"trace":"abc"}"#.utf8)
            let first = try Entry.parse(raw, offset: 7)
            try await adapter.apply(EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [first, entry(8, "k8", ["Name": .string("Zoë")])]))
            let requests = server.requests
            #expect(requests.count == 1)
            let request = try #require(requests.first)
            #expect(request.method == .POST)
            #expect(request.uri == "/hook")
            #expect(request.headers["Idempotency-Key"] == ["events:test:1:7-8"], "the stream's identity is in the key")
            #expect(request.headers["Content-Type"] == ["application/json"])
            let document = try #require(try JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any])
            #expect(document["stream"] as? String == "events")
            #expect(document["stream_id"] as? String == "test")
            #expect(document["epoch"] as? Int == 1)
            #expect(document["first_offset"] as? Int == 7)
            #expect(document["last_offset"] as? Int == 8)
            let entries = try #require(document["entries"] as? [[String: Any]])
            #expect(entries.map { $0["offset"] as? Int } == [7, 8])
            #expect(entries.first?["trace"] as? String == "abc", "the producer's own members travel as sent")
            #expect((entries.last?["fields"] as? [String: Any])?["Name"] as? String == "Zoë")
            #expect(try await adapter.appliedPosition()?.offset == nil)
        }
    }

    @Test func successiveBatchesReuseOneConnection() async throws {
        try await withReceiver(respond: { _ in Reply(status: .ok, body: #"{"ok":true}"#) }) { adapter, server in
            for offset in 0..<5 as Range<UInt64> {
                try await adapter.apply(EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry(offset, "k\(offset)")]))
            }
            #expect(server.requests.count == 5)
            #expect(server.connectionCount == 1, "the response body is read to its end, so the connection is kept alive")
        }
    }

    @Test(arguments: [HTTPResponseStatus.internalServerError, .serviceUnavailable, .tooManyRequests, .unauthorized, .forbidden])
    func serverErrorsAndRefusedCredentialsAreConnectionFailures(status: HTTPResponseStatus) async throws {
        try await withReceiver(respond: { _ in Reply(status: status, body: "later") }) { adapter, _ in
            let error = await adapterError { try await adapter.apply(EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry(1, "a")])) }
            #expect(error?.kind == .connection)
            #expect(error?.targetCode == String(status.code))
        }
    }

    @Test func clientErrorRejectsTheEntryTheBodyNamesWithTheBody() async throws {
        try await withReceiver(respond: { _ in Reply(status: .unprocessableEntity, body: #"{"rejected_offset":11,"error":"bad email"}"#) }) { adapter, _ in
            let error = await adapterError {
                try await adapter.apply(EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry(10, "a"), entry(11, "b"), entry(12, "c")]))
            }
            #expect(error?.kind == .rejected(offset: 11))
            #expect(error?.targetCode == "422")
            #expect(error?.message.contains("bad email") == true)
        }
    }

    @Test func clientErrorWithoutAnOffsetRejectsTheFirstEntryAndCutsTheBody() async throws {
        let long = String(repeating: "x", count: 5_000)
        try await withReceiver(respond: { _ in Reply(status: .badRequest, body: long) }) { adapter, _ in
            let error = await adapterError {
                try await adapter.apply(EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry(20, "a"), entry(21, "b")]))
            }
            #expect(error?.kind == .rejected(offset: 20))
            #expect(error?.targetCode == "400")
            #expect((error?.message.count ?? .max) < 700)
            #expect(error?.message.hasSuffix("…(truncated)") == true)
        }
    }

    @Test func aReceiverThatAnswersAfterTheTimeoutIsAConnectionFailure() async throws {
        // The receiver answers 200 eight seconds after the request, timed on its own event loop:
        // an adapter that waited for it would report success, so the connection error proves the
        // adapter gave up before then — whenever this test's task gets to run again (on a loaded
        // machine the cooperative pool can take seconds to resume it; what is measured here does
        // not depend on that). The deadline is 2 s, not less: the request must reach the receiver
        // before it (the receiver got none in a fresh-clone CI run with a 300 ms deadline, at a
        // load where connecting and sending took longer than that).
        try await withReceiver(timeoutMs: 2_000, respond: { _ in Reply(status: .ok, after: .seconds(8)) }) { adapter, server in
            let started = ContinuousClock.now
            let error = await adapterError { try await adapter.apply(EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry(1, "a")])) }
            #expect(error?.kind == .connection)
            #expect(error?.message.contains("timeout_ms=2000") == true)
            #expect(await server.requests(atLeast: 1).count == 1)
            // Not before the deadline (only a late answer can be slowed by load, not an early one).
            #expect(ContinuousClock.now - started >= .milliseconds(2_000))
        }
    }

    @Test func nothingListeningIsAConnectionFailureForApplyAndProbe() async throws {
        let server = try await TestHTTPServer.start { _ in Reply(status: .ok) }
        let url = server.url
        await server.stop()
        let adapter = WebhookAdapter(streamName: "events", settings: WebhookAdapterSettings(url: url, timeoutMs: 2_000))
        let apply = await adapterError { try await adapter.apply(EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry(1, "a")])) }
        #expect(apply?.kind == .connection)
        let probe = await adapterError { try await adapter.probe() }
        #expect(probe?.kind == .connection)
        await adapter.close()
    }

    @Test func openProbesTheReceiver() async throws {
        let down = Mutex(true)
        try await withReceiver(respond: { _ in down.withLock { $0 } ? Reply(status: .serviceUnavailable) : Reply(status: .ok) }) { adapter, server in
            let error = await adapterError { try await adapter.open() }
            #expect(error?.kind == .connection)
            down.withLock { $0 = false }
            try await adapter.open()
            #expect(server.requests.map(\.method) == [.HEAD, .HEAD])
        }
    }

    @Test func probeSendsAHeadAndAcceptsAnyAnswerButServerErrors() async throws {
        let failing = Mutex(false)
        try await withReceiver(respond: { _ in failing.withLock { $0 } ? Reply(status: .badGateway) : Reply(status: .methodNotAllowed) }) { adapter, server in
            try await adapter.probe()
            #expect(server.requests.last?.method == .HEAD)
            #expect(server.requests.last?.uri == "/hook/probe")
            failing.withLock { $0 = true }
            let error = await adapterError { try await adapter.probe() }
            #expect(error?.kind == .connection)
        }
    }

    @Test func configuredHeadersAreSentButNeverLoggedNorInErrors() async throws {
        let secret = "Bearer s3cret-\(UInt32.random(in: 0...UInt32.max))"
        let logs = CapturedLogs()
        let status = Mutex(HTTPResponseStatus.ok)
        try await withReceiver(
            headers: ["Authorization": secret], logs: logs,
            respond: { _ in Reply(status: status.withLock { $0 }, body: "no") }
        ) { adapter, server in
            try await adapter.apply(EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry(1, "a")]))
            status.withLock { $0 = HTTPResponseStatus.serviceUnavailable }
            let failure = await adapterError { try await adapter.apply(EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry(2, "b")])) }
            let probe = await adapterError { try await adapter.probe() }
            #expect(probe?.kind == .connection)
            #expect(server.requests.count == 3)
            #expect(server.requests.allSatisfy { $0.headers["Authorization"] == [secret] })
            #expect(failure.map { !$0.description.contains(secret) } == true)
            #expect(!adapter.settings.description.contains(secret))
            #expect(!logs.lines.contains { $0.contains(secret) || $0.contains("s3cret") })
        }
    }

    @Test func settingsComeFromTheLinkAndTheEnvironment() throws {
        let configuration = AdapterConfiguration(
            linkName: "l", streamName: "s",
            settings: ["url": "https://example.invalid/hook", "header.X-Team": "blue", "header_env.Authorization": "HOOK_TOKEN", "timeout_ms": "250"])
        let settings = try WebhookAdapterSettings(configuration, environment: ["HOOK_TOKEN": "Bearer t0k"])
        #expect(settings.headers == ["X-Team": "blue", "Authorization": "Bearer t0k"])
        #expect(settings.timeoutMs == 250)
        #expect(settings.probeURL == "https://example.invalid/hook")
        #expect(!settings.description.contains("t0k"))
        #expect(throws: AdapterConfigurationError.self) { try WebhookAdapterSettings(configuration, environment: [:]) }
        let bad = AdapterConfiguration(linkName: "l", streamName: "s", settings: ["url": "ftp://x"])
        #expect(throws: AdapterConfigurationError.self) { try WebhookAdapterFactory().makeAdapter(bad) }
        #expect(WebhookAdapterFactory().name == "webhook")
    }

    @Test func anEntryCarryingItsOwnOffsetMemberGetsTheBrokersOnly() throws {
        let raw = Array(#"{"offset":999,"org":"a","object":"O","op":"delete","key":"k","ts":"t"}"#.utf8)
        let parsed = try Entry.parse(raw, offset: 3)
        let bytes = WebhookAdapter.entryWithOffset(parsed)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(object["offset"] as? Int == 3)
        #expect(String(decoding: bytes, as: UTF8.self).components(separatedBy: "\"offset\"").count == 2)
    }
}
