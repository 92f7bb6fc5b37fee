#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import OrgSyncBroker
import OrgSyncNATS

/// A link's lease as the `orgsync_leases` bucket holds it, under the link's name.
public struct LinkLease: Sendable, Hashable, Codable {
    /// The member that runs the link.
    public var owner: String
    /// Its owner epoch: the bucket revision at which it took the lease (0 in the instant between
    /// taking it and writing it here). Every batch it applies carries it, and the target refuses
    /// batches of a lower one (``OrgSyncPluginAPI/EntryBatch/ownerEpoch``).
    public var epoch: UInt64

    public init(owner: String, epoch: UInt64) {
        self.owner = owner
        self.epoch = epoch
    }
}

/// A lease bucket's content that no member wrote.
public enum LinkLeaseError: Error, Sendable, Hashable, CustomStringConvertible {
    case unreadableLease(link: String)
    case revisionPastEpochs(link: String, revision: UInt64)
    /// Some links' steps in a round failed (by link, the error); the others' were done.
    case stepsFailed([String: String])

    public var description: String {
        switch self {
        case .stepsFailed(let failures):
            let shown = failures.sorted { $0.key < $1.key }.prefix(Self.failuresShownMax).map { "\($0.key): \($0.value)" }
            let more = failures.count > Self.failuresShownMax ? " and \(failures.count - Self.failuresShownMax) more" : ""
            return "the leases of \(failures.count) link(s) could not be renewed or taken (\(shown.joined(separator: "; "))\(more))"
        case .unreadableLease(let link): return "the lease of link \(link) in \(LinkLeases.leasesBucket) is not {owner, epoch}"
        case .revisionPastEpochs(let link, let revision):
            return "the lease of link \(link) got revision \(revision), past any owner epoch a target stores (\(Int64.max))"
        }
    }

    /// Links named in a ``stepsFailed(_:)`` description.
    static let failuresShownMax = 5
}

/// What a member does with one link's lease in a round. Decided by ``decide(me:desired:record:held:)``
/// from what the bucket holds and what the member holds; performed by ``LinkLeases``.
public enum LeaseStep: Sendable, Hashable {
    /// Nobody holds it and this member should run it: create the key.
    case acquire
    /// A lease under this member's name that it does not hold (written by an earlier run of it):
    /// write over exactly that revision, which gives a new, higher epoch.
    case takeOver(revision: UInt64)
    /// Held, and this member should go on running it.
    case renew(revision: UInt64)
    /// Held, but another member should run it now: stop running it and renew once more; the
    /// next round releases it.
    case handOver(revision: UInt64)
    /// Held, stopped last round: delete the key (guarded by its revision) so the new owner
    /// takes it at once rather than after the lease ran out.
    case release(revision: UInt64)
    /// Held no more: the key expired, was deleted or is at another revision.
    case lost
    /// Someone else's, or nobody's and not this member's to take.
    case leave

    /// - Parameters:
    ///   - desired: the member rendezvous placement gives the link among the live members.
    ///   - record: the bucket's lease and its revision (nil: none, expired or deleted).
    ///   - held: the revision this member last wrote, and whether it is handing the link over.
    public static func decide(
        me: String, desired: String?, record: (lease: LinkLease, revision: UInt64)?, held: (revision: UInt64, handingOver: Bool)?
    ) -> LeaseStep {
        if let held {
            guard let record, record.revision == held.revision, record.lease.owner == me else { return .lost }
            if desired == me { return .renew(revision: held.revision) }
            return held.handingOver ? .release(revision: held.revision) : .handOver(revision: held.revision)
        }
        guard desired == me else { return .leave }
        guard let record else { return .acquire }
        return record.lease.owner == me ? .takeOver(revision: record.revision) : .leave
    }
}

