import Foundation
import OrgSyncCluster
import OrgSyncNATS
import OrgSyncTestNATS
import Testing

/// Rendezvous placement and the lease step, alone.
@Suite struct LeaseDecisionTests {
    @Test func rendezvousIsTheSameInAnyOrderAndMovesOnlyWhatItMust() {
        let links = (0..<300).map { "link-\($0)" }
        let three = ["a", "b", "c"]
        let placed = links.map { RendezvousPlacement.owner(of: $0, among: three) }
        #expect(links.map { RendezvousPlacement.owner(of: $0, among: three.reversed()) } == placed, "order of the member list")
        // Spread: each member gets a fair share of 300 links (100 ± 40).
        for member in three {
            let count = placed.filter { $0 == member }.count
            #expect((60...140).contains(count), "\(member) runs \(count) of 300")
        }
        // c leaves: only c's links move, to a or b.
        for (link, owner) in zip(links, placed) {
            let after = RendezvousPlacement.owner(of: link, among: ["a", "b"])
            if owner != "c" { #expect(after == owner, "\(link) moved from \(owner ?? "-") though its member stayed") }
        }
        // d joins: a link moves only to d.
        for (link, owner) in zip(links, placed) {
            let after = RendezvousPlacement.owner(of: link, among: three + ["d"])
            #expect(after == owner || after == "d")
        }
        #expect(RendezvousPlacement.owner(of: "x", among: [String]()) == nil)
        #expect(RendezvousPlacement.weight(member: "ab", link: "c") != RendezvousPlacement.weight(member: "a", link: "bc"))
    }

    @Test func theStepFollowsFromTheRecordAndWhatIsHeld() {
        let mine = (lease: LinkLease(owner: "a", epoch: 7), revision: UInt64(9))
        let theirs = (lease: LinkLease(owner: "b", epoch: 8), revision: UInt64(10))
        typealias Step = LeaseStep
        #expect(Step.decide(me: "a", desired: "a", record: nil, held: nil) == .acquire)
        #expect(Step.decide(me: "a", desired: "b", record: nil, held: nil) == .leave)
        #expect(Step.decide(me: "a", desired: "a", record: theirs, held: nil) == .leave)
        #expect(Step.decide(me: "a", desired: "a", record: mine, held: nil) == .takeOver(revision: 9), "an earlier run's lease")
        #expect(Step.decide(me: "a", desired: "b", record: mine, held: nil) == .leave)
        #expect(Step.decide(me: "a", desired: "a", record: mine, held: (9, false)) == .renew(revision: 9))
        #expect(Step.decide(me: "a", desired: "a", record: mine, held: (9, true)) == .renew(revision: 9), "placed back: keep it")
        #expect(Step.decide(me: "a", desired: "b", record: mine, held: (9, false)) == .handOver(revision: 9))
        #expect(Step.decide(me: "a", desired: "b", record: mine, held: (9, true)) == .release(revision: 9))
        #expect(Step.decide(me: "a", desired: "a", record: mine, held: (8, false)) == .lost, "written by someone since")
        #expect(Step.decide(me: "a", desired: "a", record: nil, held: (9, false)) == .lost, "expired")
        #expect(Step.decide(me: "a", desired: "a", record: theirs, held: (10, false)) == .lost)
    }
}

/// Leases against a real nats-server: two members share eight links as rendezvous places them;
/// a member that stops renewing loses its links to the other within the lease; one that comes
/// back gets its share again with higher epochs; one that leaves hands over at once.
@Suite(.serialized) struct LinkLeasesTests {
    static let links = (1...8).map { "link-\($0)" }
    static let leaseMs = 1_500

    static func member(_ node: String, _ server: NATSTestServer) async throws -> (LinkLeases, NATSConnection) {
        let connection = try await NATSConnection.connect(server.options())
        let leases = try await LinkLeases.open(jetStream: JetStream(connection: connection), node: node, links: links, leaseMs: leaseMs, replicas: 1)
        return (leases, connection)
    }

    /// Runs rounds of `members` in turn, a renew interval apart, until `done` holds of the last
    /// rounds' answers or `within` passed; returns those answers.
    static func rounds(
        _ members: [LinkLeases], within: Duration = .seconds(20), until done: ([[String: UInt64]]) -> Bool
    ) async throws -> [[String: UInt64]] {
        let deadline = ContinuousClock.now + within
        while true {
            var answers: [[String: UInt64]] = []
            for member in members { answers.append(try await member.round()) }
            if done(answers) || ContinuousClock.now >= deadline { return answers }
            try await Task.sleep(for: .milliseconds(leaseMs / 3))  // the renew interval: the protocol's own cadence
        }
    }

