#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import NIOPosix
import NIOSSL
#if canImport(Glibc)
import Glibc
#endif

/// Where and how to connect.
public struct NATSConnectionOptions: Sendable {
    public var host: String
    public var port: Int
    /// Sent in CONNECT; the server shows it in its monitoring.
    public var name = "orgsync"
    public var user: String?
    /// Kept out of every error and description.
    public var password: String?
    /// Kept out of every error and description.
    public var token: String?
    /// TLS to every server: nil, plain TCP (a server that requires TLS is refused, saying so);
    /// set, the connection turns to TLS right after the server's INFO (nats-server's `tls {}`),
    /// the server's certificate is verified against the configuration's roots and its host (a
    /// DNS name, or an IP address in the certificate), and a server that offers no TLS is
    /// refused — never a silent fall back to plain text.
    public var tls: TLSConfiguration?
    /// Bound on TCP connect plus the handshake (INFO, CONNECT, PING → PONG).
    public var connectTimeoutMs = 5_000
    /// The largest message taken from the server, bytes. JetStream's answers are not held to the
    /// server's own `max_payload`, so this is larger.
    public var inboundMessageBytesMax = 16 << 20
    /// Messages a subscription holds for its reader; one more ends it with
    /// ``NATSError/slowConsumer(subject:)`` instead of growing without bound.
    public var subscriptionMessagesMax = 65_536
    /// What to do when an established connection is lost: nil, end every call with
    /// ``NATSError/closed(_:)``; a policy, connect again with backoff, subscribe again and send
    /// what was published meanwhile.
    public var reconnect: NATSReconnectPolicy?
    /// More servers of the same cluster (host, port): the first connect tries `host` then these
    /// in order; each reconnect attempt tries the next one round the list.
    public var alternates: [(host: String, port: Int)] = []

    public init(host: String = "127.0.0.1", port: Int = 4222) {
        self.host = host
        self.port = port
    }

    /// `host` and every alternate, in order.
    var servers: [(host: String, port: Int)] { [(host, port)] + alternates }
}

/// How a lost connection is made again: waits of `waitBaseMs` doubling up to `waitMaxMs`, each
/// plus up to `jitterMs`, for at most `attemptsMax` attempts (nil: until closed).
public struct NATSReconnectPolicy: Sendable, Hashable {
    public var waitBaseMs = 100
    public var waitMaxMs = 5_000
    public var jitterMs = 100
    public var attemptsMax: Int?
    /// Bytes of publishes held while disconnected; one more publish fails with
    /// ``NATSError/reconnectBufferFull(bytesMax:)``.
    public var pendingBytesMax = 8 << 20

    public init(waitBaseMs: Int = 100, waitMaxMs: Int = 5_000, jitterMs: Int = 100, attemptsMax: Int? = nil) {
        self.waitBaseMs = waitBaseMs
        self.waitMaxMs = waitMaxMs
        self.jitterMs = jitterMs
        self.attemptsMax = attemptsMax
    }

    /// The wait before attempt `attempt` (0-based), without jitter.
    public func waitMs(attempt: Int) -> Int {
        let shift = min(attempt, 30)
        return min(waitMaxMs, waitBaseMs.multipliedReportingOverflow(by: 1 << shift).overflow ? waitMaxMs : waitBaseMs << shift)
    }
}

/// Why a NATS call failed.
public enum NATSError: Error, Sendable, Hashable, CustomStringConvertible {
    /// TCP connect failed or timed out.
    case connectFailed(String)
    /// The server refused the handshake (its `-ERR`), or it did not finish in time.
    case handshakeFailed(String)
    /// The connection is closed (by us, by the server, or on a protocol error); why.
    case closed(String)
    case timedOut(String)
    /// A request's subject has no subscriber (the server's 503 status).
    case noResponders(subject: String)
    case invalidSubject(String)
    case invalidHeaders
    case payloadTooLarge(bytes: Int, maxBytes: Int)
    /// A subscription's reader fell more than `subscriptionMessagesMax` messages behind.
    case slowConsumer(subject: String)
    /// Disconnected and reconnecting: a flush cannot be answered now.
    case disconnected
    /// Disconnected, and the publishes held meanwhile reached the policy's bound.
    case reconnectBufferFull(bytesMax: Int)

