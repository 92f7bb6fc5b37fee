#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import NIOPosix

/// Where and how to connect.
public struct NATSConnectionOptions: Sendable {
    public var host: String
    public var port: Int
    /// Sent in CONNECT; the server shows it in its monitoring.
    public var name = "orgsync"
    public var user: String?
    /// Kept out of every error and description.
    public var password: String?
    public var token: String?
    /// Bound on TCP connect plus the handshake (INFO, CONNECT, PING → PONG).
    public var connectTimeoutMs = 5_000
    /// The largest message taken from the server, bytes. JetStream's answers are not held to the
    /// server's own `max_payload`, so this is larger.
    public var inboundMessageBytesMax = 16 << 20
    /// Messages a subscription holds for its reader; one more ends it with
    /// ``NATSError/slowConsumer(subject:)`` instead of growing without bound.
    public var subscriptionMessagesMax = 65_536

    public init(host: String = "127.0.0.1", port: Int = 4222) {
        self.host = host
        self.port = port
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
/// Not yet: reconnecting (a lost connection ends every call with ``NATSError/closed(_:)``; the
/// owner connects again), TLS, server pools.
public actor NATSConnection {
    public nonisolated let options: NATSConnectionOptions
    /// The server's INFO (the latest, when it sent a new one).
    public private(set) var serverInfo: NATSServerInfo?
    /// The last `-ERR` the server sent.
    public private(set) var lastServerError: String?

    private enum State: Equatable {
        case connecting
        case connected
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
    private var parser: NATSParser
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
        let asyncChannel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            asyncChannel = try await ClientBootstrap(group: group)
                .connectTimeout(.milliseconds(Int64(options.connectTimeoutMs)))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: options.host, port: options.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw NATSError.connectFailed("\(options.host):\(options.port): \(error)")
        }
        channel = asyncChannel.channel
        readTask = Task { await self.run(asyncChannel) }
        do {
            let info: NATSServerInfo = try await wait(for: "the server's INFO", timeoutMs: options.connectTimeoutMs) { id, continuation in
                infoWaiterID = id
                return .info(continuation)
            }
            guard !info.tlsRequired else { throw NATSError.handshakeFailed("the server requires TLS, which this client does not speak yet") }
            serverInfo = info
            try await send(NATSWire.connect(try connectJSON(info)))
            // The PING went with CONNECT: its PONG says the server took it.
            let _: Void = try await wait(for: "the server to accept CONNECT", timeoutMs: options.connectTimeoutMs) { id, continuation in
                pongQueue.append(id)
                return .pong(continuation)
            }
            if case .connecting = state { state = .connected }
        } catch {
            await close()
            if let error = error as? NATSError, case .closed(let why) = error { throw NATSError.handshakeFailed(why) }
            throw error
        }
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

    private func run(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        var reason = "the server closed the connection"
        do {
            try await channel.executeThenClose { inbound, outbound in
                self.attach(outbound)
                for try await buffer in inbound { try await self.receive(buffer) }
            }
        } catch let error as NATSProtocolError {
            reason = "\(error)"
        } catch {
            reason = "\(error)"
        }
        finish(lastServerError.map { "\(reason) (the server said: \($0))" } ?? reason)
    }

    private func attach(_ writer: NIOAsyncChannelOutboundWriter<ByteBuffer>) { outbound = writer }

    private func receive(_ buffer: ByteBuffer) async throws {
        parser.append(buffer.readableBytesView)
        while let op = try parser.next() {
            switch op {
            case .info(let info):
                if let id = infoWaiterID {
                    infoWaiterID = nil
                    if case .info(let continuation) = take(id) { continuation.resume(returning: info) }
                } else {
                    serverInfo = info  // an INFO later on: the server's limits may have changed
                }
            case .ping:
                try? await send(NATSWire.pong)
            case .pong:
                guard !pongQueue.isEmpty else { continue }
                if case .pong(let continuation) = take(pongQueue.removeFirst()) { continuation.resume() }
            case .ok:
                continue
            case .error(let text):
                lastServerError = text
                if case .connecting = state, !pongQueue.isEmpty {
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
        let error = NATSError.closed(reason)
        for id in Array(waiters.keys) { take(id)?.fail(error) }
        infoWaiterID = nil
        pongQueue = []
        requestWaiters = [:]
        for subscription in subscriptions.values { subscription.continuation.finish(throwing: error) }
        subscriptions = [:]
    }

    // MARK: - Writing

    private func send(_ bytes: [UInt8]) async throws {
        if case .closed(let why) = state { throw NATSError.closed(why) }
        guard let outbound else { throw NATSError.closed("not connected yet") }
        do {
            try await outbound.write(ByteBuffer(bytes: bytes))
        } catch {
            throw NATSError.closed("\(error)")
        }
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
        try await send(NATSWire.publish(subject: subject, replyTo: replyTo, headerBlock: block, payload: payload))
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
        guard let held = subscriptions.removeValue(forKey: subscription.sid) else { return }
        held.continuation.finish()
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
            try await send(NATSWire.subscribe(subject: inboxPrefix + "*", sid: sid))
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
        let _: Void = try await wait(for: "the server's PONG", timeoutMs: timeoutMs) { id, continuation in
            pongQueue.append(id)
            Task {
                do { try await self.send(NATSWire.ping) } catch { self.fail(id, error) }
            }
            return .pong(continuation)
        }
    }

    /// Closes the connection; calls in flight end with ``NATSError/closed(_:)``.
    public func close() async {
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

    private func cancelRequest(_ token: String) {
        if let id = requestWaiters[token] { fail(id, CancellationError()) }
    }
}
