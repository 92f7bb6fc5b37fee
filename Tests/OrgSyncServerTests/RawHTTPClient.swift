import Foundation
import Hummingbird
import Logging
@testable import OrgSyncBroker
@testable import OrgSyncServer
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A TCP connection to a broker driven byte by byte, for what an HTTP client library will not
/// do: stay silent, send headers slowly, stall a body. Blocking calls run on a thread of their own,
/// never on the cooperative pool the in-process server answers on; every wait is bounded.
final class RawHTTPConnection: Sendable {
    /// The socket while open, -1 once closed. Closed exactly once: a second close() of the same
    /// number would close whatever descriptor the process opened next under it (an in-process
    /// server's accepted socket: NIO then fails epoll_ctl with EBADF and traps).
    private let descriptor: Mutex<Int32>
    var fd: Int32 { descriptor.withLock { $0 } }

    init(port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ProcessError("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard status == 0 else {
            let code = errno
            Glibc.close(fd)
            throw ProcessError("connect to port \(port): errno \(code)")
        }
        descriptor = Mutex(fd)
    }

    deinit { close() }

    /// Closes the connection (once; later calls do nothing).
    func close() {
        let fd = descriptor.withLock { fd -> Int32 in
            defer { fd = -1 }
            return fd
        }
        if fd >= 0 { Glibc.close(fd) }
    }

    /// Sends every byte (false if the peer closed the connection).
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }

    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// Waits up to `timeout` for bytes or the peer's close: nil on timeout, [] when closed.
    func receive(timeout: Duration) -> [UInt8]? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ms = Int32(max(0, timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000))
        guard poll(&poller, 1, ms) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? Array(buffer[..<n]) : []
    }

    /// What the server sent until it closed the connection, or nil if it did not close within
    /// `timeout`.
    func readUntilClosed(timeout: Duration) -> [UInt8]? {
        let deadline = ContinuousClock.now + timeout
        var bytes: [UInt8] = []
        while ContinuousClock.now < deadline {
            guard let chunk = receive(timeout: deadline - .now) else { return nil }
            if chunk.isEmpty { return bytes }
            bytes += chunk
        }
        return nil
    }

    /// One response (head and a Content-Length body), or nil if none came within `timeout` or
    /// the connection closed first.
    func readResponse(timeout: Duration) -> RawResponse? {
        let deadline = ContinuousClock.now + timeout
        var bytes: [UInt8] = []
        while ContinuousClock.now < deadline {
            if let response = RawResponse(parsing: bytes) { return response }
            guard let chunk = receive(timeout: deadline - .now), !chunk.isEmpty else { return nil }
            bytes += chunk
        }
        return RawResponse(parsing: bytes)
    }
}

struct RawResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]

    init?(parsing bytes: [UInt8]) {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard let end = (0..<max(0, bytes.count - 3)).first(where: { Array(bytes[$0..<$0 + 4]) == separator }) else { return nil }
        let lines = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        guard let statusLine = lines.first, let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") else { return nil }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        guard bytes.count >= end + 4 + length else { return nil }
        self.status = status
        self.headers = headers
        body = Array(bytes[(end + 4)..<(end + 4 + length)])
    }
}

/// A request as bytes: `POST` with a body and the given extra header lines.
func rawRequest(_ method: String, _ path: String, headers: [String] = [], body: [UInt8] = []) -> [UInt8] {
    var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    for header in headers { head += header + "\r\n" }
    if !body.isEmpty && !headers.contains(where: { $0.lowercased().hasPrefix("transfer-encoding") }) {
        head += "Content-Length: \(body.count)\r\n"
    }
    return Array((head + "\r\n").utf8) + body
}

/// Runs the broker's real HTTP server (the `server.*` limits of `yaml`; HTTPS with
/// `certificate`) in this process on a free port, calls `body` with the port, then shuts it down
/// gracefully.
func withLiveBroker(
    yaml: String, bodyBudget: InflightBodyBudget? = nil, certificate: ServerCertificate? = nil,
    _ body: (_ port: Int, _ broker: TestBroker) async throws -> Void
) async throws {
    let t = try TestBroker(yaml: yaml)
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    let config = t.broker.configuration
    let router = buildRouter(broker: t.broker, authenticator: Authenticator(configuration: config, environment: ["TEST_ADMIN_TOKEN": TestBroker.adminToken]), bodyBudget: bodyBudget)
    let (ports, portContinuation) = AsyncStream<Int>.makeStream()
    let app = Application(
        router: router, server: try brokerHTTPServer(config.server, certificate: certificate, logger: logger),
        configuration: .init(address: .hostname("127.0.0.1", port: 0)),
        onServerRunning: { channel in portContinuation.yield(channel.localAddress?.port ?? 0) },
        logger: logger)
    let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw ProcessError("the server did not start") }
        do {
            try await body(port, t)
        } catch {
            await group.triggerGracefulShutdown()
            throw error
        }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
    await t.broker.close()
}

/// The YAML of a broker with auth off and `server` fields added to the test limits.
func liveYAML(_ server: String) -> String {
    """
    auth: { enabled: false }
    server:
      body_bytes_max: 65536
      entry_bytes_max: 2048
      request_entries_max: 5000
    \(server.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
    streams:
      - name: events
    """
}
