import NIOCore
import NIOPosix
import NIOSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The server's certificate, fetched after a certificate failed to verify, to tell the operator
/// which of the reasons BoringSSL folds into one it was (expired, not yet valid, unknown CA):
/// a TCP connection of its own, PostgreSQL's TLS request, and a handshake that takes the
/// certificates the server presents and then abandons itself. Nothing is sent but the TLS
/// request and the handshake: no user name, no password.
enum PostgresServerCertificate {
    /// When the server's (leaf) certificate is valid.
    struct Validity: Sendable, Hashable {
        var notValidBefore: Date
        var notValidAfter: Date
    }

    /// The validity of the certificate the server at `host`:`port` presents, or nil when it
    /// could not be had within `timeoutMs` (refused, no TLS, closed).
    static func fetchValidity(host: String, port: Int, timeoutMs: Int) async -> Validity? {
        let context: NIOSSLContext
        do {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = PostgresTLSContext.minimumVersion
            // Verification must be on for the callback below to be asked; it decides alone.
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates([])
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            return nil
        }
        // SNI carries a name, never an address (as postgres-nio does).
        let serverName = (try? SocketAddress(ipAddress: host, port: 0)) == nil ? host : nil
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let promise = eventLoop.makePromise(of: Validity?.self)
        let timeout = eventLoop.scheduleTask(in: .milliseconds(Int64(timeoutMs))) { promise.succeed(nil) }
        let connected = ClientBootstrap(group: eventLoop)
            .connectTimeout(.milliseconds(Int64(timeoutMs)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        TLSRequestHandler(sslContext: context, serverName: serverName, promise: promise))
                }
            }
            .connect(host: host, port: port)
        connected.whenFailure { _ in promise.succeed(nil) }
        let validity = try? await promise.futureResult.get()
        timeout.cancel()
        if let channel = try? await connected.get() { try? await channel.close() }
        return validity ?? nil
    }

    /// PostgreSQL's SSLRequest: length 8, code 80877103; the server answers one byte, `S` or `N`.
    private static let sslRequestCode: UInt32 = 80_877_103

    /// Sends the TLS request; on `S`, puts a TLS handler in front whose verification callback
    /// takes the server's certificate and fails the handshake (nothing more is wanted).
    private final class TLSRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let sslContext: NIOSSLContext
        let serverName: String?
        let promise: EventLoopPromise<Validity?>
        private var answered = false

        init(sslContext: NIOSSLContext, serverName: String?, promise: EventLoopPromise<Validity?>) {
            self.sslContext = sslContext
            self.serverName = serverName
            self.promise = promise
        }

        func channelActive(context: ChannelHandlerContext) {
            var request = context.channel.allocator.buffer(capacity: 8)
            request.writeInteger(UInt32(8))
            request.writeInteger(PostgresServerCertificate.sslRequestCode)
            context.writeAndFlush(wrapOutboundOut(request), promise: nil)
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !answered else { return }
            answered = true
            var buffer = unwrapInboundIn(data)
            guard buffer.readInteger(as: UInt8.self) == UInt8(ascii: "S") else {
                promise.succeed(nil)
                context.close(promise: nil)
                return
            }
            let promise = self.promise
            do {
                let tls = try NIOSSLClientHandler(
                    context: sslContext, serverHostname: serverName,
                    customVerificationCallback: { certificates, verification in
                        promise.succeed(certificates.first.map {
                            Validity(
                                notValidBefore: Date(timeIntervalSince1970: TimeInterval($0.notValidBefore)),
                                notValidAfter: Date(timeIntervalSince1970: TimeInterval($0.notValidAfter)))
                        })
                        verification.succeed(NIOSSLVerificationResult.failed)
                    })
                try context.pipeline.syncOperations.addHandler(tls, position: .first)
            } catch {
                promise.succeed(nil)
                context.close(promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.succeed(nil)  // after the certificate was taken, this changes nothing
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.succeed(nil)
            context.fireChannelInactive()
        }
    }
}
