/// Applies entries of one stream to one target ("org"): a database, a service, a file.
///
/// The broker creates one adapter per link (through an ``OrgAdapterFactory``) and calls it from
/// one task at a time: calls never overlap, so an adapter needs no locking of its own state.
///
/// ## Implementation requirements
///
/// - **Order.** Apply the entries of a batch in offset order. Batches arrive in offset order.
/// - **Atomicity.** Apply a batch as one unit where the target can (one transaction). If
///   ``apply(_:)`` throws, the link assumes *nothing* of that batch was committed and will send
///   the same entries again (or a prefix of them, after a rejection).
/// - **Idempotence / exactly-once.** After a crash the broker may re-send entries that the target
///   already committed. A target that can store data and a position in one transaction should
///   store the batch's ``EntryBatch/identity`` and last offset with the batch (SQL adapters keep
///   an `orgsync_offsets` table, one row per link) and return it from ``appliedPosition()``:
///   the link checks it against the stream and starts after it, so nothing is applied twice and
///   nothing is skipped on a guess. Decide what to skip with ``StoredPositionVerdict/decide(stored:batch:)``
///   and what to store with ``StoredPositionVerdict/positionAfter(_:stored:)``. A target that
///   cannot must make re-application harmless (upserts, an idempotency key such as
///   `stream:firstOffset-lastOffset`), return `nil` and ignore ``setAppliedPosition(_:)``.
/// - **Errors.** Throw ``AdapterError``: `.connection` when the target is unreachable or refuses
///   to work now (the link suspends and probes), `.rejected(offset:)` naming the *first* entry
///   that can never apply (roll the batch back first), `.retryable` for transient conflicts.
///   Never report a rejected entry as connection or the link will stall on it; never report a
///   lost connection as rejected or entries will go to the dead letters for nothing.
/// - **Probing.** ``probe()`` is one cheap round trip (`SELECT 1`, a HEAD request). It must
///   fail with `.connection` whenever ``apply(_:)`` would; it must not change the target.
/// - **Cancellation.** A call may be cancelled when the broker shuts down; return promptly.
/// - **Secrets.** Never put credentials in error messages: they reach logs and the sync log.
public protocol OrgAdapter: Sendable {
    /// Connects to the target (and creates what the adapter needs there, such as its offsets
    /// table). Called before any other method, and again after a connection failure.
    func open() async throws

    /// Applies every entry of `batch`, in order, as one unit where the target allows it, and
    /// records `batch.lastOffset` as this link's applied offset in the same unit when the
    /// target can keep one.
    func apply(_ batch: EntryBatch) async throws

    /// One cheap round trip to the target. Throws `.connection` if the target is not usable.
    func probe() async throws

    /// The position this link last applied, as stored in the target, or `nil` if the target
    /// keeps none (or nothing was applied yet).
    func appliedPosition() async throws -> AppliedPosition?

    /// Rewrites this link's stored position in the target's own transaction (`nil`: remove it),
    /// for an operator who resets a link to replay from an offset, or adopts the target's
    /// position for the stream. A target that keeps no position does nothing.
    func setAppliedPosition(_ position: AppliedPosition?) async throws

    /// Releases connections and processes. Must not throw; may be called more than once.
    func close() async

    /// The link has caught up and applied nothing for a while: give back memory that only
    /// speeds up the next batch (a page cache, prepared statements), keeping the connection.
    /// Called at most once per quiet spell, like every other call never overlapping one.
    /// Default: nothing.
    func releaseMemory() async
}

extension OrgAdapter {
    public func releaseMemory() async {}
}

/// Makes adapters of one kind. Registered with the broker under ``name``.
public protocol OrgAdapterFactory: Sendable {
    /// The name links use in their configuration, e.g. `sqlite`, `postgres`, `webhook`.
    var name: String { get }
    /// The adapter's version, shown by `orgsync plugins list`.
    var version: String { get }
    /// Creates the adapter of one link. Validate the configuration here and throw
    /// ``AdapterConfigurationError`` naming the setting; do not connect yet (that is `open`).
    func makeAdapter(_ configuration: AdapterConfiguration) throws -> any OrgAdapter
    /// The settings ``makeAdapter(_:)`` reads. The broker refuses, at start-up and naming the
    /// field, a link that gives a setting not declared here or leaves out a required one.
    /// Defaults to ``AdapterSettingsDeclaration/any`` (nothing checked); declare yours.
    var settings: AdapterSettingsDeclaration { get }
    /// Whether the target stores ``EntryBatch/ownerEpoch`` with its applied position and refuses
    /// a batch of a lower one (``StoredPositionVerdict/fenced``). Only such an adapter may serve
    /// a cluster's leased link, which moves between members: the target must refuse a member
    /// that lost the link. Defaults to false; a link pinned to one member (`node:`) needs none.
    var fencesOwnerEpochs: Bool { get }
}

extension OrgAdapterFactory {
    /// Accepts any setting name: factories written before settings were declared keep working.
    public var settings: AdapterSettingsDeclaration { .any }
    public var fencesOwnerEpochs: Bool { false }
}
