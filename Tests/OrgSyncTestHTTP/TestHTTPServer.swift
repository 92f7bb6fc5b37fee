import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// What the test server saw of one request.
public struct RecordedRequest: Sendable {
    public var method: HTTPMethod
    public var uri: String
    public var headers: HTTPHeaders
    public var body: [UInt8]
}

/// What the test server answers; nil from the responder means never answer (a hung receiver).
public struct Reply: Sendable {
    public var status: HTTPResponseStatus
    public var body: String = ""
    /// Answer only this long after the request ended, timed on the server's event loop (a slow
    /// receiver); nil answers at once.
    public var after: TimeAmount? = nil
    /// Extra response headers (e.g. `Retry-After`).
    public var headers: [(String, String)] = []

    public init(status: HTTPResponseStatus, body: String = "", after: TimeAmount? = nil, headers: [(String, String)] = []) {
        self.status = status
        self.body = body
        self.after = after
        self.headers = headers
    }
}

/// The TLS of a test receiver: its certificate and key (PEM files), and the CA a client
/// certificate must come from (nil: none is asked for).
public struct ServerTLS: Sendable {
    public var certificateFile: String
    public var keyFile: String
    public var clientCAFile: String? = nil

    public init(certificateFile: String, keyFile: String, clientCAFile: String? = nil) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
    }

    public func context() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem)))
        if let clientCAFile {
            configuration.certificateVerification = .noHostnameVerification  // a certificate is required
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCAFile))
        }
        return try NIOSSLContext(configuration: configuration)
    }
}

/// A small HTTP/1.1 server on 127.0.0.1 and a free port, answering from a closure and keeping
/// every request it got; over TLS when started with a ``ServerTLS``. Stopped by the test (also
/// when it fails) with ``stop()``.
public final class TestHTTPServer: Sendable {
    public let port: Int
    private let channel: any Channel
    private let box: ServerBox
    private let scheme: String

    public var requests: [RecordedRequest] { box.recorded.withLock { $0 } }
    public var url: String { "\(scheme)://127.0.0.1:\(port)/hook" }
    /// Waits until the server has recorded at least `count` requests, or `timeout` passed, and
    /// returns what it recorded. A client's error can come before the server's event loop has
    /// read what the client sent (a client that gave up waiting for the answer): assert on the
    /// server's side after this, not right after the client's call.
    public func requests(atLeast count: Int, within timeout: Duration = .seconds(10)) async -> [RecordedRequest] {
        let id = box.nextWaiterID()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in self.box.wait(id: id, count: count, continuation) }
                } onCancel: {
                    self.box.release(id: id)
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
        return requests
    }

    /// TCP connections accepted so far.
    public var connectionCount: Int { box.children.withLock { $0.count } }

    private init(channel: any Channel, port: Int, box: ServerBox, scheme: String) {
        self.channel = channel
        self.port = port
        self.box = box
        self.scheme = scheme
    }

    public static func start(tls: ServerTLS? = nil, _ respond: @escaping @Sendable (RecordedRequest) -> Reply?) async throws -> TestHTTPServer {
        let box = ServerBox()
        if let tls { try box.tls.withLock { $0 = try tls.context() } }
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                box.children.withLock { $0.append(child) }
                return child.eventLoop.makeCompletedFuture(withResultOf: {
                    let pipeline = child.pipeline.syncOperations
                    // TLS first: everything after it reads and writes plain HTTP.
                    if let context = box.tls.withLock({ $0 }) { try pipeline.addHandler(NIOSSLServerHandler(context: context)) }
                    try pipeline.configureHTTPServerPipeline()
                    try pipeline.addHandler(Handler(box: box, respond: respond))
                })
            }
            .bind(host: "127.0.0.1", port: 0).get()
        guard let port = channel.localAddress?.port else {
            try await channel.close()
            throw ChannelError.unknownLocalAddress
        }
        return TestHTTPServer(channel: channel, port: port, box: box, scheme: tls == nil ? "http" : "https")
    }

    /// Connections accepted from now on use `tls` (a receiver whose certificate was replaced;
    /// same port, same URL).
    public func useTLS(_ tls: ServerTLS) throws {
        let context = try tls.context()
        box.tls.withLock { $0 = context }
    }

    /// Closes the listening socket and every accepted connection (a hung one included).
    public func stop() async {
        try? await channel.close()
        for child in box.children.withLock({ $0 }) { try? await child.close() }
    }

    /// Lets the handlers reach the server made after the bootstrap's closures.
    private final class ServerBox: Sendable {
        let recorded = Mutex<[RecordedRequest]>([])
        private let waiters = Mutex<(nextID: Int, waiting: [Int: (count: Int, continuation: CheckedContinuation<Void, Never>)], released: Set<Int>)>(
            (0, [:], []))

        func nextWaiterID() -> Int {
            waiters.withLock { state in
                defer { state.nextID += 1 }
                return state.nextID
            }
        }

        /// Resumes `continuation` once `count` requests are recorded (at once if they are, or
        /// if the wait was already released).
        func wait(id: Int, count: Int, _ continuation: CheckedContinuation<Void, Never>) {
            let now = waiters.withLock { state -> Bool in
                if state.released.remove(id) != nil || recorded.withLock({ $0.count }) >= count { return true }
                state.waiting[id] = (count, continuation)
                return false
            }
            if now { continuation.resume() }
        }

        func release(id: Int) {
            let waiter = waiters.withLock { state in
                let waiter = state.waiting.removeValue(forKey: id)
                if waiter == nil { state.released.insert(id) }
                return waiter
            }
            waiter?.continuation.resume()
        }

        func record(_ request: RecordedRequest) {
            let ready = waiters.withLock { state -> [CheckedContinuation<Void, Never>] in
                let total = recorded.withLock { recorded in
                    recorded.append(request)
                    return recorded.count
                }
                let done = state.waiting.filter { $0.value.count <= total }
                for id in done.keys { state.waiting.removeValue(forKey: id) }
                return done.values.map(\.continuation)
            }
            for continuation in ready { continuation.resume() }
        }
        let children = Mutex<[any Channel]>([])
        let tls = Mutex<NIOSSLContext?>(nil)
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let box: ServerBox
        let respond: @Sendable (RecordedRequest) -> Reply?
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(box: ServerBox, respond: @escaping @Sendable (RecordedRequest) -> Reply?) {
            self.box = box
            self.respond = respond
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let requestHead):
                head = requestHead
                body = []
            case .body(let buffer):
                body += buffer.readableBytesView
            case .end:
                guard let head else { return }
                let request = RecordedRequest(method: head.method, uri: head.uri, headers: head.headers, body: body)
                box.record(request)
                guard let reply = respond(request) else { return }
                guard let delay = reply.after else {
                    answer(reply, to: head, context: context)
                    return
                }
                context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
                    guard context.channel.isActive else { return }
                    self.answer(reply, to: head, context: context)
                }
            }
        }

        private func answer(_ reply: Reply, to head: HTTPRequestHead, context: ChannelHandlerContext) {
                var headers = HTTPHeaders()
                headers.add(name: "Content-Length", value: String(reply.body.utf8.count))
                for (name, value) in reply.headers { headers.add(name: name, value: value) }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: reply.status, headers: headers))), promise: nil)
                if head.method != .HEAD {
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: reply.body)))), promise: nil)
                }
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
