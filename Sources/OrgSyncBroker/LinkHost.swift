import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import ServiceLifecycle

/// The broker's links: one ``LinkSupervisor`` per configured link, each with its adapter from
/// the plugin registry, its cursor in the stream's cursor files, and its sync log and dead
/// letters under `<data dir>/links/<link>/`.
public final class LinkHost: Sendable {
    let roster: SupervisorRoster<LinkSupervisor>
    let logger: Logger

    public var supervisors: [String: LinkSupervisor] { roster.supervisors }
    /// Link names in configuration order.
    public var names: [String] { roster.names }

    /// Creates every link (adapters are created, not yet connected: that is the supervisor's
    /// first `open`). Throws naming the link when its adapter is unknown or misconfigured.
    public init(configuration: BrokerConfiguration, dataDirectory: String, streams: [String: any StreamStore],
                registry: PluginRegistry, environment: [String: String], logger: Logger,
                observer: (any LinkObserver)? = nil) throws {
        var supervisors: [String: LinkSupervisor] = [:]
        var directories: [String: String] = [:]
        for (i, link) in configuration.links.enumerated() {
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
            let directory = dataDirectory + "/links/" + link.name
            // Durably (each new directory's parent synced): the sync log, dead letters and PAUSED
            // marker in it must not vanish with a directory entry a power cut never saw.
            try PosixStorage().createDirectory(directory)
            var linkLogger = logger
            linkLogger[metadataKey: "link"] = .string(link.name)
            supervisors[link.name] = try LinkSupervisor(
                name: link.name, source: log.linkSource(), adapter: adapter,
                cursorStore: log.linkCursorStore(), configuration: supervisorConfiguration,
                syncLog: try SyncLog.open(directory: directory, link: link.name, recordsMax: supervisorConfiguration.syncLogRecordsMax),
                deadLetters: try DeadLetters.open(directory: directory, link: link.name, lettersMax: supervisorConfiguration.deadLettersMax),
                logger: linkLogger,
                startPaused: OperatorPauseMarker(directory: directory).isSet,
                observer: observer)
            directories[link.name] = directory
        }
        self.roster = SupervisorRoster(
            supervisors: supervisors, names: configuration.links.map(\.name), directories: directories, missing: BrokerError.noSuchLink)
        self.logger = logger
    }

    /// The supervisor of the link named `name`.
    ///
    /// - Throws: ``BrokerError/noSuchLink(_:)``.
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

    public func statuses() async -> [LinkStatus] { await roster.statuses() }
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
