import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import OrgSyncBroker
import OrgSyncCore
import ServiceLifecycle
import UnixSignals

/// The broker and its HTTP API as one service group (Hummingbird's `buildApplication` pattern):
/// `orgsync serve` runs it with the stop signals, tests run it in process and stop it with
/// ``triggerGracefulShutdown()``.
///
/// Services stop in reverse order: readiness turns 503, the HTTP server stops accepting and
/// finishes its requests, the links stop (cursors stored, adapters and plugin processes closed),
/// the notifier keeps what is queued, then the streams answer their queued appends and close.
public final class BrokerApplication: Sendable {
    public let broker: Broker
    /// `starting` until the server listens, `stopping` from the moment graceful shutdown begins.
    public let readiness: Readiness
    private let group: ServiceGroup

    init(broker: Broker, readiness: Readiness, group: ServiceGroup) {
        self.broker = broker
        self.readiness = readiness
        self.group = group
    }

    /// Runs until graceful shutdown (a signal of `gracefulShutdownSignals`, or
    /// ``triggerGracefulShutdown()``) has stopped every service.
    ///
    /// - Throws: the server's bind error (the address was taken after the configuration was
    ///   checked), or the first error a service stopped with.
    public func run() async throws {
        try await group.run()
    }

    public func triggerGracefulShutdown() async {
        await group.triggerGracefulShutdown()
    }
}

/// Opens the broker of `configuration` under `dataDirectory` (its streams, links and notifier)
/// and wires its HTTP API, readiness and background services into a ``BrokerApplication``.
/// Nothing runs until its `run()`; `onListening` is called with the server's URL (the port it
/// got, for port 0) once it listens and the broker is ready. `openStream` puts another store
/// in place of each stream's segment log (a cluster's JetStream streams).
///
/// - Throws: ``ConfigurationError`` (an unknown adapter or setting, a bad setting value, a TLS
///   configuration the server cannot use); the stream store's error naming the stream
///   (`LogError`: locked by another process, corrupt, I/O).
public func buildApplication(
    configuration: BrokerConfiguration, dataDirectory: String, registry: PluginRegistry,
    certificate: ServerCertificate? = nil, environment: [String: String] = ProcessInfo.processInfo.environment,
    gracefulShutdownSignals: [UnixSignal] = [], logger: Logger,
    openStream: ((BrokerConfiguration.Stream) throws -> any StreamStore)? = nil,
    ownership: (any LinkOwnership)? = nil,
    onListening: @escaping @Sendable (_ url: String) async -> Void = { _ in }
) throws -> BrokerApplication {
    let broker = try Broker(
        configuration: configuration, dataDirectory: dataDirectory, metrics: BrokerMetrics(), logger: logger,
        registry: registry, environment: environment, openStream: openStream, ownership: ownership)
    let readiness = Readiness()
    let router = buildRouter(
        broker: broker, authenticator: Authenticator(configuration: configuration, environment: environment),
        ready: { readiness.isReady })
    let server: HTTPServerBuilder
    do {
        server = try brokerHTTPServer(configuration.server, certificate: certificate, logger: logger)
    } catch {
        throw ConfigurationError(field: "server.tls", problem: "\(error)")
    }
    let scheme = certificate == nil ? "http" : "https"
    let host = configuration.server.host
    let configuredPort = configuration.server.port
    let app = Application(
        router: router,
        server: server,
        configuration: .init(address: .hostname(host, port: configuredPort), serverName: "orgsync"),
        onServerRunning: { channel in
            readiness.markReady()
            await onListening("\(scheme)://\(host):\(channel.localAddress?.port ?? configuredPort)")
        },
        logger: logger)
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
        .init(service: BrokerService(broker: broker)),
        .init(service: LinkService(broker: broker)),
        .init(service: SourceService(broker: broker)),
    ]
    if let notifier = broker.notifier { services.append(.init(service: NotificationService(notifier: notifier))) }
    services += [
        .init(service: app),
        // Last: the first to hear of graceful shutdown, while the server still answers.
        .init(service: ReadinessService(readiness: readiness)),
    ]
    if let certificate { services.append(.init(service: CertificateReloadService(certificate: certificate, logger: logger))) }
    let group = ServiceGroup(configuration: .init(
        services: services, gracefulShutdownSignals: gracefulShutdownSignals, logger: logger))
    return BrokerApplication(broker: broker, readiness: readiness, group: group)
}
