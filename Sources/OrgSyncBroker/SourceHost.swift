import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import ServiceLifecycle

/// The broker's capture sources: one ``SourceSupervisor`` per configured source, each with its
/// ``ChangeSource`` from the registry's source factories, appending to its stream, with its sync
/// log (and an operator's PAUSED marker) under `<data dir>/sources/<source>/`.
public final class SourceHost: Sendable {
    let roster: SupervisorRoster<SourceSupervisor>
    let logger: Logger

    public var supervisors: [String: SourceSupervisor] { roster.supervisors }
    /// Source names in configuration order.
    public var names: [String] { roster.names }

    /// Creates every source (nothing connects before the supervisor runs). Throws naming the
    /// source when its kind is unknown or its settings are bad.
    public init(configuration: BrokerConfiguration, dataDirectory: String, streams: [String: any StreamStore],
                registry: PluginRegistry, environment: [String: String], logger: Logger) throws {
        var supervisors: [String: SourceSupervisor] = [:]
        var directories: [String: String] = [:]
        for (i, source) in configuration.sources.enumerated() {
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
            let directory = dataDirectory + "/sources/" + source.name
            try PosixStorage().createDirectory(directory)
            var sourceLogger = logger
            sourceLogger[metadataKey: "source"] = .string(source.name)
            supervisors[source.name] = try SourceSupervisor(
                name: source.name, source: changeSource, stream: stream.captureStream(), configuration: supervisorConfiguration,
                syncLog: try SyncLog.open(directory: directory, link: source.name, recordsMax: supervisorConfiguration.syncLogRecordsMax),
                logger: sourceLogger, startPaused: OperatorPauseMarker(directory: directory).isSet)
            directories[source.name] = directory
        }
        self.roster = SupervisorRoster(
            supervisors: supervisors, names: configuration.sources.map(\.name), directories: directories, missing: BrokerError.noSuchSource)
        self.logger = logger
    }

    /// The supervisor of the source named `name`.
    ///
    /// - Throws: ``BrokerError/noSuchSource(_:)``.
    public func supervisor(_ name: String) throws -> SourceSupervisor { try roster.supervisor(name) }

    /// Pauses a source and remembers it across restarts.
    @discardableResult
    public func suspend(_ name: String) async throws -> LinkState { try await roster.suspend(name) }

    /// Resumes a paused source (forgetting the pause) through verification, or at once with `force`.
    @discardableResult
    public func resume(_ name: String, force: Bool) async throws -> LinkState { try await roster.resume(name, force: force) }

    public func statuses() async -> [SourceStatus] { await roster.statuses() }
}

/// Runs every source's supervisor until graceful shutdown (it starts after the streams and stops
/// before they close): what a source appended is durable, and its slot keeps what it had not.
/// A source whose supervisor stops on an error stays stopped (its status says why).
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
