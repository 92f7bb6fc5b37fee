import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import ServiceLifecycle

/// The broker's capture sources: one ``SourceSupervisor`` per configured source, each with its
/// ``ChangeSource`` from the registry's source factories, appending to its stream, with its sync
/// log (and an operator's PAUSED marker) under `<data dir>/sources/<source>/`. In a cluster, the
/// sources pinned to this member run all the time; the leased ones only while this member holds
/// their lease (``LeasedLinks`` runs them beside the leased links).
public final class SourceHost: Sendable {
    let roster: SupervisorRoster<SourceSupervisor>
    let factory: SourceFactory
    let logger: Logger

    /// The sources running here now.
    public var supervisors: [String: SourceSupervisor] { roster.running }
    /// Source names in configuration order (leased ones too, wherever they run now).
    public var names: [String] { roster.names }

    /// Creates every pinned source (nothing connects before the supervisor runs) and checks the
    /// leased ones' settings (they are created each time their lease is taken). Throws naming
    /// the source when its kind is unknown or its settings are bad.
    ///
    /// - Parameter leasedRunning: the leased sources running here now.
    public init(configuration: BrokerConfiguration, dataDirectory: String, streams: [String: any StreamStore],
                registry: PluginRegistry, environment: [String: String], logger: Logger,
                leasedRunning: @escaping @Sendable () -> [String: SourceSupervisor] = { [:] }) throws {
        let factory = try SourceFactory(
            configuration: configuration, dataDirectory: dataDirectory, streams: streams, registry: registry,
            environment: environment, logger: logger)
        let leasedNames = Set(configuration.leasedSources.map(\.name))
        var supervisors: [String: SourceSupervisor] = [:]
        var directories: [String: String] = [:]
        for source in configuration.sources {
            directories[source.name] = factory.directory(of: source.name)
            let supervisor = try factory.make(source.name)
            if !leasedNames.contains(source.name) { supervisors[source.name] = supervisor }
        }
        var roster = SupervisorRoster(
            supervisors: supervisors, names: configuration.sources.map(\.name), directories: directories,
            missing: { name in leasedNames.contains(name) ? BrokerError.sourceOnAnotherMember(name) : BrokerError.noSuchSource(name) })
        roster.transient = leasedRunning
        self.roster = roster
        self.factory = factory
        self.logger = logger
    }

    /// The supervisor of the source named `name`, if it runs here.
    ///
    /// - Throws: ``BrokerError/noSuchSource(_:)``; ``BrokerError/sourceOnAnotherMember(_:)`` for
    ///   a leased source this member does not hold now.
    public func supervisor(_ name: String) throws -> SourceSupervisor { try roster.supervisor(name) }

    /// Pauses a source and remembers it across restarts.
    @discardableResult
    public func suspend(_ name: String) async throws -> LinkState { try await roster.suspend(name) }

    /// Resumes a paused source (forgetting the pause) through verification, or at once with `force`.
    @discardableResult
    public func resume(_ name: String, force: Bool) async throws -> LinkState { try await roster.resume(name, force: force) }

    /// The statuses of the sources running here, in configuration order.
    public func statuses() async -> [SourceStatus] { await roster.statuses() }
}

/// Makes a source's supervisor from its configuration: its ``ChangeSource`` from the registry,
/// its capture stream, its sync log and pause marker in its directory. Once per pinned source;
/// once per lease taken for a leased one.
struct SourceFactory: Sendable {
    let configuration: BrokerConfiguration
    let dataDirectory: String
    let streams: [String: any StreamStore]
    let registry: PluginRegistry
    let environment: [String: String]
    let logger: Logger
    /// Each source's sync log, opened once: a leased source's supervisors, one per lease taken,
    /// write to the same one.
    let syncLogs: [String: SyncLog]

    init(configuration: BrokerConfiguration, dataDirectory: String, streams: [String: any StreamStore], registry: PluginRegistry,
         environment: [String: String], logger: Logger) throws {
        self.configuration = configuration
        self.dataDirectory = dataDirectory
        self.streams = streams
        self.registry = registry
        self.environment = environment
        self.logger = logger
        self.syncLogs = try openSyncLogs(configuration.sources.map { source in
            (source.name, Self.directory(of: source.name, in: dataDirectory),
             try configuration.supervisorConfiguration(source.supervisor, stopOnReject: nil).syncLogRecordsMax)
        })
    }

    static func directory(of source: String, in dataDirectory: String) -> String { dataDirectory + "/sources/" + source }
    func directory(of source: String) -> String { Self.directory(of: source, in: dataDirectory) }

    /// - Throws: ``ConfigurationError`` naming the field (an unknown kind, bad settings).
    func make(_ name: String, ownerEpoch: UInt64 = 0) throws -> SourceSupervisor {
        guard let i = configuration.sources.firstIndex(where: { $0.name == name }), let syncLog = syncLogs[name] else {
            throw BrokerError.noSuchSource(name)
        }
        let source = configuration.sources[i]
        guard let stream = streams[source.stream] else {
            throw ConfigurationError(field: "sources[\(i)].stream", problem: "no stream named \(source.stream)")
        }
        guard let factory = registry.sourceFactory(kind: source.kind) else {
            throw ConfigurationError(field: "sources[\(i)].kind", problem: "unknown source kind \(source.kind)")
        }
        let changeSource: any ChangeSource
        do {
            changeSource = try factory.makeSource(AdapterConfiguration(
                linkName: source.name, streamName: source.stream,
                settings: configuration.resolvedSettings(source.settings, environment: environment), dataDirectory: dataDirectory))
        } catch let error as AdapterConfigurationError {
            throw ConfigurationError(field: "sources[\(i)].settings.\(error.setting)", problem: "\(error.problem) [source kind \(source.kind)]")
        } catch {
            throw ConfigurationError(field: "sources[\(i)]", problem: "\(error)")
        }
        let supervisorConfiguration = try configuration.supervisorConfiguration(source.supervisor, stopOnReject: nil)
        var sourceLogger = logger
        sourceLogger[metadataKey: "source"] = .string(source.name)
        if ownerEpoch > 0 { sourceLogger[metadataKey: "owner_epoch"] = "\(ownerEpoch)" }
        return try SourceSupervisor(
            name: source.name, source: changeSource, stream: stream.captureStream(source: source.name),
            configuration: supervisorConfiguration, syncLog: syncLog, logger: sourceLogger,
            startPaused: OperatorPauseMarker(directory: directory(of: source.name)).isSet)
    }
}

/// Runs every pinned source's supervisor until graceful shutdown (it starts after the streams
/// and stops before they close): what a source appended is durable, and its slot keeps what it
/// had not. A source whose supervisor stops on an error stays stopped (its status says why).
/// Leased sources run with the leased links (``LinkService``).
public struct SourceService: Service {
    let broker: Broker
    let metricsIntervalMs: Int

    public init(broker: Broker, metricsIntervalMs: Int = 1_000) {
        self.broker = broker
        self.metricsIntervalMs = metricsIntervalMs
    }

    public func run() async throws {
        let host = broker.sources
        await withTaskGroup(of: Void.self) { group in
            host.roster.addRuns(to: &group, logger: host.logger, kind: "source")
            if !host.names.isEmpty {
                group.addTask {
                    while !Task.isCancelled {
                        broker.metrics.record(sourceStatuses: await host.statuses())
                        try? await Task.sleep(for: .milliseconds(metricsIntervalMs))
                    }
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        if !host.names.isEmpty { host.logger.info("sources stopped") }
    }
}
