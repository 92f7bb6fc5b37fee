import Foundation
import NIOHTTP1
import OrgSyncTestHTTP
import OrgSyncTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Notifications from the real `orgsync serve`, SIGKILLed while an event waits for its retry.
@Suite(.serialized) struct NotificationProcessTests {
    struct Attempt: Sendable {
        var id: String
        var type: String
        var answered: Int
    }

    @Test func anEventRetriedWhenTheBrokerIsKilledIsDeliveredOnceAfterTheRestart() async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-notify-process-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // The receiver answers 500 until told to accept; it notes every attempt.
        let accepting = Observed(false)
        let attempts = Observed<[Attempt]>([])
        let receiver = try await TestHTTPServer.start { request in
            let ok = accepting.value
            let type = ((try? JSONSerialization.jsonObject(with: Data(request.body))) as? [String: Any])?["type"] as? String ?? "?"
            attempts.update { $0.append(Attempt(id: request.headers.first(name: "webhook-id") ?? "", type: type, answered: ok ? 200 : 500)) }
            return Reply(status: ok ? .ok : .internalServerError)
        }
        let secret = "whsec_" + Data((0..<32).map { UInt8($0 * 5 + 1) }).base64EncodedString()
        let config = directory + "/orgsync.yaml"
        // The link's webhook receiver does not exist (port 1 refuses): the link suspends.
        try """
        data_dir: \(directory)/state
        auth: { enabled: false }
        streams: [ { name: events } ]
        links:
          - name: demo
            stream: events
            adapter: webhook
            settings: { url: "http://127.0.0.1:1/hook" }
            supervisor: { backoff_base_ms: 60000, backoff_cap_ms: 60000 }
        notifications:
          - name: ops
            url: "\(receiver.url)"
            secret_env: ORGSYNC_TEST_NOTIFY_SECRET
            events: [link.suspended]
            backoff_base_ms: 100
            backoff_cap_ms: 200
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let environment = ["ORGSYNC_TEST_NOTIFY_SECRET": secret]
        var broker: BrokerProcess? = try await BrokerProcess.start(arguments: ["--config", config], environment: environment)
        let port = try #require(broker?.port)
        let entry = #"{"org":"o","object":"Contact","op":"upsert","key":"k1","ts":"2026-11-27T00:00:00Z","fields":{"Name":"n"}}"#
        let (status, _) = try await post("http://127.0.0.1:\(port)/v1/streams/events/entries", body: Data(entry.utf8), contentType: "application/x-ndjson")
        #expect(status == 201)
        // The suspension's event fails twice: kill the broker while it waits for the next try.
        let failing = try await withTimeout(ms: 30_000, "two failed attempts of the link.suspended event") {
            try await attempts.wait(until: { $0.count >= 2 })
        }
        let firstID = failing[0].id
        #expect(failing[0].type == "link.suspended" && failing[1].id == firstID)
        #expect(await broker?.terminate(signal: SIGKILL) == SIGKILL)
        broker = nil
        let beforeRestart = attempts.value.count
        accepting.update { $0 = true }

        let restarted = try await BrokerProcess.start(arguments: ["--config", config], environment: environment)
        // The queued event goes out (same id), then the restarted link's own new suspension; in
        // order per link, so once the second is taken the first can never be sent again.
        let seen = try await withTimeout(ms: 30_000, "the queued event delivered, then the next one") {
            try await attempts.wait(until: { list in
                list.contains { $0.id == firstID && $0.answered == 200 } && list.contains { $0.id != firstID && $0.answered == 200 }
            })
        }
        // The API shows the queue emptied (the broker settles a 200 just after the receiver
        // sent it: another process's state, polled with a bound); neither the URL nor the secret.
        let deadline = Date().addingTimeInterval(30)
        var lane: [String: Any] = [:]
        var text = ""
        while true {
            let (code, listing) = try await get("http://127.0.0.1:\(restarted.port)/v1/notifications")
            #expect(code == 200)
            text = String(decoding: listing, as: UTF8.self)
            let targets = try #require((try JSONSerialization.jsonObject(with: listing) as? [String: Any])?["notifications"] as? [[String: Any]])
            #expect(targets.first?["name"] as? String == "ops" && targets.first?["events"] as? [String] == ["link.suspended"])
            lane = try #require((targets.first?["links"] as? [[String: Any]])?.first)
            if (lane["delivered"] as? Int ?? 0) >= 2 || Date() > deadline { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!text.contains(secret) && !text.contains(receiver.url))
        #expect(lane["link"] as? String == "demo" && (lane["delivered"] as? Int ?? 0) >= 2 && lane["pending"] as? Int == 0, "\(lane)")
        _ = await restarted.terminate()
        let forFirst = seen.filter { $0.id == firstID }
        #expect(forFirst.filter { $0.answered == 200 }.count == 1, "delivered once: \(forFirst.map(\.answered))")
        #expect(forFirst.prefix(beforeRestart).allSatisfy { $0.answered == 500 }, "every attempt before the kill failed")
        let firstDelivered = try #require(seen.firstIndex { $0.id == firstID && $0.answered == 200 })
        let secondDelivered = try #require(seen.firstIndex { $0.id != firstID && $0.answered == 200 })
        #expect(firstDelivered < secondDelivered, "in order per link")
        #expect(Set(seen.map(\.type)) == ["link.suspended"], "only the subscribed type")
        await receiver.stop()
    }
}
