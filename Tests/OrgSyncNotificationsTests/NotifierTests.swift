import Crypto
import Foundation
import Logging
import NIOHTTP1
import OrgSyncCore
import OrgSyncNotifications
import OrgSyncPluginAPI
import OrgSyncTestHTTP
import OrgSyncTestSupport
import Testing

/// The notifier against a real local receiver that checks every signature the way a Standard
/// Webhooks library does (HMAC-SHA256 over id.timestamp.body), on a manual clock.
@Suite struct NotifierTests {
    static let key: [UInt8] = (0..<32).map { UInt8($0 &* 7 &+ 3) }
    static let wallOriginMs: UInt64 = 1_800_000_000_000

    /// A receiver answering from a script, noting each request's link-clock time.
    final class Receiver: Sendable {
        struct Seen: Sendable {
            var id: String
            var timestamp: String
            var atMs: UInt64
            var body: [UInt8]
            var signatureValid: Bool
        }
        let seen = Observed<[Seen]>([])
        let server: TestHTTPServer

        init(clock: ManualClock, answers: [Reply], then last: Reply = Reply(status: .ok)) async throws {
            let script = Observed(answers)
            let seen = self.seen
            server = try await TestHTTPServer.start { request in
                let id = request.headers.first(name: "webhook-id") ?? ""
                let timestamp = request.headers.first(name: "webhook-timestamp") ?? ""
                let valid = request.headers.first(name: "webhook-signature").map {
                    Receiver.verify(signature: $0, id: id, timestamp: timestamp, body: request.body)
                } ?? false
                seen.update { $0.append(Seen(id: id, timestamp: timestamp, atMs: clock.nowMs(), body: request.body, signatureValid: valid)) }
                return script.update { $0.isEmpty ? last : $0.removeFirst() }
            }
        }

