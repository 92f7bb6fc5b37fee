/// `GET /v1/notifications`: every notification target and its queue per link.
public struct NotificationList: Codable, Sendable, Hashable {
    public var notifications: [NotificationTargetBody]
    public init(notifications: [NotificationTargetBody]) { self.notifications = notifications }
}

/// One notification target (its URL and secret are not shown: either may hold a credential).
public struct NotificationTargetBody: Codable, Sendable, Hashable {
    public var name: String
    /// The event types it is sent (`link.suspended`, ...), sorted.
    public var events: [String]
    public var links: [NotificationLinkBody]

    public init(name: String, events: [String], links: [NotificationLinkBody]) {
        self.name = name
        self.events = events
        self.links = links
    }
}

/// A target's queue for one link.
public struct NotificationLinkBody: Codable, Sendable, Hashable {
    public var link: String
    /// Events planned and not yet delivered nor dead-lettered.
    public var pending: Int
    /// Attempts made for the first pending event.
    public var headAttempts: Int
    public var lastError: String?
    public var delivered: UInt64
    public var deadLettered: UInt64
    /// The newest dead letters, oldest first.
    public var deadLetters: [NotificationDeadLetterBody]

    public init(
        link: String, pending: Int, headAttempts: Int, lastError: String?, delivered: UInt64, deadLettered: UInt64,
        deadLetters: [NotificationDeadLetterBody]
    ) {
        self.link = link
        self.pending = pending
        self.headAttempts = headAttempts
        self.lastError = lastError
        self.delivered = delivered
        self.deadLettered = deadLettered
        self.deadLetters = deadLetters
    }
}

/// An event the target's receiver did not take.
public struct NotificationDeadLetterBody: Codable, Sendable, Hashable {
    /// Its `webhook-id`.
    public var id: String
    public var type: String
    public var reason: String
    public var attempts: Int
    public var atMs: UInt64

    public init(id: String, type: String, reason: String, attempts: Int, atMs: UInt64) {
        self.id = id
        self.type = type
        self.reason = reason
        self.attempts = attempts
        self.atMs = atMs
    }
}
