/// `GET /v1/sources`.
public struct SourceList: Codable, Sendable, Hashable {
    public var sources: [SourceStatusBody]
    public init(sources: [SourceStatusBody]) { self.sources = sources }
}

/// A capture source's status, as the API shows it (`GET /v1/sources/{source}` and the operator
/// actions' answers).
public struct SourceStatusBody: Codable, Sendable, Hashable {
    public var name: String
    public var stream: String
    /// `active`, `suspended`, `verifying` or `paused` (the links' states).
    public var state: String
    public var heldDown: Bool
    /// Where the last change in the stream stands in the source: the commit position (for
    /// PostgreSQL the commit LSN as a number, and `position_lsn` as PostgreSQL writes it) and the
    /// change's index in its transaction. Absent before the first change.
    public var positionCommit: UInt64?
    public var positionChange: UInt32?
    public var positionLsn: String?
    /// WAL the source's slot holds back (bytes), as last measured; absent until measured.
    public var lagBytes: UInt64?
    /// How far behind the source the stream may be, in ms: since the moment up to which every
    /// commit is known to be in the stream. Absent before the first round.
    public var lagMs: UInt64?
    public var lastAppendTimeMs: UInt64?
    public var lastError: String?
    /// `successes/threshold` of the probes while verifying.
    public var probeProgress: String
    public var timeInStateMs: UInt64
    public var suspensions: Int
    public var appendedEntries: UInt64
    public var skippedChanges: UInt64
    /// Appends a cluster stream refused because another member appended for this source first
    /// (around a move of its lease); each was read again, none stored twice.
    public var fencedAppends: UInt64
    public var transactions: UInt64
    public var rounds: UInt64
    public var running: Bool

    public init(
        name: String, stream: String, state: String, heldDown: Bool, positionCommit: UInt64?, positionChange: UInt32?,
        lagBytes: UInt64?, lagMs: UInt64?, lastAppendTimeMs: UInt64?, lastError: String?, probeProgress: String, timeInStateMs: UInt64,
        suspensions: Int, appendedEntries: UInt64, skippedChanges: UInt64, fencedAppends: UInt64 = 0, transactions: UInt64, rounds: UInt64,
        running: Bool
    ) {
        self.name = name
        self.stream = stream
        self.state = state
        self.heldDown = heldDown
        self.positionCommit = positionCommit
        self.positionChange = positionChange
        self.positionLsn = positionCommit.map { String($0 >> 32, radix: 16, uppercase: true) + "/" + String($0 & 0xFFFF_FFFF, radix: 16, uppercase: true) }
        self.lagBytes = lagBytes
        self.lagMs = lagMs
        self.lastAppendTimeMs = lastAppendTimeMs
        self.lastError = lastError
        self.probeProgress = probeProgress
        self.timeInStateMs = timeInStateMs
        self.suspensions = suspensions
        self.appendedEntries = appendedEntries
        self.skippedChanges = skippedChanges
        self.fencedAppends = fencedAppends
        self.transactions = transactions
        self.rounds = rounds
        self.running = running
    }
}
