import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import ServiceLifecycle

/// The broker's links: one ``LinkSupervisor`` per configured link, each with its adapter from
/// the plugin registry, its cursor in the stream's cursor files, and its sync log and dead
/// letters under `<data dir>/links/<link>/`. In a cluster, the links pinned to this member run
/// all the time; the leased ones (``LeasedLinks``) only while this member holds their lease.
public final class LinkHost: Sendable {
    let roster: SupervisorRoster<LinkSupervisor>
    /// The links and sources the cluster places by lease; nil outside a cluster or without any.
    let leased: LeasedLinks?
    let logger: Logger

    /// The links running here now.
    public var supervisors: [String: LinkSupervisor] { roster.running }
    /// The cluster's leases, when this member runs leased links.
    public var ownership: (any LinkOwnership)? { leased?.ownership }
    /// Link names in configuration order (leased ones too, wherever they run now).
    public var names: [String] { roster.names }
    /// The sync log of every link hosted here, pinned or leased (a leased link's records are
    /// those of the times it ran on this member).
    public let syncLogs: [String: SyncLog]

    /// Creates every pinned link (adapters are created, not yet connected: that is the
    /// supervisor's first `open`); leased links are created each time their lease is taken, and
    /// so are the leased sources, by `sources` (run here beside the leased links).
    /// Throws naming the link when its adapter is unknown or misconfigured.
    init(configuration: BrokerConfiguration, dataDirectory: String, streams: [String: any StreamStore],
         registry: PluginRegistry, environment: [String: String], logger: Logger,
         observer: (any LinkObserver)? = nil, ownership: (any LinkOwnership)? = nil,
         sources: SourceFactory, leasedRunning: LeasedRunning) throws {
        let factory = try LinkFactory(
            configuration: configuration, dataDirectory: dataDirectory, streams: streams, registry: registry,
            environment: environment, logger: logger, observer: observer)
        let leasedNames = Set(configuration.leasedLinks.map(\.name))
        var supervisors: [String: LinkSupervisor] = [:]
        var directories: [String: String] = [:]
        for link in configuration.links {
            directories[link.name] = factory.directory(of: link.name)
            guard !leasedNames.contains(link.name) else { continue }
            supervisors[link.name] = try factory.make(link.name, ownerEpoch: 0)
        }
        let leased: LeasedLinks?
        if leasedNames.isEmpty && configuration.leasedSources.isEmpty {
            leased = nil
        } else {
            guard let ownership else {
                throw ConfigurationError(
                    field: "cluster", problem: "leased links and sources (without node:) need the cluster's leases, which were not opened")
            }
            leased = LeasedLinks(factory: factory, sources: sources, ownership: ownership, running: leasedRunning, logger: logger)
        }
        var roster = SupervisorRoster(
            supervisors: supervisors, names: configuration.links.map(\.name), directories: directories,
            missing: { name in leasedNames.contains(name) ? BrokerError.linkOnAnotherMember(name) : BrokerError.noSuchLink(name) })
        roster.transient = { leasedRunning.links }
        self.roster = roster
        self.leased = leased
        self.logger = logger
        self.syncLogs = factory.syncLogs
    }

    /// The supervisor of the link named `name`, if it runs here.
    ///
    /// - Throws: ``BrokerError/noSuchLink(_:)``; ``BrokerError/linkOnAnotherMember(_:)`` for a
    ///   leased link this member does not hold now.
    public func supervisor(_ name: String) throws -> LinkSupervisor { try roster.supervisor(name) }

    /// Pauses a link and remembers it across restarts (an operator's pause outlives the process).
    @discardableResult
    public func suspend(_ name: String) async throws -> LinkState { try await roster.suspend(name) }

    /// Resumes a link an operator paused (forgetting the pause), or one held down with `force`.
    ///
    /// - Throws: ``BrokerError/linkDiverged(_:)`` when the link stays diverged: its target's
    ///   position does not belong to the stream as it is now (reset or adopt it first).
    @discardableResult
    public func resume(_ name: String, force: Bool) async throws -> LinkState {
        let state = try await roster.resume(name, force: force)
        if state == .diverged { throw BrokerError.linkDiverged(name) }
        return state
    }

    /// The statuses of the links running here, in configuration order.
    public func statuses() async -> [LinkStatus] { await roster.statuses() }
}

/// Makes a link's supervisor from its configuration: its adapter from the registry, its cursor
/// store and source from its stream, its sync log, dead letters and pause marker in its
/// directory. Once per pinned link; once per lease taken for a leased one.
struct LinkFactory: Sendable {
    let configuration: BrokerConfiguration
    let dataDirectory: String
    let streams: [String: any StreamStore]
    let registry: PluginRegistry
    let environment: [String: String]
    let logger: Logger
    let observer: (any LinkObserver)?
    /// Each link's sync log, opened once: a leased link's supervisors, one per lease taken,
    /// write to the same one, which the notifier reads all along.
    let syncLogs: [String: SyncLog]

