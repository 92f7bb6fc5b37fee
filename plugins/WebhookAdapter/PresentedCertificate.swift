import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// The validity period of the certificate a receiver presents, read by a handshake that stops
/// as soon as the certificate arrives (nothing is sent after it). BoringSSL reports an expired
/// certificate and one from an unknown CA alike (`CERTIFICATE_VERIFY_FAILED`); this tells them
/// apart for the error message.
struct PresentedCertificate: Sendable, Hashable {
    /// Seconds since 1970 (UTC).
    var notValidBeforeSeconds: Int
    var notValidAfterSeconds: Int

    /// Connects to `host`:`port` once and reads the receiver's leaf certificate; nil when that
    /// fails or takes longer than `timeout`.
    static func read(host: String, port: Int, timeout: TimeAmount, on group: any EventLoopGroup) async -> PresentedCertificate? {
        var configuration = TLSConfiguration.makeClientConfiguration()
        // The callback below decides (it always refuses); no trust store needs reading.
        configuration.trustRoots = .certificates([])
        guard let context = try? NIOSSLContext(configuration: configuration) else { return nil }
        let serverHostname = isIPAddress(host) ? nil : host
        let seen = Seen()
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture(withResultOf: {
                        let keepLeaf: NIOSSLCustomVerificationCallback = { chain, verdict in
                            if let leaf = chain.first {
                                let presented = PresentedCertificate(
                                    notValidBeforeSeconds: Int(leaf.notValidBefore), notValidAfterSeconds: Int(leaf.notValidAfter))
                                seen.value.withLock { $0 = presented }
                            }
                            verdict.succeed(.failed)  // the handshake ends here and the channel closes
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: context, serverHostname: serverHostname, customVerificationCallback: keepLeaf))
                    })
                }
                .connect(host: host, port: port).get()
        } catch {
            return nil
        }
        let bound = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        try? await channel.closeFuture.get()
        bound.cancel()
        return seen.value.withLock { $0 }
    }

    /// What the verification callback saw, read after the channel closed.
    private final class Seen: Sendable {
        let value = Mutex<PresentedCertificate?>(nil)
    }

    /// An IPv4 or IPv6 literal (which is never sent as a TLS server name).
    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}
