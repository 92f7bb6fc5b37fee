/// How a link consumes, and how its supervisor decides that a target is down or back.
///
/// Every field has a default suited to a database target on a LAN or WAN link, and carries its
/// unit in its name. Call ``validate()`` before use: the supervisor refuses a configuration that
/// fails it (a zero threshold would resume on no evidence; a window shorter than K intervals could
/// never be met).
public struct LinkSupervisorConfiguration: Sendable, Hashable {
    /// K: consecutive successful probe responses needed before a suspended link resumes.
    public var probeThreshold: Int = 3
    /// Time between the probes of a verification.
    public var verifyIntervalMs: UInt64 = 1_000
    /// All K successful probes must fall within this window, counted from the first of them;
    /// a slower series starts again from the latest success.
    public var verifyWindowMs: UInt64 = 10_000
    /// First delay between failed probes while suspended; doubles on each further failure.
    public var backoffBaseMs: UInt64 = 500
    /// Longest delay between failed probes, jitter included.
    public var backoffCapMs: UInt64 = 30_000
    /// Each backoff delay is spread uniformly by ± this fraction of itself (0 disables jitter),
    /// so that links that failed together do not probe together.
    public var jitterRatio: Double = 0.2
    /// F: a link that fails again after a resume more than this many times within
    /// ``flapWindowMs`` is held down.
    public var flapLimit: Int = 3
    /// T: the window in which flaps are counted.
    public var flapWindowMs: UInt64 = 300_000
    /// How long a flapping link waits before its next probe.
    public var holdDownMs: UInt64 = 120_000
    /// Attempts of one batch that fails with a retryable error before it counts as a
    /// connection failure (1 means no retry).
    public var retryableAttemptsMax: Int = 5
    /// First delay between retryable attempts; doubles per attempt, capped by ``backoffCapMs``.
    public var retryableBackoffBaseMs: UInt64 = 100
    /// Most entries handed to the adapter in one batch.
    public var batchEntriesMax: Int = 500
    /// Pause the link on the first rejected entry (it is not skipped) instead of sending it to
    /// the dead letters and going on.
    public var stopOnReject: Bool = false
    /// Most records kept in a link's sync log; the oldest are dropped first.
    public var syncLogRecordsMax: Int = 10_000
    /// Most entries kept in a link's dead letters; the oldest are dropped first.
    public var deadLettersMax: Int = 10_000
    /// How long a caught-up link stands still before its adapter gives back its caches
    /// (``OrgAdapter/releaseMemory()``); nil: never. Not a setting of the configuration file:
    /// shorter than the broker's idle trim of freed memory (two metrics intervals), so that the
    /// trim returns those pages to the system; tests that walk a link's own timers turn it off.
    public var idleMemoryReleaseAfterMs: UInt64? = 1_000

    public init() {}

    /// Longest duration any `…Ms` field may hold: 30 days. Longer waits are a mistake, and the
    /// bound keeps link-clock arithmetic far from overflow.
    public static let durationMsMax: UInt64 = 2_592_000_000
    /// Largest `syncLogRecordsMax` and `deadLettersMax` (both are held in memory).
    public static let recordsMax = 10_000_000

    /// Checks every field against its documented range (README, `data/orgsync.example.yaml`);
    /// throws naming the first field that is out of range.
    public func validate() throws(LinkConfigurationError) {
        let durations = 1...Self.durationMsMax
        let durationRange = "must be in 1...\(Self.durationMsMax)"
        try require(probeThreshold >= 1 && probeThreshold <= 1_000, "probeThreshold", "must be in 1...1000")
        try require(durations.contains(verifyIntervalMs), "verifyIntervalMs", durationRange)
        let minimumWindowMs = verifyIntervalMs.multipliedReportingOverflow(by: UInt64(probeThreshold - 1))
        try require(
            !minimumWindowMs.overflow && verifyWindowMs >= minimumWindowMs.partialValue, "verifyWindowMs",
            "must be at least verifyIntervalMs × (probeThreshold − 1) or the threshold can never be met")
        try require(verifyWindowMs <= Self.durationMsMax, "verifyWindowMs", "must be at most \(Self.durationMsMax)")
        try require(durations.contains(backoffBaseMs), "backoffBaseMs", durationRange)
        try require(backoffCapMs >= backoffBaseMs, "backoffCapMs", "must be at least backoffBaseMs")
        try require(backoffCapMs <= Self.durationMsMax, "backoffCapMs", "must be at most \(Self.durationMsMax)")
        try require(jitterRatio.isFinite && jitterRatio >= 0 && jitterRatio < 1, "jitterRatio", "must be in 0..<1")
        try require(flapLimit >= 0 && flapLimit <= 1_000, "flapLimit", "must be in 0...1000")
        try require(durations.contains(flapWindowMs), "flapWindowMs", durationRange)
        try require(durations.contains(holdDownMs), "holdDownMs", durationRange)
        try require(retryableAttemptsMax >= 1 && retryableAttemptsMax <= 100, "retryableAttemptsMax", "must be in 1...100")
        try require(durations.contains(retryableBackoffBaseMs), "retryableBackoffBaseMs", durationRange)
        try require(batchEntriesMax >= 1 && batchEntriesMax <= 1_000_000, "batchEntriesMax", "must be in 1...1000000")
        try require(syncLogRecordsMax >= 1 && syncLogRecordsMax <= Self.recordsMax, "syncLogRecordsMax", "must be in 1...\(Self.recordsMax)")
        try require(deadLettersMax >= 1 && deadLettersMax <= Self.recordsMax, "deadLettersMax", "must be in 1...\(Self.recordsMax)")
        try require(idleMemoryReleaseAfterMs.map(durations.contains) ?? true, "idleMemoryReleaseAfterMs", durationRange)
    }

    private func require(_ condition: Bool, _ field: String, _ problem: String) throws(LinkConfigurationError) {
        if !condition { throw LinkConfigurationError(field: field, problem: problem) }
    }
}

/// A field of ``LinkSupervisorConfiguration`` is out of range.
public struct LinkConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The field's name, as in the configuration file.
    public var field: String
    public var problem: String

    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { "\(field) \(problem)" }
}
