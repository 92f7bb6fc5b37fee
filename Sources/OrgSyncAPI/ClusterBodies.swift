/// `GET /v1/cluster`: this member, the members alive now and where every link runs.
public struct ClusterBody: Codable, Sendable, Hashable {
    /// The member that answered (`cluster.node`).
    public var node: String
    public var leaseMs: Int
    /// The members whose announcement has not expired, sorted.
    public var members: [String]
    /// Every configured link, in configuration order.
    public var links: [ClusterLinkBody]
    /// Every configured capture source, in configuration order.
    public var sources: [ClusterSourceBody]

    public init(node: String, leaseMs: Int, members: [String], links: [ClusterLinkBody], sources: [ClusterSourceBody] = []) {
        self.node = node
        self.leaseMs = leaseMs
        self.members = members
        self.links = links
        self.sources = sources
    }
}

/// Where one capture source runs.
public struct ClusterSourceBody: Codable, Sendable, Hashable {
    public var source: String
    /// `pinned` (it names its member, `node:`) or `leased` (the cluster places it).
    public var placement: String
    /// The member that runs it; absent while nobody holds the lease.
    public var owner: String?
    /// The lease's owner epoch; absent for a pinned source and while nobody holds the lease.
    public var ownerEpoch: UInt64?

    public init(source: String, placement: String, owner: String?, ownerEpoch: UInt64?) {
        self.source = source
        self.placement = placement
        self.owner = owner
        self.ownerEpoch = ownerEpoch
    }
}

/// Where one link runs.
public struct ClusterLinkBody: Codable, Sendable, Hashable {
    public var link: String
    /// `pinned` (it names its member, `node:`) or `leased` (the cluster places it).
    public var placement: String
    /// The member that runs it: the pinned member, or the lease's holder; absent while nobody
    /// holds the lease (between a member's loss and the next one's round).
    public var owner: String?
    /// The lease's owner epoch, which every batch carries and the target stores; absent for a
    /// pinned link (0 at the target) and while nobody holds the lease.
    public var ownerEpoch: UInt64?

    public init(link: String, placement: String, owner: String?, ownerEpoch: UInt64?) {
        self.link = link
        self.placement = placement
        self.owner = owner
        self.ownerEpoch = ownerEpoch
    }
}
