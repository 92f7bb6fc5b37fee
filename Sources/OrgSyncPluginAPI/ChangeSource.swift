/// Where a captured change stands in its source: the position of the transaction's commit (a
/// PostgreSQL commit LSN) and the change's index within that transaction. Ordered as the source
/// commits: every change of a later transaction comes after every change of an earlier one.
public struct SourcePosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The commit's position in the source (for PostgreSQL, the commit record's LSN).
    public var commit: UInt64
    /// 0-based index of the change within its transaction.
    public var change: UInt32

    public init(commit: UInt64, change: UInt32) {
        self.commit = commit
        self.change = change
    }

    public static func < (lhs: SourcePosition, rhs: SourcePosition) -> Bool {
        (lhs.commit, lhs.change) < (rhs.commit, rhs.change)
    }

    public var description: String { "\(commit)#\(change)" }
}

/// Where a source puts what it captured: the broker's stream.
public protocol CaptureSink: Sendable {
    /// Appends `entries` (each one JSON entry, in source order) durably before returning.
    /// `through` is the position of the last of them. A source calls it in position order and
    /// acknowledges the changes to its database only after it returned.
    ///
    /// - Throws: when the stream cannot take them; the source must not acknowledge them then.
    func append(_ entries: [[UInt8]], through: SourcePosition) async throws
}

/// What one capture round did.
public struct CaptureRound: Sendable, Hashable {
    /// Changes appended to the stream.
    public var appendedChanges: Int
    /// Changes read again that the stream already held (after a restart), not appended twice.
    public var skippedChanges: Int
    /// Committed transactions read in full.
    public var transactions: Int
    /// True when the round read everything the source had: the next round can wait for the
    /// poll interval. False when it stopped at its size limit and more is waiting.
    public var caughtUp: Bool
    /// The commit time (ms since 1970, the source's clock) of the newest transaction the round
    /// read whole, appended or skipped; nil when it read none. Everything committed up to then
    /// is in the stream (changes come in commit order): the status's lag in time.
    public var newestCommitTimeMs: UInt64?

    public init(
        appendedChanges: Int = 0, skippedChanges: Int = 0, transactions: Int = 0, caughtUp: Bool = true, newestCommitTimeMs: UInt64? = nil
    ) {
        self.appendedChanges = appendedChanges
        self.skippedChanges = skippedChanges
        self.transactions = transactions
        self.caughtUp = caughtUp
        self.newestCommitTimeMs = newestCommitTimeMs
    }
}

/// A database whose committed changes the broker captures into a stream (a PostgreSQL
/// database through logical decoding, `kind: postgres`).
///
/// Calls never overlap: the broker's source supervisor makes every call from one task. A
/// failure that is the database's (connection lost, slot missing, permission refused) is
/// thrown; the supervisor then suspends the source, probes it, and resumes after enough answered
/// probes — the same rules as a link's target.
public protocol ChangeSource: Sendable {
    /// How long a caught-up source waits before its next round, in milliseconds.
    var pollIntervalMs: UInt64 { get }
    /// Connects (if not connected) and checks what capture needs, creating what it may (the
    /// slot, the publication). Idempotent.
    func open() async throws
    /// Drops the connection. The slot stays: it holds the source's position.
    func close() async
    /// Checks that the database answers and capture could run (opens first if needed).
    func probe() async throws
    /// Reads the changes committed since the last acknowledged round, appends those after
    /// `position` through `sink` (in commit order; each transaction's changes in order), and
    /// then acknowledges to the database what the sink made durable. Changes at or before
    /// `position` are in the stream already: they are skipped, never appended twice.
    /// `lastEntry` is the stream's last entry of this source (the one at `position`, the latest
    /// of several there): a source that resumes work by more than the position (an initial
    /// snapshot, by key) reads it.
    func capture(after position: SourcePosition?, lastEntry: Entry?, into sink: any CaptureSink) async throws -> CaptureRound
    /// The position recorded in `entry` if this source appended it, else nil: the broker finds
    /// where the source stands by reading the stream's tail (``SourcePosition``), so the
    /// position is stored atomically with the entries themselves.
    func position(of entry: Entry) -> SourcePosition?
    /// How far behind the database the source is, in bytes of its log (PostgreSQL: WAL between
    /// the server's current position and the slot's confirmed one), as last measured; nil when
    /// not known yet.
    func lagBytes() async -> UInt64?
}

/// Makes the ``ChangeSource`` of one configured source.
public protocol ChangeSourceFactory: Sendable {
    /// The `kind` it serves (`postgres`).
    var kind: String { get }
    /// The settings it accepts: anything else in a source's `settings` stops start-up.
    var settings: AdapterSettingsDeclaration { get }
    /// Checks the settings (throwing naming the first bad one) and makes the source; does not
    /// connect. `configuration.linkName` is the source's name.
    func makeSource(_ configuration: AdapterConfiguration) throws -> any ChangeSource
}