    static func placed(among live: [String]) -> [String: String] {
        Dictionary(uniqueKeysWithValues: links.map { ($0, RendezvousPlacement.owner(of: $0, among: live) ?? "") })
    }

    static func owners(_ answers: [(String, [String: UInt64])]) -> [String: String] {
        var owners: [String: String] = [:]
        for (node, owned) in answers { for link in owned.keys { owners[link] = node } }
        return owners
    }

    static func disjoint(_ answers: [[String: UInt64]]) -> Bool {
        answers.map(\.count).reduce(0, +) == Set(answers.flatMap(\.keys)).count
    }

    @Test func membersShareLinksFailOverWithHigherEpochsAndHandOverOnLeave() async throws {
        let server = try await NATSTestServer()
        defer { server.stop() }
        let (a, connectionA) = try await Self.member("a", server)
        let (b, connectionB) = try await Self.member("b", server)
        defer { Task { await connectionA.close(); await connectionB.close() } }

        // Both live: every link runs on the member rendezvous gives it, on one member only.
        let both = Self.placed(among: ["a", "b"])
        #expect(Set(both.values) == ["a", "b"], "eight links spread over two members")
        var answers = try await Self.rounds([a, b]) { Self.owners(zip(["a", "b"], $0).map { $0 }) == both }
        #expect(Self.owners(zip(["a", "b"], answers).map { $0 }) == both)
        #expect(Self.disjoint(answers))
        let epochsBefore = answers[0].merging(answers[1]) { x, _ in x }
        #expect(epochsBefore.values.allSatisfy { $0 > 0 })

        // b stops renewing (crashed, paused, cut off): within the lease a runs everything, each of
        // b's links under a higher epoch than b had.
        let started = ContinuousClock.now
        answers = try await Self.rounds([a]) { $0[0].count == Self.links.count }
        let failover = ContinuousClock.now - started
        #expect(answers[0].count == Self.links.count, "a took over every link")
        #expect(failover < .milliseconds(Self.leaseMs * 3), "failover took \(failover)")
        for (link, owner) in both where owner == "b" {
            #expect((answers[0][link] ?? 0) > (epochsBefore[link] ?? .max), "\(link): a's epoch is above b's")
        }
        let epochsOfA = answers[0]

        // b comes back: its old leases are gone, so it runs nothing of a's until a hands them over;
        // then it runs its share again, under epochs above a's.
        let back = try await b.round()
        #expect(Set(back.keys).isDisjoint(with: epochsOfA.keys.filter { both[$0] == "a" }))
        answers = try await Self.rounds([a, b]) { Self.owners(zip(["a", "b"], $0).map { $0 }) == both && Self.disjoint($0) }
        #expect(Self.owners(zip(["a", "b"], answers).map { $0 }) == both)
        for (link, owner) in both where owner == "b" {
            #expect((answers[1][link] ?? 0) > (epochsOfA[link] ?? .max), "\(link): b's new epoch is above a's")
        }

        // a leaves (SIGTERM): its leases and membership go at once, so b takes every link at its
        // next round, without waiting for the lease to run out.
        await a.leave()
        let taken = try await b.round()
        #expect(taken.count == Self.links.count, "b runs every link right after a left: \(taken.keys.sorted())")
    }

    /// One link's lease that no member wrote (here: not JSON) fails that link's step only: the
    /// round still takes every other link, then names the one it could not.
    @Test func aLinkWhoseLeaseIsUnreadableDoesNotKeepTheOthersFromTheRound() async throws {
        let server = try await NATSTestServer()
        defer { server.stop() }
        let (a, connection) = try await Self.member("a", server)
        defer { Task { await connection.close() } }
        let leases = try await KeyValueBucket.create(
            JetStream(connection: connection), name: LinkLeases.leasesBucket, replicas: 1, ttlMs: Self.leaseMs)
        _ = try await leases.create("link-3", Array("not a lease".utf8))

        await #expect(throws: LinkLeaseError.stepsFailed(["link-3": "\(LinkLeaseError.unreadableLease(link: "link-3"))"])) {
            _ = try await a.round()
        }
        let owned = await a.owned(at: .now)
        #expect(Set(owned.keys) == Set(Self.links).subtracting(["link-3"]), "the round took the seven others")
        #expect(owned.values.allSatisfy { $0 > 0 })
    }
}
