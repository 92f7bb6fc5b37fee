import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncNotifications
import ServiceLifecycle

/// The broker's streams (and, through ``LinkHost``, its links): what the HTTP API and the
/// service lifecycle act on. Opened from a ``BrokerConfiguration``.
public final class Broker: Sendable {
    public let configuration: BrokerConfiguration
    public let dataDirectory: String
    public let streams: [String: any StreamStore]
    public let links: LinkHost
    /// Databases captured into streams.
    public let sources: SourceHost
    public let metrics: BrokerMetrics
    /// Operators' webhooks; nil when the configuration has none.
    public let notifier: Notifier?
    /// Recent readings of every link and stream, for the status page's charts.
    public let samples: RecentSamples
    public let logger: Logger

    /// Checks every link's adapter settings, then opens every configured stream (by default its
    /// segment log under `dataDirectory`, recovering its tail: ``openSegmentLog(_:configuration:dataDirectory:logger:observer:)``;
    /// `openStream` puts another ``StreamStore`` in its place) and creates the links; in a cluster,
    /// `ownership` says which leased links run here.
    ///
    /// - Throws: ``ConfigurationError`` naming the field (an unknown adapter or setting, a bad
    ///   setting value); the store's error naming the stream (``LogError``: locked by another
    ///   process, corrupt, I/O).
    public init(
        configuration: BrokerConfiguration, dataDirectory: String, metrics: BrokerMetrics, logger: Logger,
        registry: PluginRegistry? = nil, environment: [String: String] = ProcessInfo.processInfo.environment,
        openStream: ((BrokerConfiguration.Stream) throws -> any StreamStore)? = nil,
        ownership: (any LinkOwnership)? = nil
    ) throws {
        self.configuration = configuration
        self.dataDirectory = dataDirectory
        self.metrics = metrics
        self.logger = logger
        let registry = registry ?? PluginRegistry(builtins: [], logger: logger)
        try configuration.validateAdapterSettings(registry: registry)
        let open = openStream ?? { stream in
            try Broker.openSegmentLog(stream, configuration: configuration, dataDirectory: dataDirectory, logger: logger, observer: metrics)
        }
        var streams: [String: any StreamStore] = [:]
        for stream in configuration.streams {
            streams[stream.name] = try open(stream)
        }
        self.streams = streams
        // In a cluster, the links and sources placed on this member; the streams are everyone's.
        let hosted = configuration.hostedHere
        let leasedRunning = LeasedRunning()
        let sources = try SourceHost(
            configuration: hosted, dataDirectory: dataDirectory, streams: streams,
            registry: registry, environment: environment, logger: logger, leasedRunning: { leasedRunning.sources })
        self.sources = sources
        let links = try LinkHost(
            configuration: hosted, dataDirectory: dataDirectory, streams: streams,
            registry: registry, environment: environment, logger: logger, observer: metrics, ownership: ownership,
            sources: sources.factory, leasedRunning: leasedRunning)
        self.links = links
        // After the links exist and before they run: a new target's queue starts at each sync log's end.
        let targets = try configuration.notificationSettings(environment: environment)
        if targets.isEmpty {
            notifier = nil
        } else {
            // Leased links too: each member notifies the events of the times a link ran on it.
            let links = hosted.links.compactMap { link in
                links.syncLogs[link.name].map { NotifiedLink(name: link.name, stream: link.stream, syncLog: $0) }
            }
            notifier = try Notifier(
                settings: targets, links: links, directory: dataDirectory + "/notifications",
                wallClockMs: { UInt64(clamping: wallClockMs()) }, logger: logger, observer: metrics)
        }
        self.samples = RecentSamples(links: hosted.links.map(\.name), streams: configuration.streams.map(\.name))
    }

    /// The stream named `name`.
    ///
    /// - Throws: ``BrokerError/noSuchStream(_:)``.
    public func stream(_ name: String) throws -> any StreamStore {
        guard let stream = streams[name] else { throw BrokerError.noSuchStream(name) }
        return stream
    }

    /// Appends validated entries to `stream`, recording latency metrics.
    public func append(stream: String, entries: [[UInt8]]) async throws -> AppendResult {
        try await append(stream: stream, entries: entries, idempotencyKey: nil).result
    }

    /// Appends, or with a key already in the stream's window, answers the original offsets and
    /// appends nothing (``AppendOutcome/replayed(_:)``).
    public func append(stream: String, entries: [[UInt8]], idempotencyKey: String?) async throws -> AppendOutcome {
        let log = try self.stream(stream)
        let start = ContinuousClock.now
        let outcome = try await log.append(entries, idempotencyKey: idempotencyKey)
        if case .appended = outcome {
            metrics.appended(stream: stream, entryCount: entries.count, duration: ContinuousClock.now - start)
        }
        return outcome
    }

    /// Closes every stream after its queued appends are acknowledged.
    public func close() async {
        for log in streams.values { await log.close() }
    }
}

/// Runs the broker's background work (retention) and closes the streams on graceful shutdown,
/// after the HTTP server has stopped (it is started before the server in the service group).
public struct BrokerService: Service {
    let broker: Broker
    let retentionIntervalMs: Int

    public init(broker: Broker, retentionIntervalMs: Int = 60_000) {
        self.broker = broker
        self.retentionIntervalMs = retentionIntervalMs
    }

    public func run() async throws {
        // Retention runs until graceful shutdown starts; then the streams close once the HTTP
        // server (which stops first) has answered its in-flight appends.
        try? await cancelWhenGracefulShutdown {
            while true {
                await applyRetention()
                try await Task.sleep(for: .milliseconds(retentionIntervalMs))
            }
        }
        await broker.close()
        broker.logger.info("streams closed")
    }

    func applyRetention() async {
        for (name, log) in broker.streams {
            do {
                let report = try await log.applyRetention()
                if !report.deletedSegments.isEmpty {
                    broker.logger.info("retention deleted segments", metadata: [
                        "stream": "\(name)", "segments": "\(report.deletedSegments.count)", "bytes": "\(report.deletedBytes)",
                    ])
                }
                if report.deletedMessages > 0 {
                    broker.logger.info("retention deleted messages", metadata: [
                        "stream": "\(name)", "messages": "\(report.deletedMessages)", "bytes": "\(report.deletedBytes)",
                        "start_offset": "\(report.newStartOffset)",
                    ])
                }
            } catch {
                broker.logger.error("retention failed", metadata: ["stream": "\(name)", "error": "\(error)"])
            }
        }
    }
}

/// Runs the broker's notifier (operators' webhooks) until graceful shutdown; what is still
/// queued then is in its queue files and goes out after the next start.
public struct NotificationService: Service {
    let notifier: Notifier

    public init(notifier: Notifier) { self.notifier = notifier }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await notifier.run() }
    }
}