    public var description: String {
        switch self {
        case .connectFailed(let why): "NATS: cannot connect: \(why)"
        case .handshakeFailed(let why): "NATS: the server refused the connection: \(why)"
        case .closed(let why): "NATS: connection closed: \(why)"
        case .timedOut(let what): "NATS: timed out waiting for \(what)"
        case .noResponders(let subject): "NATS: no responders on \(subject)"
        case .invalidSubject(let subject): "NATS: invalid subject \"\(subject.prefix(80))\""
        case .invalidHeaders: "NATS: a header name or value cannot be sent"
        case .payloadTooLarge(let bytes, let maxBytes): "NATS: a message of \(bytes) bytes is larger than the server's \(maxBytes)"
        case .slowConsumer(let subject): "NATS: the subscription to \(subject) fell too far behind"
        case .disconnected: "NATS: disconnected (reconnecting)"
        case .reconnectBufferFull(let bytesMax): "NATS: disconnected, and \(bytesMax) bytes of publishes are already waiting"
        }
    }
}

/// Messages on one subscription, in the order the server sent them; one reader at a time. A
/// reader that stops (and drops the sequence) ends the subscription at its next message.
public struct NATSSubscription: AsyncSequence, Sendable {
    public typealias Element = NATSMessage
    public let sid: UInt64
    public let subject: String
    let stream: AsyncThrowingStream<NATSMessage, any Error>

    public func makeAsyncIterator() -> AsyncThrowingStream<NATSMessage, any Error>.AsyncIterator { stream.makeAsyncIterator() }
}

