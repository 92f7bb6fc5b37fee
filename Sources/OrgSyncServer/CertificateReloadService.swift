import Logging
import ServiceLifecycle
import UnixSignals

/// Reloads the API's certificate and key (`server.tls`) on every SIGHUP: new connections get
/// the new pair, open ones keep theirs, a failed reload keeps the previous pair and says why.
/// Runs only when the API serves TLS; it ends when the broker shuts down.
public struct CertificateReloadService: Service {
    let certificate: ServerCertificate
    let logger: Logger

    public init(certificate: ServerCertificate, logger: Logger) {
        self.certificate = certificate
        self.logger = logger
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            do {
                let summary = try certificate.reload()
                logger.notice("TLS certificate reloaded", metadata: ["certificate": "\(summary)"])
                if summary.isExpired {
                    logger.error("the reloaded TLS certificate has expired: clients will refuse it", metadata: ["certificate": "\(summary)"])
                }
            } catch {
                logger.error("TLS certificate not reloaded; new connections keep the previous one", metadata: ["problem": "\(error)"])
            }
        }
    }
}
