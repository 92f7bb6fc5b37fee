import ArgumentParser
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import OrgSyncBroker
import OrgSyncCluster
import OrgSyncCore
import OrgSyncServer
import ServiceLifecycle
import UnixSignals

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the broker: HTTP API, streams and links.",
        discussion: """
            With no --config it runs the default compiled into the binary (its documented copy \
            is data/orgsync.example.yaml in the repository): a stream `events` and a link `demo` \
            into data/state/demo.sqlite under the current directory, on 127.0.0.1:7070, auth off \
            (the file says so). It logs the data directory it uses. SIGTERM or SIGINT stop it gracefully: it stops accepting requests, \
            answers the appends in flight once they are durable, stores cursors, closes adapters \
            and exits 0. With server.tls, SIGHUP reloads the certificate and key files (new \
            connections get them; open ones keep theirs; a bad file keeps the old pair and logs why).
            """
    )

    @Option(help: "Configuration file (YAML). Default: the embedded default (a copy is data/orgsync.example.yaml).") var config: String?
    @Option(help: "Data directory; overrides data_dir of the configuration.") var dataDir: String?
    @Option(help: "Port; overrides server.port (0 picks a free port).") var port: Int?
    @Option(help: "Listen address; overrides server.host.") var host: String?

    func run() async throws {
        FreedMemory.limitArenas()
        var configuration: BrokerConfiguration
        do {
            if let config {
                configuration = try BrokerConfiguration.load(path: config)
            } else {
                configuration = try BrokerConfiguration.parse(
                    yaml: BrokerConfiguration.embeddedDefaultYAML, environment: ProcessInfo.processInfo.environment,
                    file: BrokerConfiguration.embeddedDefaultName)
            }
            if let port { configuration.server.port = port }
            if let host { configuration.server.host = host }
            // --host and --port pass the same checks as the file (a remote host with auth off).
            try configuration.validate(environment: ProcessInfo.processInfo.environment)
        } catch {
            printError("orgsync serve: \(error)")
            throw ExitCodes.usage
        }
        // The API's certificate, read before anything is opened: a bad file stops start-up here.
        var certificate: ServerCertificate?
        if var tls = configuration.server.tls {
            tls.certFile = absolutePath(tls.certFile)
            tls.keyFile = absolutePath(tls.keyFile)
            tls.clientCAFile = tls.clientCAFile.map(absolutePath)
            do {
                certificate = try ServerCertificate(tls)
            } catch {
                printError("orgsync serve: \(error)")
                throw ExitCodes.usage
            }
        }
        // Before any stream or link is opened: a busy port stops here with nothing touched.
        if let problem = checkListenAddress(host: configuration.server.host, port: configuration.server.port) {
            printError("orgsync serve: \(problem)")
            throw ExitCodes.usage
        }
        let level = Logger.Level(rawValue: configuration.log.level) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "orgsync")
        // Before any stream is opened: the log's files and the sockets share this budget.
        if let change = OpenFileLimit.raiseSoftLimitToHard() {
            if let code = change.errno {
                logger.warning("could not raise the open-file limit", metadata: [
                    "soft": "\(change.old)", "hard": "\(change.hard)", "errno": "\(code)",
                ])
            } else {
                logger.info("open-file limit", metadata: [
                    "soft": "\(change.old) -> \(change.new)", "hard": "\(change.hard)",
                ])
            }
        }
        let dataDirectory = absolutePath(dataDir ?? configuration.dataDir)
        logger.info("starting", metadata: [
            "configuration": "\(config ?? BrokerConfiguration.embeddedDefaultName)", "data_directory": "\(dataDirectory)",
        ])
        if let summary = certificate?.summary {
            logger.info("serving TLS; SIGHUP reloads the certificate", metadata: ["certificate": "\(summary)"])
            if summary.isExpired { logger.error("the TLS certificate has expired: clients will refuse it", metadata: ["certificate": "\(summary)"]) }
        }
        let registry = PluginRegistry(
            builtins: BuiltinAdapters.factories, sources: BuiltinAdapters.sources, pluginsDirectory: configuration.pluginsDir.map(absolutePath),
            processLimits: configuration.pluginProcessLimits, logger: logger)
        for problem in registry.problems { logger.warning("plugin not loaded: \(problem)") }
        // A cluster member's streams are the cluster's JetStream streams.
        var clusterStreams: ClusterStreams?
        var leases: LinkLeases?
        if let cluster = configuration.cluster {
            do {
                clusterStreams = try await ClusterStreams.open(
                    configuration: configuration, cluster: cluster, environment: ProcessInfo.processInfo.environment, logger: logger)
                let leased = configuration.leaseKeys
                if let jetStream = clusterStreams?.jetStream, !leased.isEmpty {
                    leases = try await LinkLeases.open(
                        jetStream: jetStream, node: cluster.node, links: leased, leaseMs: cluster.leaseMs, replicas: cluster.replicas)
                }
            } catch {
                await clusterStreams?.close()
                printError("orgsync serve: cannot open the cluster's streams on NATS (\(cluster.natsUrls.joined(separator: ", "))): \(error)")
                throw ExitCodes.cannotOpen
            }
            logger.info("cluster member", metadata: ["node": "\(cluster.node)", "replicas": "\(cluster.replicas)"])
        }
        let openStream: ((BrokerConfiguration.Stream) throws -> any StreamStore)? = clusterStreams.map { cluster in
            { stream in
                guard let store = cluster.stores[stream.name] else { throw BrokerError.noSuchStream(stream.name) }
                return store
            }
        }
        let application: BrokerApplication
        do {
            application = try buildApplication(
                configuration: configuration, dataDirectory: dataDirectory, registry: registry, certificate: certificate,
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger, openStream: openStream, ownership: leases,
                onListening: { url in
                    // One line a script can wait for (tests read it to learn the port).
                    printLine("orgsync: listening on \(url)")
                })
        } catch let error as ConfigurationError {
            await clusterStreams?.close()
            printError("orgsync serve: \(error)")
            throw ExitCodes.usage
        } catch {
            await clusterStreams?.close()
            printError("orgsync serve: cannot open the data directory \(dataDirectory): \(error)")
            throw ExitCodes.cannotOpen
        }
        do {
            try await application.run()
        } catch let error as IOError where error.errnoCode == EADDRINUSE || error.errnoCode == EADDRNOTAVAIL || error.errnoCode == EACCES {
            // The port was taken between the check above and the server's bind.
            await clusterStreams?.close()
            printError("orgsync serve: \(ListenAddressProblem(host: configuration.server.host, port: configuration.server.port, errno: error.errnoCode))")
            throw ExitCodes.usage
        }
        await clusterStreams?.close()
        logger.info("stopped")
    }
}

func absolutePath(_ path: String) -> String {
    path.hasPrefix("/") ? path : currentDirectory() + "/" + path
}