        static func verify(signature: String, id: String, timestamp: String, body: [UInt8]) -> Bool {
            var message = Array("\(id).\(timestamp).".utf8)
            message += body
            let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: NotifierTests.key))
            return signature.split(separator: " ").contains { $0 == "v1," + Data(mac).base64EncodedString() }
        }
    }

    static func settings(url: String) -> NotificationSettings {
        NotificationSettings(name: "ops", url: url, secret: key, timeoutMs: 5_000, backoffBaseMs: 1_000, backoffCapMs: 60_000,
                             giveUpAfterMs: 86_400_000, stableAfterMs: 600_000, rejectedSummaryMs: 60_000)
    }

    static func notifier(url: String, syncLog: SyncLog, directory: String, clock: ManualClock) throws -> Notifier {
        try Notifier(settings: [settings(url: url)], links: [NotifiedLink(name: "demo", stream: "events", syncLog: syncLog)],
                     directory: directory, clock: clock, wallClockMs: { wallOriginMs + clock.nowMs() },
                     logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, pollIntervalMs: 100)
    }

    static func temporaryDirectory() throws -> String { try makeTemporaryDirectory("orgsync-notify") }

    /// Moves the manual clock from sleeper to sleeper until `condition` holds (bounded).
    static func advance(_ clock: ManualClock, until what: String, _ condition: @escaping @Sendable () -> Bool) async throws {
        try await withTimeout(what) {
            while !condition() { _ = try await clock.advanceToNextDeadline() }
        }
    }

    /// A notifier running over an in-memory sync log, delivering to a scripted receiver, on a
    /// manual clock; ``finish()`` stops it (``deinit`` cleans up after a failed test).
    final class Rig: Sendable {
        let clock = ManualClock()
        let receiver: Receiver
        let directory: String
        let syncLog = SyncLog.inMemory(recordsMax: 100)
        let notifier: Notifier
        let run: Task<Void, Never>

        init(answers: [Reply], then last: Reply = Reply(status: .ok)) async throws {
            receiver = try await Receiver(clock: clock, answers: answers, then: last)
            directory = try NotifierTests.temporaryDirectory()
            let notifier = try NotifierTests.notifier(url: receiver.server.url, syncLog: syncLog, directory: directory, clock: clock)
            self.notifier = notifier
            run = Task { await notifier.run() }
            try await withTimeout("the notifier polling") { [clock] in try await clock.waitForSleepers() }
        }

        func append(_ event: SyncLogEvent, _ state: LinkState, _ reason: String) throws {
            try syncLog.append(event: event, state: state, reason: reason, timeMs: NotifierTests.wallOriginMs + clock.nowMs(),
                               linkClockMs: clock.nowMs())
        }

        func finish() async {
            run.cancel()
            await run.value
            await receiver.server.stop()
        }

        deinit {
            run.cancel()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    @Test func fiveHundredTwiceThenTwoHundredIsThreeAttemptsOfOneSignedEventAtTheBackoffsDelays() async throws {
        let rig = try await Rig(answers: [Reply(status: .internalServerError), Reply(status: .internalServerError)])
        let (clock, receiver, notifier) = (rig.clock, rig.receiver, rig.notifier)
        try rig.append(.suspended, .suspended, "connection: refused")
        let plannedAt = clock.nowMs() + 100  // the next poll
        try await Self.advance(clock, until: "three attempts") { receiver.seen.value.count >= 3 }
        try await withTimeout("the delivery settled") { _ = try await clock.waitForSleepers() }
        let seen = receiver.seen.value
        #expect(seen.count == 3)
        #expect(Set(seen.map(\.id)).count == 1, "one event: the same webhook-id on every attempt")
        let allSigned = seen.allSatisfy { $0.signatureValid }
        #expect(allSigned, "every attempt signed for its own timestamp")
        #expect(seen.map(\.atMs) == [plannedAt, plannedAt + 1_000, plannedAt + 3_000], "backoff 1 s, then 2 s")
        let body = try #require(try JSONSerialization.jsonObject(with: Data(seen[0].body)) as? [String: Any])
        #expect(body["type"] as? String == "link.suspended")
        #expect((body["data"] as? [String: Any])?["reason"] as? String == "connection: refused")
        let status = try #require(notifier.status().first)
        #expect(status.pending == 0 && status.deliveredCount == 1 && status.deadLetteredCount == 0)
        // Delivered: nothing more goes out, however long the clock runs.
        for _ in 0..<20 { _ = try await withTimeout("a poll") { try await clock.advanceToNextDeadline() } }
        #expect(receiver.seen.value.count == 3)
        await rig.finish()
    }

    @Test func aQueuedEventSurvivesARestartAndGoesOutOnceWithItsOwnId() async throws {
        let clock = ManualClock()
        let receiver = try await Receiver(clock: clock, answers: [Reply(status: .serviceUnavailable, headers: [("Retry-After", "30")])])
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let logDirectory = directory + "/links"
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        let syncLog = try SyncLog.open(directory: logDirectory, link: "demo", recordsMax: 100)
        let first = try Self.notifier(url: receiver.server.url, syncLog: syncLog, directory: directory + "/notifications", clock: clock)
        let firstRun = Task { await first.run() }
        try await withTimeout("the notifier polling") { try await clock.waitForSleepers() }
        try syncLog.append(event: .diverged, state: .diverged, reason: "the target holds another stream", timeMs: Self.wallOriginMs, linkClockMs: 0)
        try await Self.advance(clock, until: "the first attempt") { receiver.seen.value.count >= 1 }
        try await withTimeout("the retry scheduled") { _ = try await clock.waitForSleepers() }
        #expect(first.status().first?.pending == 1 && first.status().first?.headAttempts == 1)
        firstRun.cancel()  // the broker stops (or dies) while the event waits for its retry
        await firstRun.value

        // A new notifier over the same files: the event is still queued, with its id, and is
        // not planned a second time from the sync log.
        let reopened = try SyncLog.open(directory: logDirectory, link: "demo", recordsMax: 100)
        let second = try Self.notifier(url: receiver.server.url, syncLog: reopened, directory: directory + "/notifications", clock: clock)
        #expect(second.status().first?.pending == 1)
        let secondRun = Task { await second.run() }
        defer { secondRun.cancel() }
        try await Self.advance(clock, until: "the second attempt") { receiver.seen.value.count >= 2 }
        try await withTimeout("the delivery settled") { _ = try await clock.waitForSleepers() }
        for _ in 0..<20 { _ = try await withTimeout("a poll") { try await clock.advanceToNextDeadline() } }
        let seen = receiver.seen.value
        #expect(seen.count == 2, "one 503, then one 200: \(seen.map(\.id))")
        #expect(Set(seen.map(\.id)).count == 1)
        let allSigned = seen.allSatisfy { $0.signatureValid }
        #expect(allSigned)
        #expect(second.status().first?.deliveredCount == 1 && second.status().first?.pending == 0)
        await receiver.server.stop()
    }

    @Test func aRefusedEventIsDeadLetteredAndTheNextOneStillGoes() async throws {
        let rig = try await Rig(answers: [Reply(status: .badRequest)])
        let (clock, receiver, notifier) = (rig.clock, rig.receiver, rig.notifier)
        try rig.append(.suspended, .suspended, "down")
        try rig.append(.paused, .paused, "paused by operator")
        try await Self.advance(clock, until: "two events sent") { receiver.seen.value.count >= 2 }
        try await withTimeout("the delivery settled") { _ = try await clock.waitForSleepers() }
        let status = try #require(notifier.status().first)
        #expect(status.deadLetteredCount == 1 && status.deliveredCount == 1 && status.pending == 0)
        #expect(status.deadLetters.first?.reason == "the receiver refused the event: HTTP 400")
        #expect(status.deadLetters.first?.event.type == .linkSuspended)
        #expect(receiver.seen.value.count == 2, "a 400 is not retried")
        await rig.finish()
    }

    @Test func aRedirectIsTheReceiversAnswerNotAPlaceToSendTheSignedEvent() async throws {
        let rig = try await Rig(answers: [], then: Reply(status: .found, headers: [("Location", "/elsewhere")]))
        let (clock, receiver, notifier) = (rig.clock, rig.receiver, rig.notifier)
        try rig.append(.suspended, .suspended, "down")
        try await Self.advance(clock, until: "the dead letter") { notifier.status().first?.deadLetteredCount == 1 }
        #expect(receiver.seen.value.count == 1, "not followed")
        #expect(notifier.status().first?.deadLetters.first?.reason == "the receiver refused the event: HTTP 302")
        await rig.finish()
    }

    @Test func aQueueAheadOfAReplacedSyncLogGoesOnFromTheNewLogsEnd() async throws {
        let clock = ManualClock()
        let receiver = try await Receiver(clock: clock, answers: [])
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let old = SyncLog.inMemory(recordsMax: 100)
        for _ in 0..<3 { try old.append(event: .verifying, state: .verifying, reason: "probe", timeMs: Self.wallOriginMs, linkClockMs: 0) }
        _ = try Self.notifier(url: receiver.server.url, syncLog: old, directory: directory, clock: clock)  // its queue starts at 3
        let replaced = SyncLog.inMemory(recordsMax: 100)  // a new data directory: sequences start again
        let notifier = try Self.notifier(url: receiver.server.url, syncLog: replaced, directory: directory, clock: clock)
        let run = Task { await notifier.run() }
        defer { run.cancel() }
        try await withTimeout("the notifier polling") { try await clock.waitForSleepers() }
        try replaced.append(event: .suspended, state: .suspended, reason: "down", timeMs: Self.wallOriginMs, linkClockMs: 0)
        try await Self.advance(clock, until: "the new log's first event delivered") { notifier.status().first?.deliveredCount == 1 }
        #expect(receiver.seen.value.count == 1)
        await receiver.server.stop()
    }
}
