import Logging
import OrgSyncCore
import Synchronization

/// The cluster's leased links and sources on this member: every renew interval a round of the
/// leases (``LinkOwnership``; a source's lease is keyed ``BrokerConfiguration/leaseKey(source:)``), then the links
/// held under a new epoch get a new supervisor (carrying that epoch in every batch, so the target
/// fences any older owner; a source's appends are fenced at the stream instead,
/// ``CaptureFenced``), and the links no longer held are
/// stopped — before the lease goes to anyone else when this member hands them over, and in any
/// case before its lease runs out on this member's clock (a round is given a renew interval). On shutdown it stops them all and
/// gives the leases back, so the other members take them at once (SIGTERM's hand-over).
///
/// A supervisor that stops on an error while its lease is still held (a cursor write that NATS
/// refused while its stream's leader moved) is made again at the next round, under the same epoch:
/// a leased link is never left held and stopped.
final class LeasedLinks: Sendable {
    let factory: LinkFactory
    let sources: SourceFactory
    /// The leased sources' lease keys, and each one's source.
    let sourceKeys: [String: String]
    let ownership: any LinkOwnership
    let logger: Logger
    private let current: LeasedRunning

    init(factory: LinkFactory, sources: SourceFactory, ownership: any LinkOwnership, running: LeasedRunning, logger: Logger) {
        self.factory = factory
        self.sources = sources
        let configuration = sources.configuration
        self.sourceKeys = Dictionary(uniqueKeysWithValues: configuration.leasedSources.map { (configuration.leaseKey(source: $0.name), $0.name) })
        self.ownership = ownership
        self.current = running
        self.logger = logger
    }

    /// A leased link's or source's supervisor (with the source's name).
    enum Supervisor: Sendable {
        case link(LinkSupervisor)
        case source(String, SourceSupervisor)

        func run() async throws {
            switch self {
            case .link(let link): try await link.run()
            case .source(_, let source): try await source.run()
            }
        }
    }

    private struct Running {
        var epoch: UInt64
        var supervisor: Supervisor
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
            let ending = runs.filter { name, run in owned[name] != run.epoch || run.ended.isSet }
            await Self.stop(Array(ending.values))
            for (name, run) in ending.sorted(by: { $0.key < $1.key }) {
                runs[name] = nil
                if owned[name] == run.epoch {
                    logger.warning("leased \(kind(name)) stopped on an error; starting it again", metadata: ["lease": "\(name)", "owner_epoch": "\(run.epoch)"])
                } else {
                    logger.notice("leased \(kind(name)) stopped here", metadata: ["lease": "\(name)", "owner_epoch": "\(run.epoch)"])
                }
            }
            for (name, epoch) in owned.sorted(by: { $0.key < $1.key }) where runs[name] == nil {
                do {
                    runs[name] = try start(name, epoch: epoch)
                    logger.notice("leased \(kind(name)) runs here", metadata: ["lease": "\(name)", "owner_epoch": "\(epoch)"])
                } catch {
                    logger.error("leased \(kind(name)) cannot start", metadata: ["lease": "\(name)", "error": "\(error)"])
                }
            }
            current.set(runs.mapValues(\.supervisor))
            do {
                // Rounds a renew interval apart, however long one took.
                try await Task.sleep(until: roundStarted + .milliseconds(ownership.renewIntervalMs))
            } catch {
                break
            }
        }
        await Self.stop(Array(runs.values))
        current.set([:])
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

    func kind(_ lease: String) -> String { sourceKeys[lease] == nil ? "link" : "source" }

    private func start(_ name: String, epoch: UInt64) throws -> Running {
        let supervisor: Supervisor
        if let source = sourceKeys[name] {
            supervisor = .source(source, try sources.make(source, ownerEpoch: epoch))
        } else {
            supervisor = .link(try factory.make(name, ownerEpoch: epoch))
        }
        let ended = EndFlag()
        let logger = self.logger
        let kind = kind(name)
        let task = Task {
            do {
                try await supervisor.run()
            } catch {
                logger.error("\(kind) stopped", metadata: ["lease": "\(name)", "error": "\(error)"])
            }
            ended.set()
        }
        return Running(epoch: epoch, supervisor: supervisor, task: task, ended: ended)
    }

    /// Stops supervisors all at once: each may be waiting for its target or for NATS (up to a
    /// request's timeout), and one after another they held up the round's take-overs by seconds
    /// (the harness's cluster scenario, with NATS slow to answer under load).
    private static func stop(_ runs: [Running]) async {
        for run in runs { run.task.cancel() }
        for run in runs { await run.task.value }
    }
}

/// The leased links' and sources' supervisors running on this member now (by link and by source
/// name), as ``LeasedLinks`` last set them: what the hosts look them up in.
final class LeasedRunning: Sendable {
    private let state = Mutex<[String: LeasedLinks.Supervisor]>([:])

    func set(_ running: [String: LeasedLinks.Supervisor]) { state.withLock { $0 = running } }

    var links: [String: LinkSupervisor] {
        state.withLock { running in
            running.compactMapValues { if case .link(let link) = $0 { link } else { nil } }
        }
    }

    var sources: [String: SourceSupervisor] {
        state.withLock { running in
            var sources: [String: SourceSupervisor] = [:]
            for supervisor in running.values {
                if case .source(let name, let source) = supervisor { sources[name] = source }
            }
            return sources
        }
    }
}
