import Logging
import OrgSyncCore
import Synchronization

/// The cluster's leased links on this member: every renew interval a round of the leases
/// (``LinkOwnership``), then the links held under a new epoch get a new supervisor (carrying that
/// epoch in every batch, so the target fences any older owner) and the links no longer held are
/// stopped — before the lease goes to anyone else when this member hands them over, and in any
/// case before its lease runs out on this member's clock (a round is given a renew interval). On shutdown it stops them all and
/// gives the leases back, so the other members take them at once (SIGTERM's hand-over).
///
/// A supervisor that stops on an error while its lease is still held (a cursor write that NATS
/// refused while its stream's leader moved) is made again at the next round, under the same epoch:
/// a leased link is never left held and stopped.
final class LeasedLinks: Sendable {
    let factory: LinkFactory
    let ownership: any LinkOwnership
    let logger: Logger
    private let current = Mutex<[String: LinkSupervisor]>([:])

    init(factory: LinkFactory, ownership: any LinkOwnership, logger: Logger) {
        self.factory = factory
        self.ownership = ownership
        self.logger = logger
    }

    /// The leased links running here now.
    var running: [String: LinkSupervisor] { current.withLock { $0 } }

    private struct Running {
        var epoch: UInt64
        var supervisor: LinkSupervisor
        var task: Task<Void, Never>
        /// Set when `run()` returned (it stopped on an error).
        var ended: EndFlag
    }

    final class EndFlag: Sendable {
        private let flag = Atomic<Bool>(false)
        func set() { flag.store(true, ordering: .releasing) }
        var isSet: Bool { flag.load(ordering: .acquiring) }
    }

    /// Keeps the leases and runs what they give until cancelled; then stops every leased link
    /// and leaves.
    func keep() async {
        var runs: [String: Running] = [:]
        while !Task.isCancelled {
            let roundStarted = ContinuousClock.now
            let owned = await boundedRound()
            for (name, run) in runs where owned[name] != run.epoch || run.ended.isSet {
                await stop(run)
                runs[name] = nil
                if owned[name] == run.epoch {
                    logger.warning("leased link stopped on an error; starting it again", metadata: ["link": "\(name)", "owner_epoch": "\(run.epoch)"])
                } else {
                    logger.notice("leased link stopped here", metadata: ["link": "\(name)", "owner_epoch": "\(run.epoch)"])
                }
            }
            for (name, epoch) in owned.sorted(by: { $0.key < $1.key }) where runs[name] == nil {
                do {
                    runs[name] = try start(name, epoch: epoch)
                    logger.notice("leased link runs here", metadata: ["link": "\(name)", "owner_epoch": "\(epoch)"])
                } catch {
                    logger.error("leased link cannot start", metadata: ["link": "\(name)", "error": "\(error)"])
                }
            }
            current.withLock { $0 = runs.mapValues(\.supervisor) }
            do {
                // Rounds a renew interval apart, however long one took.
                try await Task.sleep(until: roundStarted + .milliseconds(ownership.renewIntervalMs))
            } catch {
                break
            }
        }
        for run in runs.values { await stop(run) }
        current.withLock { $0 = [:] }
        await ownership.leave()
        logger.info("leased links handed back", metadata: ["links": "\(runs.count)"])
    }

    /// A round, given at most a renew interval: one still waiting on NATS then (a server that
    /// stopped answering, a connection cut without a reset) is cancelled. When a round fails or is
    /// late, the links kept are those whose leases still run at the next round's time on this
    /// member's clock (``LinkOwnership/owned(at:)``), so a member cut off stops its links before
    /// their leases can run out, however long NATS takes to answer.
    private func boundedRound() async -> [String: UInt64] {
        let intervalMs = ownership.renewIntervalMs
        let ownership = self.ownership
        do {
            return try await withThrowingTaskGroup(of: [String: UInt64]?.self) { group in
                group.addTask { try await ownership.round() }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(intervalMs))
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let owned = first else { throw LeaseRoundLate(ms: intervalMs) }
                return owned
            }
        } catch {
            if !Task.isCancelled { logger.warning("link leases could not be renewed", metadata: ["error": "\(error)"]) }
            return await ownership.owned(at: .now + .milliseconds(intervalMs))
        }
    }

    struct LeaseRoundLate: Error, CustomStringConvertible {
        let ms: Int
        var description: String { "the round of the leases got no answer from NATS within the renew interval (\(ms) ms)" }
    }

    private func start(_ name: String, epoch: UInt64) throws -> Running {
        let supervisor = try factory.make(name, ownerEpoch: epoch)
        let ended = EndFlag()
        let logger = self.logger
        let task = Task {
            do {
                try await supervisor.run()
            } catch {
                logger.error("link stopped", metadata: ["link": "\(name)", "error": "\(error)"])
            }
            ended.set()
        }
        return Running(epoch: epoch, supervisor: supervisor, task: task, ended: ended)
    }

    private func stop(_ run: Running) async {
        run.task.cancel()
        await run.task.value
    }
}
