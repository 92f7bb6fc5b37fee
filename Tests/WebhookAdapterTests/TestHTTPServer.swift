import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// What the test server saw of one request.
struct RecordedRequest: Sendable {
    var method: HTTPMethod
    var uri: String
    var headers: HTTPHeaders
    var body: [UInt8]
}

/// What the test server answers; nil from the responder means never answer (a hung receiver).
struct Reply: Sendable {
    var status: HTTPResponseStatus
    var body: String = ""
    /// Answer only this long after the request ended, timed on the server's event loop (a slow
    /// receiver); nil answers at once.
    var after: TimeAmount? = nil
}

/// The TLS of a test receiver: its certificate and key (PEM files), and the CA a client
/// certificate must come from (nil: none is asked for).
struct ServerTLS: Sendable {
    var certificateFile: String
    var keyFile: String
    var clientCAFile: String? = nil

    func context() throws -> NIOSSLContext {
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
final class TestHTTPServer: Sendable {
    let port: Int
    private let channel: any Channel
    private let box: ServerBox
    private let scheme: String

    var requests: [RecordedRequest] { box.recorded.withLock { $0 } }
    var url: String { "\(scheme)://127.0.0.1:\(port)/hook" }
    /// TCP connections accepted so far.
    var connectionCount: Int { box.children.withLock { $0.count } }

    private init(channel: any Channel, port: Int, box: ServerBox, scheme: String) {
        self.channel = channel
        self.port = port
        self.box = box
        self.scheme = scheme
    }

    static func start(tls: ServerTLS? = nil, _ respond: @escaping @Sendable (RecordedRequest) -> Reply?) async throws -> TestHTTPServer {
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
    func useTLS(_ tls: ServerTLS) throws {
        let context = try tls.context()
        box.tls.withLock { $0 = context }
    }

    /// Closes the listening socket and every accepted connection (a hung one included).
    func stop() async {
        try? await channel.close()
        for child in box.children.withLock({ $0 }) { try? await child.close() }
    }

    /// Lets the handlers reach the server made after the bootstrap's closures.
    private final class ServerBox: Sendable {
        let recorded = Mutex<[RecordedRequest]>([])
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
                box.recorded.withLock { $0.append(request) }
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
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: reply.status, headers: headers))), promise: nil)
                if head.method != .HEAD {
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: reply.body)))), promise: nil)
                }
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

/// Keeps every log record, to check that no secret reaches a log.
final class CapturedLogs: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func append(_ line: String) { lines.withLock { $0.append(line) } }

    func logger() -> Logger {
        var logger = Logger(label: "test.webhook") { label in Handler(label: label, sink: self) }
        logger.logLevel = .trace
        return logger
    }

    struct Handler: LogHandler {
        let label: String
        let sink: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            sink.append("\(event.level) \(event.message) \(merged)")
        }
    }
}
