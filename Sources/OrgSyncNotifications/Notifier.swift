import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import OrgSyncCore
import OrgSyncLog
import Synchronization

/// Counts delivery attempts, for metrics.
public protocol NotificationObserver: Sendable {
    func didAttempt(notification: String, outcome: NotificationOutcome)
}

public enum NotificationOutcome: String, Sendable, Hashable, CaseIterable {
    case delivered
    case retried
    case deadLettered = "dead_lettered"
}

/// A link whose sync log the notifier reads.
public struct NotifiedLink: Sendable {
    public var name: String
    public var stream: String
    public var syncLog: SyncLog
    public init(name: String, stream: String, syncLog: SyncLog) {
        self.name = name
        self.stream = stream
        self.syncLog = syncLog
    }
}

/// Tells operators' webhooks what happens to the links (Standard Webhooks 1.0: signed, with a
/// stable `webhook-id` per event).
///
/// The outbox is the links' sync logs: every transition and rejection is written there, fsynced,
/// in the same step as it happens, so a crash between a transition and its delivery still
/// delivers it. For each notification target and link, a lane plans events from the sync log
/// (``NotificationPlanner``), saves them in its queue file before the first attempt, and
/// delivers them one at a time, in order, retrying as ``DeliveryDecision`` says; an event is
/// removed from the queue only after the receiver took it (2xx) or it went to the dead letters.
/// So every event is delivered at least once; a crash after a 2xx and before the save sends it
/// again with the same id, which the receiver uses to drop the repeat.
///
/// A target added to the configuration starts from the sync logs' current end (no backfill).
public final class Notifier: Sendable {
    /// The targets, as configured.
    public let targets: [NotificationSettings]
    let lanes: [NotificationLane]
    let logger: Logger

    /// Loads (or creates, starting at each sync log's end) every target's queue for every link,
    /// under `directory/<notification>/`. Call it before the links run, so that nothing they
    /// record is before a new queue's start.
    public init(
        settings: [NotificationSettings], links: [NotifiedLink], directory: String,
        clock: any LinkClock = SystemLinkClock(), wallClockMs: @escaping @Sendable () -> UInt64,
        logger: Logger, observer: (any NotificationObserver)? = nil, pollIntervalMs: UInt64 = 250
    ) throws {
        var lanes: [NotificationLane] = []
        let storage = PosixStorage()
        for target in settings {
            let targetDirectory = directory + "/" + target.name
            if !links.isEmpty {
                do { try storage.createDirectory(directory); try storage.createDirectory(targetDirectory) } catch {
                    throw NotificationQueueFile.Failure(path: targetDirectory, problem: "cannot be created: \(error)")
                }
            }
            for link in links {
                let file = NotificationQueueFile(directory: targetDirectory, link: link.name, storage: storage)
                var queue: NotificationQueue
                if let saved = try file.load() {
                    queue = saved
                    let latest = link.syncLog.latestSequence
                    if queue.planner.afterSequence > latest {
                        // The sync log was replaced (a new data directory under an old queue):
                        // its sequences start again, so the queue's position is moved back to
                        // its end, or the new records would wait for the old numbers.
                        logger.warning("the sync log of link \(link.name) is behind notification \(target.name)'s queue (\(latest) < \(queue.planner.afterSequence)); going on from its end")
                        queue.planner.afterSequence = latest
                        try file.save(queue)
                    }
                } else {
                    queue = NotificationQueue(planner: NotificationPlanner(
                        afterSequence: link.syncLog.latestSequence, idPrefix: Self.randomIDPrefix()))
                    try file.save(queue)
                }
                lanes.append(NotificationLane(target: target, link: link, file: file, queue: queue, clock: clock,
                                              wallClockMs: wallClockMs, logger: logger, observer: observer,
                                              pollIntervalMs: max(1, pollIntervalMs)))
            }
        }
        self.lanes = lanes
        self.targets = settings
        self.logger = logger
    }

