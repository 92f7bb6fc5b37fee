#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why the broker cannot listen on `host:port`, found before anything is opened.
public struct ListenAddressProblem: Error, Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// The operating system's errno (0 when the host name did not resolve).
    public var errno: Int32
    public var reason: String

    public var description: String { "cannot listen on \(host):\(port): \(reason)" }

    public init(host: String, port: Int, errno: Int32) {
        self.host = host
        self.port = port
        self.errno = errno
        switch errno {
        case EADDRINUSE: reason = "address in use (another broker? --port)"
        case EADDRNOTAVAIL: reason = "no such address on this machine (--host)"
        case EACCES: reason = "permission denied (ports below 1024 need privileges; --port)"
        default: reason = String(cString: strerror(errno))
        }
    }

    init(host: String, port: Int, resolving problem: String) {
        self.host = host
        self.port = port
        errno = 0
        reason = "cannot resolve the host (\(problem); --host)"
    }
}

/// Binds and closes a socket on the first address `host` resolves to, as the server will (with
/// SO_REUSEADDR, so a previous run's connections in TIME_WAIT do not count): the problem, or
/// nil when the server can bind. Run before streams and links are opened, so a busy port
/// stops start-up with a message and nothing opened.
public func checkListenAddress(host: String, port: Int) -> ListenAddressProblem? {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    #if canImport(Glibc)
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    #else
    hints.ai_socktype = SOCK_STREAM
    #endif
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
    var list: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(host, String(port), &hints, &list)
    guard status == 0, let first = list else {
        return ListenAddressProblem(host: host, port: port, resolving: String(cString: gai_strerror(status)))
    }
    defer { freeaddrinfo(first) }
    let info = first.pointee
    let fd = socket(info.ai_family, info.ai_socktype, info.ai_protocol)
    guard fd >= 0 else { return ListenAddressProblem(host: host, port: port, errno: errno) }
    defer { close(fd) }
    var one: Int32 = 1
    _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    guard bind(fd, info.ai_addr, info.ai_addrlen) == 0, listen(fd, 1) == 0 else {
        return ListenAddressProblem(host: host, port: port, errno: errno)
    }
    return nil
}