    init(configuration: BrokerConfiguration, dataDirectory: String, streams: [String: any StreamStore], registry: PluginRegistry,
         environment: [String: String], logger: Logger, observer: (any LinkObserver)?) throws {
        self.configuration = configuration
        self.dataDirectory = dataDirectory
        self.streams = streams
        self.registry = registry
        self.environment = environment
        self.logger = logger
        self.observer = observer
        self.syncLogs = try openSyncLogs(configuration.links.map { link in
            (link.name, Self.directory(of: link.name, in: dataDirectory), try configuration.supervisorConfiguration(for: link).syncLogRecordsMax)
        })
    }

    static func directory(of link: String, in dataDirectory: String) -> String { dataDirectory + "/links/" + link }
    func directory(of link: String) -> String { Self.directory(of: link, in: dataDirectory) }

    /// - Throws: ``ConfigurationError`` naming the field; the sync log's or dead letters' error.
    func make(_ name: String, ownerEpoch: UInt64) throws -> LinkSupervisor {
        guard let i = configuration.links.firstIndex(where: { $0.name == name }) else { throw BrokerError.noSuchLink(name) }
        let link = configuration.links[i]
        guard let log = streams[link.stream] else {
            throw ConfigurationError(field: "links[\(i)].stream", problem: "no stream named \(link.stream)")
        }
        let adapterConfiguration = AdapterConfiguration(
            linkName: link.name, streamName: link.stream,
            settings: configuration.resolvedSettings(link, environment: environment), dataDirectory: dataDirectory)
        let adapter: any OrgAdapter
        do {
            adapter = try registry.makeAdapter(named: link.adapter, configuration: adapterConfiguration)
        } catch let error as AdapterConfigurationError {
            throw ConfigurationError(field: "links[\(i)].settings.\(error.setting)", problem: "\(error.problem) [adapter \(link.adapter)]")
        } catch {
            throw ConfigurationError(field: "links[\(i)].adapter", problem: "\(error)")
        }
        let supervisorConfiguration = try configuration.supervisorConfiguration(for: link)
        let directory = directory(of: link.name)
        guard let syncLog = syncLogs[link.name] else { throw BrokerError.noSuchLink(name) }
        var linkLogger = logger
        linkLogger[metadataKey: "link"] = .string(link.name)
        if ownerEpoch > 0 { linkLogger[metadataKey: "owner_epoch"] = "\(ownerEpoch)" }
        return try LinkSupervisor(
            name: link.name, source: log.linkSource(), adapter: adapter,
            cursorStore: log.linkCursorStore(), configuration: supervisorConfiguration,
            syncLog: syncLog,
            deadLetters: try DeadLetters.open(directory: directory, link: link.name, lettersMax: supervisorConfiguration.deadLettersMax),
            logger: linkLogger,
            startPaused: OperatorPauseMarker(directory: directory).isSet,
            observer: observer, ownerEpoch: ownerEpoch)
    }
}

/// Runs every link's supervisor until graceful shutdown; then each stops consuming, stores
/// its cursor (it only ever moves after a commit) and closes its adapter and plugin process.
/// A link whose supervisor stops on an error stays stopped (its status says why); the others
/// go on.
public struct LinkService: Service {
    let broker: Broker
    let metricsIntervalMs: Int

    public init(broker: Broker, metricsIntervalMs: Int = 1_000) {
        self.broker = broker
        self.metricsIntervalMs = metricsIntervalMs
    }

    public func run() async throws {
        let host = broker.links
        await withTaskGroup(of: Void.self) { group in
            host.roster.addRuns(to: &group, logger: host.logger, kind: "link")
            if let leased = host.leased { group.addTask { await leased.keep() } }
            group.addTask { await exportMetrics() }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        host.logger.info("links stopped")
    }

    /// Per-link gauges and counters for /metrics and a reading of every link and stream for the
    /// status page's charts (``RecentSamples``), refreshed every `metricsIntervalMs`; and freed
    /// memory given back once the links have stood still for two intervals after working (a
    /// backlog caught up leaves its batches' pages with the allocator), and every ten intervals
    /// while they work (``IdleTrimDecision``).
    func exportMetrics() async {
        var trim = IdleTrimDecision(quietTicksBeforeTrim: 2, busyTicksBetweenTrims: 10)
        while !Task.isCancelled {
            let statuses = await broker.links.statuses()
            if trim.observe(appliedTotal: statuses.reduce(0) { $0 &+ $1.appliedCount }) { FreedMemory.giveBack() }
            broker.metrics.record(linkStatuses: statuses)
            var streamEnds: [String: UInt64] = [:]
            for (name, store) in broker.streams {
                // A stream that cannot answer now (a cluster's, NATS away) leaves a gap in its chart.
                if let info = try? await store.currentInfo() { streamEnds[name] = info.endOffset }
            }
            broker.samples.record(links: statuses, streamEnds: streamEnds, timeMs: UInt64(clamping: wallClockMs()))
            try? await Task.sleep(for: .milliseconds(metricsIntervalMs))
        }
    }
}
