/// `GET /v1/links`.
public struct LinkList: Codable, Sendable, Hashable {
    public var links: [LinkStatusBody]
    public init(links: [LinkStatusBody]) { self.links = links }
}

/// A link's status, as the API shows it (`GET /v1/links/{link}` and the operator actions' answers).
public struct LinkStatusBody: Codable, Sendable, Hashable {
    public var name: String
    public var stream: String
    /// `active`, `suspended`, `verifying`, `paused` or `diverged`.
    public var state: String
    public var heldDown: Bool
    public var cursor: UInt64
    public var endOffset: UInt64
    public var lag: UInt64
    public var lastError: String?
    /// `successes/threshold` of the probes while verifying.
    public var probeProgress: String
    public var probeSuccesses: Int
    public var probeThreshold: Int
    public var timeInStateMs: UInt64
    public var suspensions: Int
    public var flaps: Int
    public var holdDowns: Int
    public var rejectedEntries: Int
    public var appliedEntries: UInt64
    public var deadLettersFailed: Int
    public var running: Bool
    /// The stream's identity as the link reads it: what the target's position must carry.
    public var streamId: String
    public var epoch: UInt64

    public init(
        name: String, stream: String, state: String, heldDown: Bool, cursor: UInt64, endOffset: UInt64, lag: UInt64,
        lastError: String?, probeProgress: String, probeSuccesses: Int, probeThreshold: Int, timeInStateMs: UInt64,
        suspensions: Int, flaps: Int, holdDowns: Int, rejectedEntries: Int, appliedEntries: UInt64, deadLettersFailed: Int,
        running: Bool, streamId: String, epoch: UInt64
    ) {
        self.name = name
        self.stream = stream
        self.state = state
        self.heldDown = heldDown
        self.cursor = cursor
        self.endOffset = endOffset
        self.lag = lag
        self.lastError = lastError
        self.probeProgress = probeProgress
        self.probeSuccesses = probeSuccesses
        self.probeThreshold = probeThreshold
        self.timeInStateMs = timeInStateMs
        self.suspensions = suspensions
        self.flaps = flaps
        self.holdDowns = holdDowns
        self.rejectedEntries = rejectedEntries
        self.appliedEntries = appliedEntries
        self.deadLettersFailed = deadLettersFailed
        self.running = running
        self.streamId = streamId
        self.epoch = epoch
    }
}

/// `GET /v1/links/{link}/sync-log`: newest first.
public struct SyncLogPage: Codable, Sendable, Hashable {
    public var records: [SyncLogRecordBody]
    /// Pass as `before` to get the next (older) page; absent on the last page.
    public var nextBefore: UInt64?

    public init(records: [SyncLogRecordBody], nextBefore: UInt64?) {
        self.records = records
        self.nextBefore = nextBefore
    }
}

public struct SyncLogRecordBody: Codable, Sendable, Hashable {
    public var sequence: UInt64
    public var timeMs: UInt64
    public var event: String
    public var state: String
    public var reason: String
    public var offset: UInt64?
    public var status: String?
    public var targetCode: String?

    public init(
        sequence: UInt64, timeMs: UInt64, event: String, state: String, reason: String, offset: UInt64?, status: String?,
        targetCode: String?
    ) {
        self.sequence = sequence
        self.timeMs = timeMs
        self.event = event
        self.state = state
        self.reason = reason
        self.offset = offset
        self.status = status
        self.targetCode = targetCode
    }
}

/// `GET /v1/links/{link}/dead-letters`: newest first.
public struct DeadLetterPage: Codable, Sendable, Hashable {
    public var deadLetters: [DeadLetterBody]
    public var nextBefore: UInt64?

    public init(deadLetters: [DeadLetterBody], nextBefore: UInt64?) {
        self.deadLetters = deadLetters
        self.nextBefore = nextBefore
    }
}

public struct DeadLetterBody: Codable, Sendable, Hashable {
    public var offset: UInt64
    /// The entry as it was appended (JSON text).
    public var entry: String
    public var error: String
    public var targetCode: String?
    public var status: String
    public var failedAtMs: UInt64
    public var resolvedAtMs: UInt64?
    public var attempts: Int

    public init(
        offset: UInt64, entry: String, error: String, targetCode: String?, status: String, failedAtMs: UInt64,
        resolvedAtMs: UInt64?, attempts: Int
    ) {
        self.offset = offset
        self.entry = entry
        self.error = error
        self.targetCode = targetCode
        self.status = status
        self.failedAtMs = failedAtMs
        self.resolvedAtMs = resolvedAtMs
        self.attempts = attempts
    }
}