    /// Delivers until cancelled. The HTTP client lives as long as this: it follows no redirect
    /// (a 3xx is the receiver's answer, and the signed event must not go elsewhere).
    public func run() async {
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))
        await withTaskGroup(of: Void.self) { group in
            for lane in lanes { group.addTask { await lane.run(client: client) } }
        }
        do { try await client.shutdown() } catch { logger.warning("notification HTTP client shutdown: \(error)") }
    }

    /// Every target's queue for every link, as they stand.
    public func status() -> [NotificationLaneStatus] { lanes.map { $0.status() } }

    static func randomIDPrefix() -> String {
        "msg_" + String(UInt64.random(in: .min ... .max), radix: 36)
    }
}

/// One target's queue for one link, for the API.
public struct NotificationLaneStatus: Sendable, Hashable {
    public var notification: String
    public var link: String
    public var pending: Int
    public var headAttempts: Int
    public var lastError: String?
    public var deliveredCount: UInt64
    public var deadLetteredCount: UInt64
    public var deadLetters: [NotificationDeadLetter]

    public init(
        notification: String, link: String, pending: Int = 0, headAttempts: Int = 0, lastError: String? = nil,
        deliveredCount: UInt64 = 0, deadLetteredCount: UInt64 = 0, deadLetters: [NotificationDeadLetter] = []
    ) {
        self.notification = notification
        self.link = link
        self.pending = pending
        self.headAttempts = headAttempts
        self.lastError = lastError
        self.deliveredCount = deliveredCount
        self.deadLetteredCount = deadLetteredCount
        self.deadLetters = deadLetters
    }
}

/// Delivers one target's events for one link, in order.
final class NotificationLane: Sendable {
    let target: NotificationSettings
    let link: NotifiedLink
    let file: NotificationQueueFile
    let clock: any LinkClock
    let wallClockMs: @Sendable () -> UInt64
    let logger: Logger
    let observer: (any NotificationObserver)?
    let pollIntervalMs: UInt64
    private let state: Mutex<(queue: NotificationQueue, saved: NotificationQueue)>
    /// The queue file's writes and fsyncs, on a thread of their own (not the cooperative pool,
    /// where a slow disk would hold up every other task of the broker).
    private let files: BlockingFileQueue
    private var rules: NotificationPlanner.Rules {
        .init(stableAfterMs: target.stableAfterMs, rejectedSummaryMs: target.rejectedSummaryMs)
    }

    init(
        target: NotificationSettings, link: NotifiedLink, file: NotificationQueueFile, queue: NotificationQueue,
        clock: any LinkClock, wallClockMs: @escaping @Sendable () -> UInt64, logger: Logger,
        observer: (any NotificationObserver)?, pollIntervalMs: UInt64
    ) {
        self.target = target
        self.link = link
        self.file = file
        self.clock = clock
        self.wallClockMs = wallClockMs
        var logger = logger
        logger[metadataKey: "notification"] = .string(target.name)
        logger[metadataKey: "link"] = .string(link.name)
        self.logger = logger
        self.observer = observer
        self.pollIntervalMs = pollIntervalMs
        self.state = Mutex((queue, queue))
        self.files = BlockingFileQueue(label: "orgsync.notifications.\(target.name).\(link.name)")
    }

    func status() -> NotificationLaneStatus {
        state.withLock { state in
            let q = state.queue
            return NotificationLaneStatus(
                notification: target.name, link: link.name, pending: q.pending.count, headAttempts: q.headAttempts,
                lastError: q.lastError, deliveredCount: q.deliveredCount, deadLetteredCount: q.deadLetteredCount,
                deadLetters: q.deadLetters)
        }
    }

    func run(client: HTTPClient) async {
        var nextAttemptMs: UInt64 = 0  // link clock
        while !Task.isCancelled {
            await plan()
            let now = clock.nowMs()
            if now >= nextAttemptMs, let event = state.withLock({ $0.queue.pending.first }) {
                if let delayMs = await attempt(event, client: client) { nextAttemptMs = clock.nowMs().saturatingAdd(delayMs) }
                continue
            }
            // Look at the sync log again after a poll interval, or at the next attempt if sooner.
            let poll = now.saturatingAdd(pollIntervalMs)
            do { try await clock.sleep(untilMs: nextAttemptMs > now ? min(poll, nextAttemptMs) : poll) } catch { return }
        }
    }

