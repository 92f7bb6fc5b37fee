import OrgSyncBroker
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOHTTPTypes
import Synchronization

/// The broker's HTTP/1.1 server: Hummingbird's `HTTP1Channel` with the connection limits of
/// `server.*` applied to every accepted connection (``BrokerHTTPChannel``), behind TLS when
/// `certificate` is given (`server.tls`; the TLS handler comes first, so the header deadline
/// covers the handshake too).
public func brokerHTTPServer(
    _ server: BrokerConfiguration.Server, certificate: ServerCertificate? = nil, logger: Logger
) throws -> HTTPServerBuilder {
    let limiter = ConnectionLimiter(connectionsMax: server.connectionsMax)
    let headerTimeout = Duration.milliseconds(server.headerTimeoutMs)
    let idleTimeout = Duration.milliseconds(server.idleTimeoutMs)
    let plain = HTTPServerBuilder { responder in
        // Hummingbird's own idle timeout stays off: ConnectionDeadlineHandler is the one policy.
        let http1 = HTTP1Channel(responder: responder, configuration: .init(
            additionalChannelHandlers: [ConnectionDeadlineHandler(headerTimeout: headerTimeout, idleTimeout: idleTimeout, logger: logger)]))
        return BrokerHTTPChannel(http1: http1, limiter: limiter, logger: logger)
    }
    guard let certificate else { return plain }
    return try .tls(plain, tlsConfiguration: certificate.serverConfiguration())
}

/// Child channel setup: refuses a connection past `connections_max` as soon as it is accepted
/// (closed before any byte of it is read), and adds ``RequestBytesObserver`` in front of the
/// HTTP decoder so the header deadline starts at a request's first byte.
struct BrokerHTTPChannel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let http1: HTTP1Channel
    let limiter: ConnectionLimiter
    let logger: Logger

    struct ConnectionRefused: Error {}

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard limiter.open() else {
            // Once per episode of being full: a flood of refused connections must not flood the log.
            if limiter.takeRefusalWarning() {
                self.logger.warning("refusing connections: server.connections_max reached",
                                    metadata: ["connections_max": "\(limiter.connectionsMax)"])
            }
            channel.close(promise: nil)
            // NIO drops a child whose setup failed; it was closed above.
            return channel.eventLoop.makeFailedFuture(ConnectionRefused())
        }
        let limiter = limiter
        channel.closeFuture.whenComplete { _ in limiter.closed() }
        do {
            try channel.pipeline.syncOperations.addHandler(RequestBytesObserver())
        } catch {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(error)
        }
        return http1.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}

/// Counts open client connections against `connections_max`.
final class ConnectionLimiter: Sendable {
    let connectionsMax: Int
    private struct State {
        var openCount = 0
        /// A refusal was logged since the count was last below the limit.
        var refusalWarned = false
    }
    private let state = Mutex(State())

    init(connectionsMax: Int) { self.connectionsMax = connectionsMax }

    /// Counts a new connection if there is room; false when it must be refused.
    func open() -> Bool {
        state.withLock { state in
            guard state.openCount < connectionsMax else { return false }
            state.openCount += 1
            return true
        }
    }

    func closed() {
        state.withLock { state in
            state.openCount = max(0, state.openCount - 1)
            state.refusalWarned = false
        }
    }

    /// True the first time it is asked while full (then not until a connection closes).
    func takeRefusalWarning() -> Bool {
        state.withLock { state in
            defer { state.refusalWarned = true }
            return !state.refusalWarned
        }
    }

    var openConnections: Int { state.withLock { $0.openCount } }
}

/// The event ``RequestBytesObserver`` sends down the pipeline when client bytes arrive.
struct RequestBytesArrived {}

/// First in the pipeline, before HTTP parsing: tells ``ConnectionDeadlineHandler`` that bytes
/// arrived (the HTTP decoder says nothing until a whole header block is in).
final class RequestBytesObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireUserInboundEventTriggered(RequestBytesArrived())
        context.fireChannelRead(data)
    }
}

/// Performs ``ConnectionDeadlines``' actions on a channel: arms one timer on the event loop and
/// closes the connection when a deadline passes.
final class ConnectionDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var deadlines: ConnectionDeadlines<ContinuousClock.Instant>
    private var timer: Scheduled<Void>?
    private var timerFiresAt: ContinuousClock.Instant?
    private let logger: Logger

    init(headerTimeout: Duration, idleTimeout: Duration, logger: Logger) {
        deadlines = ConnectionDeadlines(headerTimeout: headerTimeout, idleTimeout: idleTimeout, openedAt: .now)
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        perform(deadlines.initialAction, context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is RequestBytesArrived {
            perform(deadlines.bytesReceived(now: .now), context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: perform(deadlines.headReceived(now: .now), context: context)
        case .body: break
        case .end: perform(deadlines.requestEnded(now: .now), context: context)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let isEnd = if case .end = unwrapOutboundIn(data) { true } else { false }
        context.write(data, promise: promise)
        if isEnd { perform(deadlines.responseEnded(now: .now), context: context) }
    }

    private func perform(_ action: ConnectionDeadlines<ContinuousClock.Instant>.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .armTimer(let at):
            // One timer: keep it if it fires no later than needed (firing early re-arms it).
            if let timerFiresAt, timerFiresAt <= at, timer != nil { return }
            timer?.cancel()
            timerFiresAt = at
            let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
            timer = context.eventLoop.scheduleTask(in: TimeAmount(at - .now)) {
                let (handler, context) = loopBound.value
                handler.timer = nil
                handler.timerFiresAt = nil
                handler.perform(handler.deadlines.timerFired(now: .now), context: context)
            }
        case .close:
            logger.debug("closing a slow or idle connection", metadata: ["state": "\(deadlines.state)"])
            context.close(promise: nil)
        }
    }
}
