import Foundation
import Logging
import OrgSyncBroker
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncServer
import OrgSyncTestSupport
import SQLiteAdapter
import Synchronization
import Testing

/// `buildApplication` run in this process, as `orgsync serve` runs it: ready only once it
/// listens, and a graceful shutdown under load that answers appends in flight once durable,
/// loses none of them, stores the link's cursor and closes the streams and the port.
@Suite struct BrokerApplicationTests {
    static let producerCount = 6
    static let entriesPerRequest = 10
    /// Acknowledged appends after which the shutdown is triggered, with producers still going.
    static let acknowledgedBeforeShutdown = 30
    static let token = "produce-token-0123456789"

    @Test func gracefulShutdownUnderLoadLosesNoAcknowledgedAppendAndStoresTheCursor() async throws {
        let directory = try makeTemporaryDirectory("orgsync-app")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = try BrokerConfiguration.parse(yaml: """
            server: { host: 127.0.0.1, port: 0 }
            auth:
              enabled: true
              tokens: [{ name: p, role: produce, token: \(Self.token) }]
            streams:
              - name: events
            links:
              - name: demo
                stream: events
                adapter: sqlite
                settings: { path: demo.sqlite }
            """, environment: [:])
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let (urls, urlContinuation) = AsyncStream<String>.makeStream()
        let application = try buildApplication(
            configuration: configuration, dataDirectory: directory,
            registry: PluginRegistry(builtins: [SQLiteAdapterFactory()], logger: logger), environment: [:], logger: logger,
            onListening: { url in urlContinuation.yield(url) })
        #expect(application.readiness.phase == .starting)
        let running = Task { try await application.run() }

        let url = try await withTimeout(ms: 30_000, "the server to listen") {
            var iterator = urls.makeAsyncIterator()
            return await iterator.next() ?? ""
        }
        let port = try #require(url.split(separator: ":").last.flatMap { Int($0) }, "\(url)")
        #expect(url == "http://127.0.0.1:\(port)")
        #expect(application.readiness.phase == .ready)
        let ready = await offThePool { () -> RawResponse? in
            guard let connection = try? RawHTTPConnection(port: port) else { return nil }
            connection.send(rawRequest("GET", "/health/ready"))
            return connection.readResponse(timeout: .seconds(10))
        }
        #expect(ready?.status == 200)

        // Producers append until the server stops answering; every 201 is recorded.
        let acknowledged = Observed([AcknowledgedAppend]())
        let producers = Task {
            await withTaskGroup(of: Void.self) { group in
                for producer in 0..<Self.producerCount {
                    group.addTask { await Self.produce(producer, port: port, into: acknowledged) }
                }
            }
        }
        try await withTimeout(ms: 30_000, "\(Self.acknowledgedBeforeShutdown) acknowledged appends") {
            _ = try await acknowledged.wait { $0.count >= Self.acknowledgedBeforeShutdown }
        }
        await application.triggerGracefulShutdown()
        try await withTimeout(ms: 60_000, "the application to stop") { try await running.value }
        try await withTimeout(ms: 60_000, "the producers to see the server gone") { await producers.value }

        #expect(application.readiness.phase == .stopping)
        let refused = await offThePool { (try? RawHTTPConnection(port: port)) == nil }
        #expect(refused, "the port no longer accepts connections")
        await #expect(throws: LogError.self, "the streams are closed") {
            try await application.broker.append(stream: "events", entries: [Array(entryJSON(0).utf8)])
        }
        let supervisor = try application.broker.links.supervisor("demo")
        let status = await supervisor.status()
        #expect(!status.isRunning, "the link stopped")

        // After the stop, the log holds every acknowledged entry at the offsets it was answered
        // with, and the link's stored cursor is where it stopped.
        let log = try StreamLog.open(dataDirectory: directory, name: "events")
        let appends = acknowledged.value
        #expect(appends.count >= Self.acknowledgedBeforeShutdown)
        for append in appends {
            let records = try log.read(from: append.firstOffset, maxEntries: Self.entriesPerRequest)
            let keys = try records.map { try Entry.parse($0.payload).key }
            #expect(records.first?.offset == append.firstOffset)
            #expect(keys == append.keys, "the entries at \(append.firstOffset)...")
        }
        let acknowledgedEntries = UInt64(appends.count * Self.entriesPerRequest)
        #expect(log.endOffset >= acknowledgedEntries)
        let cursor = try #require(try log.cursors.load("demo"), "the link stored a cursor")
        #expect(cursor == status.cursor.rawValue)
        #expect(cursor <= log.endOffset)
        await log.close()
    }

    struct AcknowledgedAppend: Sendable {
        var firstOffset: UInt64
        var keys: [String]
    }

    /// Appends batches of entries with keys unique to this producer, one connection per request,
    /// until a request is not answered 201 (refused, closed, or 503 while stopping).
    static func produce(_ producer: Int, port: Int, into acknowledged: Observed<[AcknowledgedAppend]>) async {
        await offThePool {
            for request in 0..<10_000 {
                let keys = (0..<entriesPerRequest).map { "p\(producer)-\(request)-\($0)" }
                let body = keys.map {
                    #"{"org":"o","object":"Contact","op":"upsert","key":"\#($0)","ts":"2026-11-28T00:00:00Z","fields":{"Name":"n"}}"#
                }.joined(separator: "\n")
                guard let connection = try? RawHTTPConnection(port: port) else { return }
                connection.send(rawRequest("POST", "/v1/streams/events/entries",
                                           headers: ["Authorization: Bearer \(token)", "Content-Type: application/x-ndjson", "Connection: close"], body: Array(body.utf8)))
                guard let response = connection.readResponse(timeout: .seconds(30)), response.status == 201,
                      let answer = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
                      let first = (answer["first_offset"] as? NSNumber)?.uint64Value
                else { return }
                acknowledged.update { $0.append(AcknowledgedAppend(firstOffset: first, keys: keys)) }
            }
        }
    }
}