/// Membership and link ownership of one cluster member, in two JetStream key-value buckets
/// whose values live `lease_ms` (the server's clock; no member's clock is trusted):
///
/// - `orgsync_members`: one key per live member, written every round.
/// - `orgsync_leases`: one key per link that someone runs, `{owner, epoch}`, renewed every round
///   by compare-and-set on its revision.
///
/// Each round a member lists the live members, places every link by ``RendezvousPlacement``, and
/// acquires, renews, hands over or releases its leases (``LeaseStep``). A member that stops
/// (crash, pause, cut off) stops renewing: its keys expire after `lease_ms`, and the placed member
/// acquires the link at its next round, with a higher epoch. Safety does not rest on that timing:
/// every batch carries the owner's epoch and the target refuses a lower one than it stored.
///
/// Run ``round()`` every renew interval (a third of `lease_ms`); stop running a link as soon as a
/// round no longer returns it, and stop running every link when rounds fail for `lease_ms`
/// (``owned(at:)``).
public actor LinkLeases: LinkOwnership {
    public let node: String
    public let links: [String]
    public let leaseMs: Int
    public nonisolated var renewIntervalMs: Int { max(1, leaseMs / 3) }
    let members: KeyValueBucket
    let leases: KeyValueBucket
    private let now: @Sendable () -> ContinuousClock.Instant
    private var held: [String: Held] = [:]

    private struct Held {
        var epoch: UInt64
        var revision: UInt64
        var handingOver: Bool
        /// When the write that last renewed it was sent: the lease runs until this + lease_ms.
        var renewedAt: ContinuousClock.Instant
    }

    public static let membersBucket = "orgsync_members"
    public static let leasesBucket = "orgsync_leases"
    /// The highest revision taken as an epoch: targets store epochs as signed 64-bit integers.
    static let epochMax = UInt64(Int64.max)

    init(node: String, links: [String], leaseMs: Int, members: KeyValueBucket, leases: KeyValueBucket,
         now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.node = node
        self.links = links
        self.leaseMs = leaseMs
        self.members = members
        self.leases = leases
        self.now = now
    }

    /// Opens (creating when absent) the two buckets, with `leaseMs` as their TTL.
    public static func open(
        jetStream: JetStream, node: String, links: [String], leaseMs: Int, replicas: Int
    ) async throws -> LinkLeases {
        let members = try await KeyValueBucket.create(jetStream, name: membersBucket, replicas: replicas, ttlMs: leaseMs)
        let leases = try await KeyValueBucket.create(jetStream, name: leasesBucket, replicas: replicas, ttlMs: leaseMs)
        return LinkLeases(node: node, links: links, leaseMs: leaseMs, members: members, leases: leases)
    }

    /// One round: announce this member, list the live ones, and act on every link's lease.
    /// Returns the links this member runs now, with their epochs.
    ///
    /// A link whose step fails (its lease unreadable, a request that timed out) does not stop the
    /// others' steps: the round does them all, then throws ``LinkLeaseError/stepsFailed(_:)``;
    /// ``owned(at:)`` then gives what the done steps left held.
    public func round() async throws -> [String: UInt64] {
        try await members.put(node, Array(#"{"node":"\#(node)"}"#.utf8))
        var live = Set(try await members.keys())
        live.insert(node)
        // The links' steps overlap (each is a read and a write of its own key): done one after
        // another, a round of a hundred links took longer than the renew interval.
        let placed = live
        let failures = await withTaskGroup(of: (String, String?).self) { group in
            var pending = links.makeIterator()
            for _ in 0..<Self.stepsInFlightMax {
                guard let link = pending.next() else { break }
                group.addTask { await self.stepReportingFailure(link, live: placed) }
            }
            var failures: [String: String] = [:]
            while let (link, failure) = await group.next() {
                if let failure { failures[link] = failure }
                if let link = pending.next() { group.addTask { await self.stepReportingFailure(link, live: placed) } }
            }
            return failures
        }
        try Task.checkCancellation()
        guard failures.isEmpty else { throw LinkLeaseError.stepsFailed(failures) }
        return owned(at: now())
    }

    private func stepReportingFailure(_ link: String, live: Set<String>) async -> (String, String?) {
        do {
            try await step(link, live: live)
            return (link, nil)
        } catch {
            return (link, "\(error)")
        }
    }

    /// Links whose lease steps a round runs at once.
    static let stepsInFlightMax = 16

    private func step(_ link: String, live: Set<String>) async throws {
        let record = try await leases.get(link).map { entry in (lease: try Self.decode(entry.value, link: link), revision: entry.revision) }
        let desired = RendezvousPlacement.owner(of: link, among: live)
        let step = LeaseStep.decide(me: node, desired: desired, record: record, held: held[link].map { ($0.revision, $0.handingOver) })
        try await perform(step, link: link)
    }

    /// The links this member may run at `instant`: held, not being handed over, and renewed
    /// less than `lease_ms` before.
    public func owned(at instant: ContinuousClock.Instant) -> [String: UInt64] {
        var owned: [String: UInt64] = [:]
        for (link, lease) in held where !lease.handingOver && instant - lease.renewedAt < .milliseconds(leaseMs) {
            owned[link] = lease.epoch
        }
        return owned
    }

    /// Leaves the cluster: releases every lease this member holds and removes it from the
    /// members (a SIGTERM's hand-over; stop running the links first). Errors are left to expiry.
    public func leave() async {
        for (link, lease) in held {
            _ = try? await leases.delete(link, revision: lease.revision)
        }
        held = [:]
        _ = try? await members.delete(node)
    }

    public func view() async throws -> LeaseView {
        var holders: [String: LeaseHolder] = [:]
        for link in links {
            guard let entry = try await leases.get(link) else { continue }
            let lease = try Self.decode(entry.value, link: link)
            holders[link] = LeaseHolder(owner: lease.owner, epoch: lease.epoch)
        }
        return LeaseView(members: try await members.keys(), holders: holders)
    }

    private func perform(_ step: LeaseStep, link: String) async throws {
        let sent = now()
        switch step {
        case .leave:
            break
        case .lost:
            held[link] = nil
        case .acquire, .takeOver:
            let taken: UInt64
            do {
                if case .takeOver(let revision) = step {
                    taken = try await leases.update(link, Self.encode(LinkLease(owner: node, epoch: 0)), revision: revision)
                } else {
                    taken = try await leases.create(link, Self.encode(LinkLease(owner: node, epoch: 0)))
                }
            } catch KeyValueError.keyExists(_), KeyValueError.wrongRevision(_, _) {
                return  // another member was first
            }
            guard taken <= Self.epochMax else {
                throw LinkLeaseError.revisionPastEpochs(link: link, revision: taken)
            }
            held[link] = Held(epoch: taken, revision: taken, handingOver: false, renewedAt: sent)
            try await renew(link, revision: taken, handingOver: false, sent: now())
        case .renew(let revision):
            try await renew(link, revision: revision, handingOver: false, sent: sent)
        case .handOver(let revision):
            try await renew(link, revision: revision, handingOver: true, sent: sent)
        case .release(let revision):
            held[link] = nil
            do {
                try await leases.delete(link, revision: revision)
            } catch KeyValueError.wrongRevision(_, _) {
                // Expired or taken meanwhile: nothing of ours to release.
            }
        }
    }

    /// Writes the lease again over `revision`; a refusal means it is held no more.
    private func renew(_ link: String, revision: UInt64, handingOver: Bool, sent: ContinuousClock.Instant) async throws {
        guard let lease = held[link] else { return }
        do {
            let next = try await leases.update(link, Self.encode(LinkLease(owner: node, epoch: lease.epoch)), revision: revision)
            held[link] = Held(epoch: lease.epoch, revision: next, handingOver: handingOver, renewedAt: sent)
        } catch KeyValueError.wrongRevision(_, _) {
            held[link] = nil
        }
    }

    static func encode(_ lease: LinkLease) -> [UInt8] {
        (try? Array(JSONEncoder().encode(lease))) ?? []
    }

    /// A lease value, read as untrusted input.
    static func decode(_ bytes: [UInt8], link: String) throws -> LinkLease {
        guard bytes.count <= 1024, let lease = try? JSONDecoder().decode(LinkLease.self, from: Data(bytes)), !lease.owner.isEmpty else {
            throw LinkLeaseError.unreadableLease(link: link)
        }
        return lease
    }
}
