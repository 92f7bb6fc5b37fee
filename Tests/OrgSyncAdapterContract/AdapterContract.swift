import OrgSyncPluginAPI

/// The behaviour every ``OrgAdapter`` must show, as one suite that any adapter's tests run.
///
/// ## Plugging an adapter in
///
/// 1. Write a type conforming to ``AdapterContractTarget``: it owns one fresh, empty target
///    (a temp file, a new database/schema, a test HTTP server), hands out the factory and the
///    configuration of a link on it, reads rows back, and can make the target dead.
/// 2. In your test target (depending on `OrgSyncAdapterContract`), run every check:
///
/// ```swift
/// @Test(arguments: AdapterContract.Check.allCases)
/// func postgresContract(_ check: AdapterContract.Check) async throws {
///     try await AdapterContract { try await PostgresContractTarget.make() }.run(check)
/// }
/// ```
///
/// A check throws ``AdapterContractViolation`` saying what was expected and what happened, so the
/// suite works with Swift Testing and XCTest alike. Each check gets a target of its own from
/// `makeTarget` and tears it down afterwards, also when it fails.
public struct AdapterContract: Sendable {
    /// The checks, one per property of the contract.
    public enum Check: String, Sendable, CaseIterable, CustomStringConvertible {
        /// Batches apply in order: inserts, upserts (partial updates) and deletes of the same key
        /// within and across batches end in the state a sequential reading gives; one table/
        /// collection per object; `appliedOffset` is the last offset of the last batch;
        /// `releaseMemory()` between batches changes nothing.
        case orderedApply
        /// Re-applying batches already applied (as after a crash between the target commit and
        /// the broker's cursor write) neither fails, nor duplicates rows, nor moves a record back
        /// to an older value.
        case idempotentReapply
        /// An entry the target cannot apply is reported as `rejected(offset:)` with its own
        /// offset, and nothing of its batch is committed; the prefix and the rest then apply.
        case rejectedEntry
        /// Against a dead target, `probe` and `apply` throw `.connection`, and so does `open` of a
        /// new adapter; `close` returns.
        case probeDeadTarget
        /// The applied offset is kept per link in the target and survives closing and reopening
        /// (a new adapter from the same factory and configuration).
        case appliedOffsetSurvivesReopen
        /// The stored position carries the stream identity of its batch; a batch of another
        /// stream or an older epoch is a `positionConflict` and commits nothing; a later epoch
        /// applies every entry.
        case positionIdentity
        /// `setAppliedPosition` rewrites (or removes) the stored position: entries after it are
        /// applied again.
        case positionRewrite
        /// The stored position carries the owner epoch of its batch; a batch of a lower owner
        /// epoch (a broker that lost the link) is `fenced` and commits nothing, also from another
        /// adapter instance on the same link; a higher owner epoch applies and takes over.
        case ownerFencing

        public var description: String { rawValue }
    }

    private let makeTarget: @Sendable () async throws -> any AdapterContractTarget

    /// - Parameter makeTarget: makes a fresh, empty target for one check.
    public init(makeTarget: @escaping @Sendable () async throws -> any AdapterContractTarget) {
        self.makeTarget = makeTarget
    }

    /// Runs one check against a target of its own.
    public func run(_ check: Check) async throws {
        let target = try await makeTarget()
        var session = ContractSession(target: target, check: check)
        do {
            switch check {
            case .orderedApply: try await session.orderedApply()
            case .idempotentReapply: try await session.idempotentReapply()
            case .rejectedEntry: try await session.rejectedEntry()
            case .probeDeadTarget: try await session.probeDeadTarget()
            case .appliedOffsetSurvivesReopen: try await session.appliedOffsetSurvivesReopen()
            case .positionIdentity: try await session.positionIdentity()
            case .positionRewrite: try await session.positionRewrite()
            case .ownerFencing: try await session.ownerFencing()
            }
            do {
                try await target.checkWhatTheAdapterSent()
            } catch {
                throw AdapterContractViolation(check: check, message: "what the adapter sent: \(error)")
            }
        } catch {
            await session.closeAll()
            await target.tearDown()
            throw error
        }
        await session.closeAll()
        await target.tearDown()
    }

    /// Runs every check, each against a target of its own; stops at the first violation.
    public func runAll() async throws {
        for check in Check.allCases { try await run(check) }
    }
}

/// One fresh target an adapter writes to, as the contract sees it. Implemented by each
/// adapter's tests.
public protocol AdapterContractTarget: Sendable {
    /// The factory under test.
    var factory: any OrgAdapterFactory { get }
    /// What the target can do; the contract adapts a few expectations to it.
    var capabilities: AdapterContractCapabilities { get }
    /// The configuration of a link named `linkName` on this target.
    func configuration(linkName: String, streamName: String) -> AdapterConfiguration
    /// The records the target holds for `object`, one element per stored row (so duplicates
    /// show), in any order; empty when the object was never written.
    func rows(object: String) async throws -> [ContractRow]
    /// Makes the target unreachable: stop its server, remove its file and its directory. The
    /// contract calls it once, near the end of a check.
    func makeDead() async throws
    /// An entry at `offset` that the target must reject, given that `existingKey` of `object`
    /// was already applied. The default is an `insert` of that existing key.
    func entryToReject(offset: Offset, object: String, existingKey: String) -> Entry
    /// Releases what the target holds (servers, temp directories). Must not throw.
    func tearDown() async
    /// Checks what the adapter sent the target during the check (requests, headers, keys,
    /// order), where the target can see it; throws naming the first problem. The default sees
    /// nothing to check.
    func checkWhatTheAdapterSent() async throws
}

extension AdapterContractTarget {
    public var capabilities: AdapterContractCapabilities { AdapterContractCapabilities() }

    public func checkWhatTheAdapterSent() async throws {}

    public func entryToReject(offset: Offset, object: String, existingKey: String) -> Entry {
        Entry(
            offset: offset, org: "contract", object: object, op: .insert, key: existingKey,
            ts: "2026-11-25T00:00:00.000Z", fields: ["Name": .string("duplicate")])
    }
}

/// What a target can do, where adapters legitimately differ.
public struct AdapterContractCapabilities: Sendable, Hashable {
    /// The adapter stores the applied offset in the target (SQL adapters), with its stream
    /// identity and owner epoch, and fences batches of an older owner. When false (an
    /// at-least-once target such as a webhook), `appliedOffset()` must return nil and
    /// re-application must still leave the same rows.
    public var storesAppliedOffset: Bool

    public init(storesAppliedOffset: Bool = true) {
        self.storesAppliedOffset = storesAppliedOffset
    }
}

/// One record as read back from a target: its key and its fields (column → value). A reader
/// returns strings as `.string` and integers as `.int`; other types are not compared.
public struct ContractRow: Sendable, Hashable {
    public var key: String
    public var fields: [String: JSONValue]

    public init(key: String, fields: [String: JSONValue]) {
        self.key = key
        self.fields = fields
    }
}

/// A check of the contract failed: what was expected, and what happened.
public struct AdapterContractViolation: Error, Sendable, CustomStringConvertible {
    public var check: AdapterContract.Check
    public var message: String

    public var description: String { "adapter contract, \(check): \(message)" }
}
