import Foundation
import OrgSyncNATS
import OrgSyncTestSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway nats-server with JetStream on 127.0.0.1 (Debian's `nats-server`, 2.9; `.ci/run`
/// installs it; `NATS_SERVER_BIN` names another). A missing server fails the test that needs it.
public final class NATSTestServer: Sendable {
    public let process: Process
    public let port: Int
    public let directory: String

    public static func binary() throws -> String {
        let candidates = [ProcessInfo.processInfo.environment["NATS_SERVER_BIN"], "/usr/sbin/nats-server", "/usr/bin/nats-server"]
        guard let found = candidates.compactMap({ $0 }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TestServerMissing()
        }
        return found
    }

    struct TestServerMissing: Error, CustomStringConvertible {
        var description: String { "nats-server is not installed (Debian: apt-get install nats-server; or set NATS_SERVER_BIN)" }
    }

    /// The command-line arguments it was started with (the same again restart it in place).
    public let extraArguments: [String]

    /// How a client reaches it (``options()``): plain, or with the TLS and credentials its
    /// `extraArguments` ask for.
    private let client: NATSConnectionOptions

    /// A new server; with `port` and `directory`, one in the place of an earlier one (same
    /// address, same JetStream store). `extraArguments` go on its command line (a cluster's;
    /// TLS, credentials). `client` is how a client reaches it (its host and port are set here):
    /// up means it answered such a client's handshake.
    public init(port: Int? = nil, directory: String? = nil, extraArguments: [String] = [], client: NATSConnectionOptions = NATSConnectionOptions()) async throws {
        self.extraArguments = extraArguments
        self.directory = try directory ?? makeTemporaryDirectory("orgsync-nats")
        self.port = try port ?? Self.freePort()
        var client = client
        client.host = "127.0.0.1"
        client.port = self.port
        self.client = client
        process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binary())
        process.arguments = ["-a", "127.0.0.1", "-p", String(self.port), "-js", "-sd", self.directory + "/js"] + extraArguments
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        // Up when it answers a handshake: bounded, no sleep in between but the connect attempt's.
        // A server that exits (its port taken after all) fails at once, saying so.
        try await withTimeout(ms: 20_000, "nats-server on port \(self.port) to answer") { [port = self.port, process, client] in
            while true {
                if let connection = try? await NATSConnection.connect(client) {
                    await connection.close()
                    return
                }
                guard process.isRunning else { throw ServerExited(port: port, status: process.terminationStatus) }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    struct ServerExited: Error, CustomStringConvertible {
        var port: Int
        var status: Int32
        var description: String { "nats-server for port \(port) exited with status \(status) before it answered (a port in use?)" }
    }

    public func options() -> NATSConnectionOptions { client }

    /// SIGKILL: the server vanishes mid-conversation. Waited for on a thread of its own, not
    /// on the cooperative pool (which every other test of the process shares).
    public func kill() async {
        Glibc.kill(process.processIdentifier, SIGKILL)
        let process = process
        await offThePool { process.waitUntilExit() }
    }

    /// SIGKILL, and its store deleted once it is gone — without waiting here (a `defer` calls it).
    public func stop() {
        let process = process
        let directory = directory
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        Thread {
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: directory)
        }.start()
    }

    /// Ports `freePort()` handed out in this process. None is handed out twice: the suites run
    /// side by side in one process, and a port the kernel says is free now may be one another
    /// test's server is about to bind (picked, not yet bound) or comes back on after a restart
    /// (a killed server keeps its address) — a second server on it exits, and its test fails.
    private static let handedOutPorts = Mutex<Set<Int>>([])
    /// Kernel picks tried for a port not handed out before.
    static let freePortAttemptsMax = 1_000

    /// A loopback port free now and never handed out before in this process.
    public static func freePort() throws -> Int {
        for _ in 0..<freePortAttemptsMax {
            let port = try kernelFreePort()
            if handedOutPorts.withLock({ $0.insert(port).inserted }) { return port }
        }
        throw NoFreePort()
    }

    struct NoFreePort: Error, CustomStringConvertible {
        var description: String { "no loopback port that this process has not handed out already in \(freePortAttemptsMax) tries" }
    }

    private static func kernelFreePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw TestServerMissing() }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}


/// Three nats-servers clustered on 127.0.0.1 (JetStream clustering: R3 streams), each with its
/// own store. Ready once JetStream answers through the first.
public final class NATSTestCluster: Sendable {
    public let servers: Mutex<[NATSTestServer]>
    public let clusterPorts: [Int]

    public init(size: Int = 3) async throws {
        let ports = try (0..<size).map { _ in try NATSTestServer.freePort() }
        let clusterPorts = try (0..<size).map { _ in try NATSTestServer.freePort() }
        self.clusterPorts = clusterPorts
        var started: [NATSTestServer] = []
        do {
            for index in 0..<size {
                started.append(try await NATSTestServer(port: ports[index], extraArguments: Self.arguments(index: index, clusterPorts: clusterPorts)))
            }
        } catch {
            for server in started { server.stop() }
            throw error
        }
        servers = Mutex(started)
        try await waitForJetStream()
    }

    static func arguments(index: Int, clusterPorts: [Int]) -> [String] {
        let routes = clusterPorts.map { "nats://127.0.0.1:\($0)" }.joined(separator: ",")
        return ["-n", "n\(index + 1)", "--cluster_name", "orgsync-test", "--cluster", "nats://127.0.0.1:\(clusterPorts[index])", "--routes", routes]
    }

    public func server(_ index: Int) -> NATSTestServer { servers.withLock { $0[index] } }

    /// Connection options on the first server with the others as alternates.
    public func options() -> NATSConnectionOptions {
        let all = servers.withLock { $0 }
        var options = all[0].options()
        options.alternates = all.dropFirst().map { ("127.0.0.1", $0.port) }
        return options
    }

    /// `nats://` URLs of every server.
    public var urls: [String] { servers.withLock { $0.map { "nats://127.0.0.1:\($0.port)" } } }

    /// Starts server `index` again at its address, on its store (or a new one).
    public func restart(_ index: Int, keepStore: Bool = true) async throws {
        let old = server(index)
        if old.process.isRunning { await old.kill() }
        if !keepStore { try? FileManager.default.removeItem(atPath: old.directory + "/js") }
        let new = try await NATSTestServer(port: old.port, directory: old.directory, extraArguments: old.extraArguments, client: old.options())
        servers.withLock { $0[index] = new }
    }

    /// Until JetStream places a stream on every server: a probe stream of as many replicas as
    /// servers is made (and deleted) through the first. A meta leader alone is not enough: until
    /// every peer has joined, an R3 stream finds "no suitable peers for placement".
    public func waitForJetStream() async throws {
        let replicas = servers.withLock { $0.count }
        try await poll("the NATS cluster's JetStream to place an R\(replicas) stream") { js in
            let placed = (try? await js.createStream(JetStreamStreamConfig(name: "PROBE", subjects: ["probe.placement"], storage: "memory", replicas: replicas))) != nil
            if placed { try? await js.deleteStream("PROBE") }
            return placed
        }
    }

    /// Until `stream`'s leader sees every other replica caught up: what the next fault must wait
    /// for, or two faults in a row are one that leaves the stream without a quorum (a server that
    /// lost its store and one killed right after it rejoined).
    public func waitForReplicasCaughtUp(stream: String) async throws {
        let others = servers.withLock { $0.count } - 1
        try await poll("the replicas of \(stream) to catch up", boundMs: 60_000) { js in
            guard let replicas = try? await js.streamInfo(stream).cluster?.replicas else { return false }
            return replicas.count == others && replicas.allSatisfy { $0.current == true && $0.offline != true }
        }
    }

    /// Asks the cluster (a new connection each time, since a server may be down) every 100 ms
    /// until `holds` says yes, for at most `boundMs`.
    private func poll(_ what: String, boundMs: UInt64 = 30_000, _ holds: @escaping @Sendable (JetStream) async -> Bool) async throws {
        let options = options()
        try await withTimeout(ms: boundMs, what) {
            while true {
                if let connection = try? await NATSConnection.connect(options) {
                    let held = await holds(JetStream(connection: connection, timeoutMs: 2_000))
                    await connection.close()
                    if held { return }
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    public func stop() {
        for server in servers.withLock({ $0 }) { server.stop() }
    }
}
