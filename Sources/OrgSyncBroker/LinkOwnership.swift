/// Which of the cluster's leased links this member runs, and under which owner epochs: the
/// cluster's leases (`LinkLeases` in OrgSyncCluster, on NATS JetStream key-value buckets).
public protocol LinkOwnership: Sendable {
    /// How often ``round()`` runs: a third of the lease, ms.
    var renewIntervalMs: Int { get }
    /// Announces this member, renews, takes, hands over and releases leases; returns the links
    /// this member runs now with their owner epochs.
    func round() async throws -> [String: UInt64]
    /// The links held at `instant` as far as this member knows, for when a round failed: only
    /// the leases renewed less than a lease ago.
    func owned(at instant: ContinuousClock.Instant) async -> [String: UInt64]
    /// Gives every lease back and leaves the members (stop the links first).
    func leave() async
    /// The live members and who holds each leased link's lease, as the buckets say now.
    func view() async throws -> LeaseView
}

/// The cluster's members and leases at one moment.
public struct LeaseView: Sendable, Hashable {
    /// Sorted.
    public var members: [String]
    /// By link; a link nobody holds is absent.
    public var holders: [String: LeaseHolder]

    public init(members: [String], holders: [String: LeaseHolder]) {
        self.members = members
        self.holders = holders
    }
}

/// Who holds a link's lease, under which owner epoch (0 in the instant between taking it and
/// writing the epoch).
public struct LeaseHolder: Sendable, Hashable {
    public var owner: String
    public var epoch: UInt64

    public init(owner: String, epoch: UInt64) {
        self.owner = owner
        self.epoch = epoch
    }
}
