/// What an operator is told about, one kind per webhook event type (Standard Webhooks `type`).
public enum NotificationEventType: String, Sendable, Hashable, Codable, CaseIterable {
    case linkSuspended = "link.suspended"
    case linkResumed = "link.resumed"
    case linkHeldDown = "link.held_down"
    case linkPaused = "link.paused"
    case linkDiverged = "link.diverged"
    /// Rejected entries of a link, summarised: one event per `rejected_summary_ms` window.
    case entryRejected = "entry.rejected"
    /// The link crossed its flap limit; its suspensions and resumptions are not sent one by one
    /// until `link.stable`.
    case linkFlapping = "link.flapping"
    /// A flapping link has been active, without a transition, for `stable_after_ms`.
    case linkStable = "link.stable"
}

/// One notification target: where events go, signed with which secret, and how delivery is
/// retried. Built from the configuration's `notifications:` entry (the server validates it).
public struct NotificationSettings: Sendable, Hashable {
    public var name: String
    public var url: String
    /// The Standard Webhooks secret's key bytes (the base64 after `whsec_`).
    public var secret: [UInt8]
    public var events: Set<NotificationEventType>
    /// One delivery attempt, connecting included.
    public var timeoutMs: UInt64
    /// Retries wait `backoffBaseMs × 2^(attempt−1)`, at most `backoffCapMs` (or what the
    /// receiver's `Retry-After` asks, if longer).
    public var backoffBaseMs: UInt64
    public var backoffCapMs: UInt64
    /// An event still not delivered this long after it happened goes to the dead letters.
    public var giveUpAfterMs: UInt64
    /// A flapping link that stays active this long is `link.stable` again.
    public var stableAfterMs: UInt64
    /// Rejections within this long of the first one are summarised in one `entry.rejected`.
    public var rejectedSummaryMs: UInt64

    public static let defaultTimeoutMs: UInt64 = 5_000
    public static let defaultBackoffBaseMs: UInt64 = 1_000
    public static let defaultBackoffCapMs: UInt64 = 300_000
    public static let defaultGiveUpAfterMs: UInt64 = 86_400_000
    public static let defaultStableAfterMs: UInt64 = 600_000
    public static let defaultRejectedSummaryMs: UInt64 = 60_000

    public init(
        name: String, url: String, secret: [UInt8], events: Set<NotificationEventType> = Set(NotificationEventType.allCases),
        timeoutMs: UInt64 = defaultTimeoutMs, backoffBaseMs: UInt64 = defaultBackoffBaseMs,
        backoffCapMs: UInt64 = defaultBackoffCapMs, giveUpAfterMs: UInt64 = defaultGiveUpAfterMs,
        stableAfterMs: UInt64 = defaultStableAfterMs, rejectedSummaryMs: UInt64 = defaultRejectedSummaryMs
    ) {
        self.name = name
        self.url = url
        self.secret = secret
        self.events = events
        self.timeoutMs = timeoutMs
        self.backoffBaseMs = backoffBaseMs
        self.backoffCapMs = backoffCapMs
        self.giveUpAfterMs = giveUpAfterMs
        self.stableAfterMs = stableAfterMs
        self.rejectedSummaryMs = rejectedSummaryMs
    }
}