    /// Plans what the sync log holds beyond the queue's position and saves the queue if that
    /// changed it (before any attempt, so a planned event survives a crash).
    private func plan() async {
        state.withLock { state in
            let records = link.syncLog.records(afterSequence: state.queue.planner.afterSequence)
            let now = wallClockMs()
            if let first = records.first, first.sequence > state.queue.planner.afterSequence + 1, state.queue.planner.afterSequence > 0 {
                logger.warning("\(first.sequence - state.queue.planner.afterSequence - 1) sync log records were dropped (the sync log keeps a bounded number) before they could be planned")
            }
            let events = state.queue.planner.plan(records, link: link.name, stream: link.stream, nowMs: now, rules: rules)
            state.queue.enqueue(events, subscribed: target.events, nowMs: now)
        }
        await save()
    }

    /// One attempt on the first pending event; returns the delay before the next attempt when it
    /// is to be retried.
    private func attempt(_ event: NotificationEvent, client: HTTPClient) async -> UInt64? {
        let (status, retryAfter, failure) = await send(event, client: client)
        let decision = DeliveryDecision.after(
            status: status, failure: failure, retryAfter: retryAfter,
            attempt: state.withLock { $0.queue.headAttempts } + 1, eventTimeMs: event.timeMs, nowMs: wallClockMs(),
            settings: target)
        state.withLock { state in
            // The event may have been dead-lettered meanwhile only by this lane: it is still the head.
            guard state.queue.pending.first?.id == event.id else { return }
            state.queue.settleHead(decision, nowMs: wallClockMs())
        }
        await save()
        switch decision {
        case .delivered:
            observer?.didAttempt(notification: target.name, outcome: .delivered)
            return nil
        case .retry(let afterMs, let reason):
            observer?.didAttempt(notification: target.name, outcome: .retried)
            logger.notice("event \(event.type.rawValue) not delivered (\(reason)); next attempt in \(afterMs) ms")
            return afterMs
        case .deadLetter(let reason):
            observer?.didAttempt(notification: target.name, outcome: .deadLettered)
            logger.warning("event \(event.type.rawValue) \(event.id) dead-lettered: \(reason)")
            return nil
        }
    }

    private func save() async {
        let toSave: NotificationQueue? = state.withLock { $0.queue == $0.saved ? nil : $0.queue }
        guard let toSave else { return }
        do {
            let file = file
            try await files.run { try file.save(toSave) }
            state.withLock { $0.saved = toSave }
        } catch {
            // Kept in memory; saved again with the next change (a planned event is re-planned
            // from the sync log after a restart in any case).
            logger.error("cannot save the notification queue: \(error)")
        }
    }

    /// POSTs the event, signed. Only the status and `Retry-After` are read: the answer's body
    /// is never waited for, so a receiver that drips it cannot hold the lane.
    private func send(_ event: NotificationEvent, client: HTTPClient) async -> (status: Int?, retryAfter: String?, failure: String?) {
        let body = event.body()
        let timestamp = wallClockMs() / 1000
        var request = HTTPClientRequest(url: target.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "orgsync-notifications")
        request.headers.add(name: "webhook-id", value: event.id)
        request.headers.add(name: "webhook-timestamp", value: String(timestamp))
        request.headers.add(name: "webhook-signature", value: StandardWebhookSignature.signature(
            key: target.secret, id: event.id, timestampSeconds: timestamp, body: body))
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response = try await client.execute(request, timeout: .milliseconds(Int64(clamping: target.timeoutMs)))
            return (Int(response.status.code), response.headers.first(name: "Retry-After"), nil)
        } catch {
            return (nil, nil, "no answer: \(Self.describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout:
            "timed out"
        case let error as HTTPClientError where error == .connectTimeout:
            "connect timed out"
        default:
            "\(error)"
        }
    }
}