/// One connection to a NATS server: publish, subscribe, request/reply, flush.
///
/// Every wait is bounded (a timeout per call); every message from the server is bounded
/// (``NATSConnectionOptions/inboundMessageBytesMax``) and every subscription's backlog too
/// (``NATSConnectionOptions/subscriptionMessagesMax``). Call ``close()`` when done: the reading
/// task holds the connection until then.
///
/// A lost connection is made again when ``NATSConnectionOptions/reconnect`` says so: meanwhile
/// publishes are held (bounded), flushes fail with ``NATSError/disconnected``, requests wait out
/// their timeout; then every subscription is made again (same sid) before the held publishes go.
/// Without a policy a lost connection ends every call with ``NATSError/closed(_:)``.
///
/// Not yet: server pools (the servers a server's INFO names beside the configured ones), NKEYs
/// and credentials files.
public actor NATSConnection {
    public nonisolated let options: NATSConnectionOptions
    /// The server's INFO (the latest, when it sent a new one).
    public private(set) var serverInfo: NATSServerInfo?
    /// The last `-ERR` the server sent.
    public private(set) var lastServerError: String?

    private enum State: Equatable {
        case connecting
        case connected
        case reconnecting
        case closed(String)
    }

    /// A caller waiting for the server, by id; each has a timer that fails it when it runs out.
    private enum Waiter {
        case info(CheckedContinuation<NATSServerInfo, any Error>)
        case pong(CheckedContinuation<Void, any Error>)
        case reply(subject: String, token: String, CheckedContinuation<NATSMessage, any Error>)

        func fail(_ error: any Error) {
            switch self {
            case .info(let c): c.resume(throwing: error)
            case .pong(let c): c.resume(throwing: error)
            case .reply(_, _, let c): c.resume(throwing: error)
            }
        }
    }

    private struct Subscription {
        var subject: String
        var continuation: AsyncThrowingStream<NATSMessage, any Error>.Continuation
    }

    private var state = State.connecting
    /// True from TCP connect until the handshake's PONG (a -ERR then fails the handshake).
    private var handshaking = false
    private var closeRequested = false
    private var group: (any EventLoopGroup)?
    /// Publishes made while reconnecting, sent once subscriptions are made again.
    private var held: [UInt8] = []
    /// The INFO of the channel being set up (the last connection's stays in `serverInfo`).
    private var receivedInfo: NATSServerInfo?
    private var reconnectTask: Task<Void, Never>?
    /// Which of ``NATSConnectionOptions/servers`` the connection is (or was last) on.
    private var serverIndex = 0
    /// Which connection the reading task serves: a lost old one must not touch a new one.
    private var generation: UInt64 = 0
    private var parser: NATSParser
    /// Made from ``NATSConnectionOptions/tls`` at the first handshake that needs it.
    private var tlsContext: NIOSSLContext?
    private var outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>?
    private var channel: (any Channel)?
    private var readTask: Task<Void, Never>?
    private var waiters: [UInt64: Waiter] = [:]
    private var timers: [UInt64: Task<Void, Never>] = [:]
    private var nextWaiterID: UInt64 = 0
    private var infoWaiterID: UInt64?
    /// Ids waiting for a PONG, in the order their PINGs went out (one that timed out stays in the
    /// queue, gone from `waiters`, so that later PONGs still match their PINGs).
    private var pongQueue: [UInt64] = []
    private var subscriptions: [UInt64: Subscription] = [:]
    private var nextSID: UInt64 = 1
    /// Replies to requests come on one subscription, `<prefix>*`; a request's token is the last token.
    private let inboxPrefix: String
    private var inboxSubject: String { inboxPrefix + "*" }
    private var inboxSID: UInt64?
    private var requestWaiters: [String: UInt64] = [:]
    private var nextRequestToken: UInt64 = 0

    private init(options: NATSConnectionOptions) {
        self.options = options
        parser = NATSParser(messageBytesMax: options.inboundMessageBytesMax)
        var generator = SystemRandomNumberGenerator()
        inboxPrefix = "_INBOX." + String(generator.next() as UInt64, radix: 36) + String(generator.next() as UInt64, radix: 36) + "."
    }

    /// Connects and finishes the handshake (INFO, CONNECT, PING → PONG) within `connectTimeoutMs`.
    public static func connect(
        _ options: NATSConnectionOptions, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> NATSConnection {
        let connection = NATSConnection(options: options)
        try await connection.start(group: group)
        return connection
    }

    private func start(group: any EventLoopGroup) async throws {
        self.group = group
        do {
            var failures: [String] = []
            for index in options.servers.indices {
                do {
                    serverIndex = index
                    try await establish(group: group)
                    break
                } catch {
                    failures.append("\(error)")
                    if let channel { try? await channel.close() }
                    channel = nil
                    if index == options.servers.count - 1 {
                        throw failures.count == 1 ? error : NATSError.connectFailed(failures.joined(separator: "; "))
                    }
                }
            }
            state = .connected
        } catch {
            await close()
            if let error = error as? NATSError, case .closed(let why) = error { throw NATSError.handshakeFailed(why) }
            throw error
        }
    }

    /// Opens a channel and runs the handshake on it (INFO, CONNECT+PING, PONG).
    private func establish(group: any EventLoopGroup) async throws {
        let asyncChannel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        let server = options.servers[serverIndex % options.servers.count]
        do {
            asyncChannel = try await ClientBootstrap(group: group)
                .connectTimeout(.milliseconds(Int64(options.connectTimeoutMs)))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: server.host, port: server.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw NATSError.connectFailed("\(server.host):\(server.port): \(error)")
        }
        generation += 1
        let generation = self.generation
        channel = asyncChannel.channel
        parser = NATSParser(messageBytesMax: options.inboundMessageBytesMax)
        receivedInfo = nil
        handshaking = true
        defer { handshaking = false }
        readTask = Task { await self.run(asyncChannel, generation: generation) }
        // The INFO may be in before this task looks (the reading task runs on its own).
        let info: NATSServerInfo
        if let early = receivedInfo {
            info = early
        } else {
            info = try await wait(for: "the server's INFO", timeoutMs: options.connectTimeoutMs) { id, continuation in
                infoWaiterID = id
                return .info(continuation)
            }
        }
        if let tls = options.tls {
            guard info.tlsRequired || info.tlsAvailable else {
                throw NATSError.handshakeFailed("\(server.host):\(server.port) offers no TLS, and this client takes only TLS")
            }
            try await startTLS(tls, host: server.host)
        } else if info.tlsRequired {
            throw NATSError.handshakeFailed("\(server.host):\(server.port) requires TLS, and this client is not set up for it")
        }
        serverInfo = info
        let connect = NATSWire.connect(try connectJSON(info))
        // A PING goes with CONNECT: its PONG says the server took it. The waiter is in place
        // before the bytes go, so a PONG that comes back at once finds it.
        do {
            let _: Void = try await wait(for: "the server to accept CONNECT", timeoutMs: options.connectTimeoutMs) { id, continuation in
                pongQueue.append(id)
                Task {
                    do {
                        try await self.write(connect)
                    } catch {
                        // A channel that is closing (a TLS handshake refused, the server gone) fails
                        // this wait with its own reason, which says more than the write's.
                        if self.channel?.isActive == true { self.fail(id, error) }
                    }
                }
                return .pong(continuation)
            }
        } catch NATSError.closed(let why) where options.tls != nil {
            throw NATSError.handshakeFailed("TLS with \(server.host):\(server.port): \(why)" + Self.tlsHint(why, host: server.host))
        }
    }

    /// What a TLS failure most likely means, for the two an operator meets first.
    static func tlsHint(_ why: String, host: String) -> String {
        if why.contains("failedToValidateHostname") { return " (the server's certificate does not name \(host))" }
        if why.contains("CERTIFICATE_VERIFY_FAILED") { return " (the server's certificate is not signed by a root this client trusts, or is out of date)" }
        if why.contains("BAD_CERTIFICATE") || why.contains("CERTIFICATE_REQUIRED") {
            return " (the server did not accept this client's certificate, or wants one)"
        }
        return ""
    }

    /// Puts TLS between the socket and the protocol: the server waits for the client's hello
    /// after its INFO, so nothing else is in flight. What is written next (CONNECT) waits for the
    /// handshake; a handshake that fails ends the channel, and the CONNECT's wait with it.
    private func startTLS(_ configuration: TLSConfiguration, host: String) async throws {
        let context: NIOSSLContext
        if let tlsContext {
            context = tlsContext
        } else {
            do {
                context = try NIOSSLContext(configuration: configuration)
            } catch {
                throw NATSError.handshakeFailed("TLS cannot be set up: \(error)")
            }
            tlsContext = context
        }
        // SNI and the name checked are the host's; an IP address is checked against the
        // certificate's IP addresses instead (and cannot be sent as SNI).
        let hostname: String? = Self.isIPAddress(host) ? nil : host
        guard let channel else { throw NATSError.closed("the channel closed before TLS started") }
        do {
            try await channel.eventLoop.submit {
                try channel.pipeline.syncOperations.addHandler(
                    try NIOSSLClientHandler(context: context, serverHostname: hostname), position: .first)
            }.get()
        } catch {
            throw NATSError.handshakeFailed("TLS cannot start: \(error)")
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return host.withCString { inet_pton(AF_INET, $0, &v4) == 1 || inet_pton(AF_INET6, $0, &v6) == 1 }
    }

    private struct ConnectOptions: Encodable {
        var verbose = false
        var pedantic = false
        var tls_required = false
        var name: String
        var lang = "swift"
        var version = "0.1.0"
        var `protocol` = 1
        var echo = true
        var headers: Bool
        var no_responders: Bool
        var user: String?
        var pass: String?
        var auth_token: String?
    }

    private func connectJSON(_ info: NATSServerInfo) throws -> [UInt8] {
        let connect = ConnectOptions(
            name: options.name, headers: info.headers, no_responders: info.headers, user: options.user, pass: options.password,
            auth_token: options.token)
        return Array(try JSONEncoder().encode(connect))
    }

    // MARK: - Reading

    private func run(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, generation: UInt64) async {
        var reason = "the server closed the connection"
        do {
            try await channel.executeThenClose { inbound, outbound in
                self.attach(outbound, generation: generation)
                for try await buffer in inbound {
                    guard generation == self.generation else { return }
                    try await self.receive(buffer)
                }
            }
        } catch {
            reason = "\(error)"
        }
        guard generation == self.generation else { return }
        connectionLost(lastServerError.map { "\(reason) (the server said: \($0))" } ?? reason)
    }

    /// The channel ended: reconnect when the policy says so (and the connection was up), else close.
    private func connectionLost(_ reason: String) {
        outbound = nil
        channel = nil
        if handshaking {
            // The handshake under way learns it at once; its caller decides what follows.
            if let id = infoWaiterID {
                infoWaiterID = nil
                fail(id, NATSError.closed(reason))
            }
            failPongWaiters(NATSError.closed(reason))
            return
        }
        if state == .reconnecting { return }  // the reconnect loop sees its write fail and goes on
        guard state == .connected, !closeRequested, let policy = options.reconnect, let group else {
            finish(reason)
            return
        }
        state = .reconnecting
        // Flushes cannot be answered by the old connection.
        failPongWaiters(NATSError.disconnected)
        reconnectTask = Task { await self.reconnect(policy: policy, group: group, reason: reason) }
    }

    private func reconnect(policy: NATSReconnectPolicy, group: any EventLoopGroup, reason: String) async {
        var attempt = 0
        var lastFailure = reason
        var generator = SystemRandomNumberGenerator()
        while state == .reconnecting, !closeRequested {
            if let attemptsMax = policy.attemptsMax, attempt >= attemptsMax {
                return finish("gave up reconnecting after \(attempt) attempts: \(lastFailure)")
            }
            let jitter = policy.jitterMs > 0 ? Int(generator.next() % UInt64(policy.jitterMs + 1)) : 0
            try? await Task.sleep(for: .milliseconds(policy.waitMs(attempt: attempt) + jitter))
            attempt += 1
            guard state == .reconnecting, !closeRequested, !Task.isCancelled else { return }
            if options.servers.count > 1 { serverIndex = (serverIndex + 1) % options.servers.count }
            do {
                try await establish(group: group)
                // Subscriptions again (same sids, so their readers go on), then the publishes that
                // waited, in order; what is added meanwhile goes in the next round. Connected
                // once a round finds nothing left, with no suspension in between.
                var subscribed = Set<UInt64>()
                while true {
                    var bytes: [UInt8] = []
                    for (sid, subscription) in subscriptions.sorted(by: { $0.key < $1.key }) where subscribed.insert(sid).inserted {
                        bytes += NATSWire.subscribe(subject: subscription.subject, sid: sid)
                    }
                    if let inboxSID, subscribed.insert(inboxSID).inserted {
                        bytes += NATSWire.subscribe(subject: inboxSubject, sid: inboxSID)
                    }
                    let waiting = held
                    bytes += waiting
                    held = []
                    if bytes.isEmpty { break }
                    do {
                        try await write(bytes)
                    } catch {
                        held = waiting + held  // not sent: they wait for the next connection
                        throw error
                    }
                }
                state = .connected
                return
            } catch {
                lastFailure = "\(error)"
                if let channel { try? await channel.close() }
                channel = nil
                outbound = nil
            }
        }
    }

    private func attach(_ writer: NIOAsyncChannelOutboundWriter<ByteBuffer>, generation: UInt64) {
        if generation == self.generation { outbound = writer }
    }

    private func receive(_ buffer: ByteBuffer) async throws {
        parser.append(buffer.readableBytesView)
        while let op = try parser.next() {
            switch op {
            case .info(let info):
                serverInfo = info  // the first, or a later one: the server's limits may have changed
                receivedInfo = info
                if let id = infoWaiterID {
                    infoWaiterID = nil
                    if case .info(let continuation) = take(id) { continuation.resume(returning: info) }
                }
            case .ping:
                try? await write(NATSWire.pong)  // on the current channel, also mid-handshake
            case .pong:
                guard !pongQueue.isEmpty else { continue }
                if case .pong(let continuation) = take(pongQueue.removeFirst()) { continuation.resume() }
            case .ok:
                continue
            case .error(let text):
                lastServerError = text
                if handshaking, !pongQueue.isEmpty {
                    take(pongQueue.removeFirst())?.fail(NATSError.handshakeFailed(text))
                }
            case .message(let message):
                deliver(message)
            }
        }
    }

    private func deliver(_ message: NATSMessage) {
        if message.sid == inboxSID {
            let token = String(message.subject.dropFirst(inboxPrefix.count))
            guard message.subject.hasPrefix(inboxPrefix), let id = requestWaiters.removeValue(forKey: token),
                  case .reply(let subject, _, let continuation) = take(id)
            else { return }
            if message.status == 503 {
                continuation.resume(throwing: NATSError.noResponders(subject: subject))
            } else {
                continuation.resume(returning: message)
            }
            return
        }
        // A sid we no longer hold: a message that crossed our UNSUB. Dropped.
        guard let subscription = subscriptions[message.sid] else { return }
        switch subscription.continuation.yield(message) {
        case .enqueued:
            return
        case .dropped:
            subscription.continuation.finish(throwing: NATSError.slowConsumer(subject: subscription.subject))
        case .terminated:
            break  // its reader is gone
        @unknown default:
            break
        }
        subscriptions[message.sid] = nil
        let sid = message.sid
        Task { try? await self.send(NATSWire.unsubscribe(sid: sid)) }
    }

    /// The connection ended: every waiter and subscription learns why.
    private func finish(_ reason: String) {
        if case .closed = state { return }
        state = .closed(reason)
        outbound = nil
        held = []
        reconnectTask?.cancel()
        let error = NATSError.closed(reason)
        for id in Array(waiters.keys) { take(id)?.fail(error) }
        infoWaiterID = nil
        pongQueue = []
        requestWaiters = [:]
        for subscription in subscriptions.values { subscription.continuation.finish(throwing: error) }
        subscriptions = [:]
    }

    // MARK: - Writing

    /// Writes to the current channel. A channel that is gone is ``NATSError/disconnected``
    /// when a reconnect will follow, else ``NATSError/closed(_:)``.
    private func write(_ bytes: [UInt8]) async throws {
        if case .closed(let why) = state { throw NATSError.closed(why) }
        guard let outbound else { throw NATSError.disconnected }
        do {
            try await outbound.write(ByteBuffer(bytes: bytes))
        } catch {
            if options.reconnect != nil, !closeRequested { throw NATSError.disconnected }
            throw NATSError.closed("\(error)")
        }
    }

    /// Writes a control operation (SUB, UNSUB, PONG). While disconnected (and reconnecting) there
    /// is nothing to write to: subscriptions are made again from the table once connected.
    private func send(_ bytes: [UInt8]) async throws {
        if state == .reconnecting { return }
        do {
            try await write(bytes)
        } catch NATSError.disconnected where options.reconnect != nil {
            return
        }
    }

    /// Writes a publish; while disconnected (and reconnecting), holds it, bounded, for the new
    /// connection, in order.
    private func sendPublish(_ bytes: [UInt8]) async throws {
        if state == .reconnecting { return try hold(bytes) }
        do {
            try await write(bytes)
        } catch NATSError.disconnected where options.reconnect != nil {
            try hold(bytes)  // the channel went before its loss is handled: the reconnect sends it
        }
    }

    private func hold(_ bytes: [UInt8]) throws {
        let bytesMax = options.reconnect?.pendingBytesMax ?? 0
        guard held.count + bytes.count <= bytesMax else { throw NATSError.reconnectBufferFull(bytesMax: bytesMax) }
        held += bytes
    }

    /// Publishes a message (with `headers`, an `HPUB`). Returns once the bytes are handed to the
    /// socket; ``flush(timeoutMs:)`` waits until the server has them.
    public func publish(_ subject: String, payload: [UInt8] = [], headers: NATSHeaders? = nil, replyTo: String? = nil) async throws {
        guard NATSWire.isValidPublishSubject(subject) else { throw NATSError.invalidSubject(subject) }
        if let replyTo, !NATSWire.isValidPublishSubject(replyTo) { throw NATSError.invalidSubject(replyTo) }
        var block: [UInt8]?
        if let headers {
            guard let encoded = headers.encoded() else { throw NATSError.invalidHeaders }
            guard serverInfo?.headers == true else { throw NATSError.invalidHeaders }
            block = encoded
        }
        let size = payload.count + (block?.count ?? 0)
        let maxBytes = serverInfo?.maxPayloadBytes ?? 0
        guard size <= maxBytes else { throw NATSError.payloadTooLarge(bytes: size, maxBytes: maxBytes) }
        try await sendPublish(NATSWire.publish(subject: subject, replyTo: replyTo, headerBlock: block, payload: payload))
    }

    /// Subscribes to `subject` (wildcards allowed).
    public func subscribe(_ subject: String) async throws -> NATSSubscription {
        guard NATSWire.isValidSubscribeSubject(subject) else { throw NATSError.invalidSubject(subject) }
        let sid = nextSID
        nextSID += 1
        let (stream, continuation) = AsyncThrowingStream<NATSMessage, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(options.subscriptionMessagesMax))
        subscriptions[sid] = Subscription(subject: subject, continuation: continuation)
        do {
            try await send(NATSWire.subscribe(subject: subject, sid: sid))
        } catch {
            subscriptions[sid] = nil
            continuation.finish(throwing: error)
            throw error
        }
        return NATSSubscription(sid: sid, subject: subject, stream: stream)
    }

    /// Ends a subscription: its sequence finishes; messages already on their way are dropped.
    public func unsubscribe(_ subscription: NATSSubscription) async {
        guard let removed = subscriptions.removeValue(forKey: subscription.sid) else { return }
        removed.continuation.finish()
        try? await send(NATSWire.unsubscribe(sid: subscription.sid))
    }

    /// Sends a request and waits for the first reply. A subject nobody listens on fails at once
    /// with ``NATSError/noResponders(subject:)``.
    public func request(_ subject: String, payload: [UInt8] = [], headers: NATSHeaders? = nil, timeoutMs: Int) async throws -> NATSMessage {
        guard NATSWire.isValidPublishSubject(subject) else { throw NATSError.invalidSubject(subject) }
        if inboxSID == nil {
            let sid = nextSID
            nextSID += 1
            inboxSID = sid
            try await send(NATSWire.subscribe(subject: inboxSubject, sid: sid))
        }
        nextRequestToken += 1
        let token = String(nextRequestToken)
        let replyTo = inboxPrefix + token
        return try await withTaskCancellationHandler {
            try await wait(for: "a reply on \(subject)", timeoutMs: timeoutMs) { id, continuation in
                requestWaiters[token] = id
                Task {
                    do {
                        try await self.publish(subject, payload: payload, headers: headers, replyTo: replyTo)
                    } catch {
                        self.fail(id, error)
                    }
                }
                return .reply(subject: subject, token: token, continuation)
            }
        } onCancel: {
            Task { await self.cancelRequest(token) }
        }
    }

    /// Waits until the server has taken everything sent before (PING → PONG).
    public func flush(timeoutMs: Int) async throws {
        if state == .reconnecting { throw NATSError.disconnected }
        let _: Void = try await wait(for: "the server's PONG", timeoutMs: timeoutMs) { id, continuation in
            pongQueue.append(id)
            Task {
                do { try await self.write(NATSWire.ping) } catch { self.fail(id, error) }
            }
            return .pong(continuation)
        }
    }

    /// Closes the connection; calls in flight end with ``NATSError/closed(_:)``.
    public func close() async {
        closeRequested = true
        reconnectTask?.cancel()
        if let channel { try? await channel.close() }
        await readTask?.value
        finish("closed by the client")
    }

    /// Whether the connection is up (false once closed, by either side).
    public var isConnected: Bool { state == .connected }

    // MARK: - Waiting with a bound

    /// Registers a waiter (synchronously, on the actor: a reply that comes before the caller
    /// suspends still finds it) and waits for it, at most `timeoutMs`.
    private func wait<Value: Sendable>(
        for what: String, timeoutMs: Int, _ register: (UInt64, CheckedContinuation<Value, any Error>) -> Waiter
    ) async throws -> Value {
        if case .closed(let why) = state { throw NATSError.closed(why) }
        return try await withCheckedThrowingContinuation { continuation in
            nextWaiterID += 1
            let id = nextWaiterID
            waiters[id] = register(id, continuation)
            timers[id] = Task {
                try? await Task.sleep(for: .milliseconds(timeoutMs))
                guard !Task.isCancelled else { return }
                self.fail(id, NATSError.timedOut(what))
            }
        }
    }

    /// Removes a waiter and its timer; nil when it is already gone (answered, timed out).
    private func take(_ id: UInt64) -> Waiter? {
        timers.removeValue(forKey: id)?.cancel()
        guard let waiter = waiters.removeValue(forKey: id) else { return nil }
        if case .reply(_, let token, _) = waiter { requestWaiters[token] = nil }
        return waiter
    }

    private func fail(_ id: UInt64, _ error: any Error) { take(id)?.fail(error) }

    /// Fails everyone waiting for a PONG: the channel their PINGs went on is gone.
    private func failPongWaiters(_ error: NATSError) {
        let queued = pongQueue
        pongQueue = []
        for id in queued { fail(id, error) }
    }

    private func cancelRequest(_ token: String) {
        if let id = requestWaiters[token] { fail(id, CancellationError()) }
    }
}
