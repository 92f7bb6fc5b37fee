/// What one notification target owes for one link: the planner's state, the events planned
/// and not yet delivered (oldest first), and what could not be delivered. Saved whole after
/// every change (``NotificationQueueFile``), so a crash loses nothing planned and a restart
/// resumes with the same event ids.
public struct NotificationQueue: Sendable, Hashable, Codable {
    public var planner: NotificationPlanner
    public var pending: [NotificationEvent] = []
    /// Attempts made so far for the first pending event.
    public var headAttempts = 0
    public var lastError: String?
    public var deliveredCount: UInt64 = 0
    public var deadLetteredCount: UInt64 = 0
    /// The newest dead letters, at most ``deadLettersKept``.
    public var deadLetters: [NotificationDeadLetter] = []

    /// Events waiting beyond this many: the oldest go to the dead letters (a receiver down for
    /// days must not grow the file without bound; summaries keep the rate of events low).
    public static let pendingEventsMax = 1_000
    public static let deadLettersKept = 100

    public init(planner: NotificationPlanner) { self.planner = planner }

    /// Adds newly planned events the target subscribes to.
    public mutating func enqueue(_ events: [NotificationEvent], subscribed: Set<NotificationEventType>, nowMs: UInt64) {
        pending.append(contentsOf: events.filter { subscribed.contains($0.type) })
        while pending.count > Self.pendingEventsMax {
            deadLetterHead(reason: "more than \(Self.pendingEventsMax) events waiting for the receiver", nowMs: nowMs)
        }
    }

    /// Records the outcome of an attempt on the first pending event.
    public mutating func settleHead(_ decision: DeliveryDecision, nowMs: UInt64) {
        guard !pending.isEmpty else { return }
        switch decision {
        case .delivered:
            pending.removeFirst()
            headAttempts = 0
            deliveredCount &+= 1
            lastError = nil
        case .retry(_, let reason):
            headAttempts += 1
            lastError = reason
        case .deadLetter(let reason):
            deadLetterHead(reason: reason, nowMs: nowMs)
        }
    }

    private mutating func deadLetterHead(reason: String, nowMs: UInt64) {
        guard !pending.isEmpty else { return }
        let event = pending.removeFirst()
        deadLetters.append(NotificationDeadLetter(event: event, reason: reason, attempts: headAttempts, atMs: nowMs))
        if deadLetters.count > Self.deadLettersKept { deadLetters.removeFirst(deadLetters.count - Self.deadLettersKept) }
        deadLetteredCount &+= 1
        headAttempts = 0
        lastError = reason
    }
}

/// An event the receiver did not take: why, after how many attempts, when it was given up.
public struct NotificationDeadLetter: Sendable, Hashable, Codable {
    public var event: NotificationEvent
    public var reason: String
    public var attempts: Int
    public var atMs: UInt64
}
