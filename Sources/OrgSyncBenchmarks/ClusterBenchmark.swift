import ArgumentParser
import Foundation
import Logging
import OrgSyncBroker
import OrgSyncCluster
import OrgSyncCore
import OrgSyncLog
import OrgSyncNATS
import Synchronization

/// `OrgSyncBenchmarks cluster`: appends to a cluster stream (R3 on three local nats-servers)
/// beside the ceiling — raw JetStream publishes of the same bytes on the same cluster, one
/// message per append — and the standalone file log, in one run.
struct ClusterBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Cluster append (R3 JetStream) vs raw JetStream publish of the same bytes vs the standalone log.",
        discussion: """
            Starts three nats-servers clustered on 127.0.0.1 (JetStream file storage, a fresh store \
            under a temp directory, stopped at the end) and measures for each producers × entries \
            per append: (1) raw JetStream: one publish with acknowledgement per append of the same \
            framed entries to an R3 stream, each producer on its own connection; (2) orgsync cluster \
            appends through one member (`JetStreamStreamStore`, R3, fenced, zlib level 1), without \
            and with an idempotency key per append; (3) the \
            standalone segment log (fsync always). Then the time a new member takes to open the \
            stream and read its tail (what a link moved to it waits), and --failovers times a \
            leased link's failover on two real `orgsync serve` members (SIGKILL the one running \
            it → the other has applied an entry appended after the kill; needs the orgsync \
            executable: next to this one, or --orgsync). nats-server: --nats-server, \
            $NATS_SERVER_BIN, PATH or /usr/sbin/nats-server.
            """
    )

    @OptionGroup var workload: WorkloadOptions
    @Option(help: "Seconds per scenario.") var seconds: Double = 5
    @Option(help: "Comma-separated producer counts.") var producers: String = "1,8"
    @Option(help: "Comma-separated entries per append.") var batches: String = "1,100"
    @Option(help: "The nats-server binary.") var natsServer: String?
    @Option(help: "Failovers to time (SIGKILL the member running a leased link); 0: none.") var failovers: Int = 5
    @Option(help: "lease_ms of the failover members.") var leaseMs: Int = 3_000
    @Option(help: "The orgsync executable the failover members run (default: next to this benchmark's).") var orgsync: String?
    @Flag(help: "Print RESULT lines (one JSON object each) instead of the Markdown table.") var json = false

    func run() async throws {
        bootstrapBenchmarkLogging()
        let (entries, source) = try workload.entries()
        let scratch = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let cluster = try await LocalNATSCluster.start(binary: try natsServerBinary(), directory: scratch + "/nats")
        defer { cluster.stop() }
        let producerCounts = producers.split(separator: ",").compactMap { Int($0) }
        let batchSizes = batches.split(separator: ",").compactMap { Int($0) }
        var lines: [String] = []
        let meanBytes = Double(byteCount(entries)) / Double(entries.count)
        lines.append("workload: \(entries.count) entries (\(source)), mean \(fmt(meanBytes)) B; nats-server \(cluster.version), 3 nodes on 127.0.0.1, R3 file streams; \(ProcessInfo.processInfo.activeProcessorCount) cores; load \(loadAverage())")
        lines.append("")
        lines.append("| producers × entries/append | raw JetStream publish (ceiling) | orgsync cluster append (R3) | ratio to raw | keyed cluster append | keyed ratio | standalone log (fsync always) | cluster p50 / p99 ms | raw p50 / p99 ms |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

        var configuration = BrokerConfiguration()
        configuration.streams = [BrokerConfiguration.Stream()]
        var clusterSettings = BrokerConfiguration.Cluster(node: "bench", natsUrls: cluster.urls)
        clusterSettings.replicas = 3
        configuration.cluster = clusterSettings
        let logger = Logger(label: "bench.cluster")
        for producerCount in producerCounts {
            for batch in batchSizes {
                let raw = try await measureRawPublish(entries, cluster: cluster, producers: producerCount, batch: batch)
                configuration.streams[0].name = "c\(producerCount)x\(batch)"
                let member = try await ClusterStreams.open(configuration: configuration, cluster: clusterSettings, environment: [:], logger: logger)
                let store = try member.stores[configuration.streams[0].name] ?? { throw ValidationErrorText("no store") }()
                let ours = try await measure(entries, producers: producerCount, batch: batch, mode: "cluster append R3") { slice in
                    _ = try await store.append(slice, idempotencyKey: nil)
                }
                // With an Idempotency-Key each append is a message of its own (the key is its
                // Nats-Msg-Id): not grouped with others.
                let keyed = try await measure(entries, producers: producerCount, batch: batch, mode: "keyed cluster append R3") { slice in
                    _ = try await store.append(slice, idempotencyKey: UUID().uuidString)
                }
                await member.close()
                let log = try StreamLog.open(dataDirectory: scratch + "/log-\(producerCount)-\(batch)", name: "bench")
                let standalone = try await measure(entries, producers: producerCount, batch: batch, mode: "standalone append") { slice in
                    _ = try await log.append(slice)
                }
                await log.close()
                if json { for row in [raw, ours, keyed, standalone] { print(resultLine(row)) } }
                lines.append("| \(producerCount) × \(batch) | \(fmt(raw.entries_per_s, 0))/s | \(fmt(ours.entries_per_s, 0))/s | \(fmt(ours.entries_per_s / raw.entries_per_s, 2)) | \(fmt(keyed.entries_per_s, 0))/s | \(fmt(keyed.entries_per_s / raw.entries_per_s, 2)) | \(fmt(standalone.entries_per_s, 0))/s | \(fmt(ours.p50_ms, 2)) / \(fmt(ours.p99_ms, 2)) | \(fmt(raw.p50_ms, 2)) / \(fmt(raw.p99_ms, 2)) |")
            }
        }
        // What a member that takes a link over waits before reading: opening the streams
        // (connect, buckets, stream info, id) and finding the tail.
        var openMs: [UInt64] = []
        for _ in 0..<5 {
            let t0 = nowNs()
            let member = try await ClusterStreams.open(configuration: configuration, cluster: clusterSettings, environment: [:], logger: logger)
            let store = try member.stores[configuration.streams[0].name] ?? { throw ValidationErrorText("no store") }()
            _ = await store.linkSource().endOffset()
            openMs.append(nowNs() - t0)
            await member.close()
        }
        openMs.sort()
        lines.append("")
        lines.append("A new member opening the cluster's stream and finding its tail: p50 \(fmt(percentileMs(openMs, 50), 1)) ms, max \(fmt(percentileMs(openMs, 100), 1)) ms (5 runs).")
        if failovers > 0 {
            let failover = ClusterFailover(
                binary: orgsync ?? ClusterFailover.defaultBinary(), natsURLs: cluster.urls, directory: scratch + "/failover", leaseMs: leaseMs)
            try FileManager.default.createDirectory(atPath: failover.directory, withIntermediateDirectories: true)
            let times = try await failover.run(rounds: failovers).sorted()
            lines.append("")
            lines.append("Failover of a leased link (two `orgsync serve` members, lease_ms \(leaseMs), renewed every \(leaseMs / 3) ms; SIGKILL the member running it → the other member has applied an entry appended after the kill): p50 \(fmt(percentileMs(times, 50) / 1000, 2)) s, max \(fmt(percentileMs(times, 100) / 1000, 2)) s over \(times.count) kills (bound: lease + renew interval + the link's start = \(fmt(Double(leaseMs + leaseMs / 3) / 1000, 1)) s + start).")
            if json { print(#"RESULT {"mode":"cluster failover","p50_ms":\#(percentileMs(times, 50)),"max_ms":\#(percentileMs(times, 100)),"kills":\#(times.count),"lease_ms":\#(leaseMs)}"#) }
        }
        if !json { print(lines.joined(separator: "\n")) }
    }

    func natsServerBinary() throws -> String {
        let candidates = [natsServer, ProcessInfo.processInfo.environment["NATS_SERVER_BIN"]]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/nats-server" } + ["/usr/sbin/nats-server"]
        guard let found = candidates.compactMap({ $0 }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw ValidationErrorText("nats-server not found: --nats-server, NATS_SERVER_BIN, or apt-get install nats-server")
        }
        return found
    }

    /// One publish with acknowledgement per append of the framed entries (what a cluster append
    /// stores, uncompressed), each producer on its own connection: JetStream's own rate.
    func measureRawPublish(_ entries: [[UInt8]], cluster: LocalNATSCluster, producers: Int, batch: Int) async throws -> ResultRow {
        var options = NATSConnectionOptions(host: "127.0.0.1", port: cluster.ports[0])
        options.alternates = cluster.ports.dropFirst().map { ("127.0.0.1", $0) }
        let setup = try await NATSConnection.connect(options)
        let name = "RAW_\(producers)_\(batch)"
        _ = try await JetStream(connection: setup).createStream(JetStreamStreamConfig(name: name, subjects: ["raw.\(producers).\(batch)"], replicas: 3))
        await setup.close()
        var opened: [NATSConnection] = []
        for _ in 0..<producers { opened.append(try await NATSConnection.connect(options)) }
        let connections = opened
        let row = try await measure(entries, producers: producers, batch: batch, mode: "raw JetStream publish", perProducer: { index in
            let js = JetStream(connection: connections[index])
            return { slice in
                let payload = try ClusterAppendMessage(firstOffset: 0, timestampMs: 0, entries: slice).encoded(compressionLevel: nil).payload
                _ = try await js.publish("raw.\(producers).\(batch)", payload: payload)
            }
        })
        for connection in connections { await connection.close() }
        return row
    }

    func measure(
        _ entries: [[UInt8]], producers: Int, batch: Int, mode: String, _ append: @escaping @Sendable ([[UInt8]]) async throws -> Void
    ) async throws -> ResultRow {
        try await measure(entries, producers: producers, batch: batch, mode: mode, perProducer: { _ in append })
    }

    /// `producers` tasks appending slices of `batch` entries for `seconds`.
    func measure(
        _ entries: [[UInt8]], producers: Int, batch: Int, mode: String,
        perProducer: (Int) -> @Sendable ([[UInt8]]) async throws -> Void
    ) async throws -> ResultRow {
        let next = Counter()
        let batches = workloadBatches(entries, size: batch)
        let run = try await runClosedLoop(producers: producers, seconds: seconds) { index in
            let append = perProducer(index)
            return {
                let slice = batches[next.next() % batches.count]
                try await append(slice)
                return (slice.count, byteCount(slice))
            }
        }
        return ResultRow(
            system: mode.hasPrefix("raw") ? "nats" : "orgsync", mode: "\(mode) p\(producers) b\(batch)", batch: batch, durable: true,
            entries_per_s: run.entriesPerSecond, p50_ms: run.latencyMs(percentile: 50), p99_ms: run.latencyMs(percentile: 99), producers: producers,
            mb_per_s: run.megabytesPerSecond, compression_ratio: nil)
    }
}

/// Three nats-servers clustered on 127.0.0.1 with JetStream, for the benchmark: started, waited
/// for until an R3 stream can be placed, stopped (SIGKILL) and their stores removed.
final class LocalNATSCluster: Sendable {
    let processes: [Process]
    let ports: [Int]
    let version: String
    var urls: [String] { ports.map { "nats://127.0.0.1:\($0)" } }

    private init(processes: [Process], ports: [Int], version: String) {
        self.processes = processes
        self.ports = ports
        self.version = version
    }

    static func start(binary: String, directory: String) async throws -> LocalNATSCluster {
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        let routes = try (0..<3).map { _ in try freeLoopbackPort() }
        let routeList = routes.map { "nats://127.0.0.1:\($0)" }.joined(separator: ",")
        var processes: [Process] = []
        for index in 0..<3 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = [
                "-n", "bench\(index + 1)", "-a", "127.0.0.1", "-p", String(ports[index]), "-js", "-sd", "\(directory)/\(index)",
                "--cluster_name", "orgsync-bench", "--cluster", "nats://127.0.0.1:\(routes[index])", "--routes", routeList,
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            processes.append(process)
        }
        let cluster = LocalNATSCluster(processes: processes, ports: ports, version: versionOf(binary))
        do {
            try await cluster.waitForPlacement()
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }

    /// Until an R3 stream can be made (every peer has joined the meta group), at most 30 s.
    func waitForPlacement() async throws {
        var options = NATSConnectionOptions(host: "127.0.0.1", port: ports[0])
        options.connectTimeoutMs = 1_000
        let deadline = nowNs() + 30_000_000_000
        while nowNs() < deadline {
            if let connection = try? await NATSConnection.connect(options) {
                let js = JetStream(connection: connection, timeoutMs: 2_000)
                let placed = (try? await js.createStream(JetStreamStreamConfig(name: "PROBE", subjects: ["probe"], storage: "memory", replicas: 3))) != nil
                if placed { try? await js.deleteStream("PROBE") }
                await connection.close()
                if placed { return }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw ValidationErrorText("the NATS cluster did not place an R3 stream within 30 s")
    }

    func stop() {
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    static func versionOf(_ binary: String) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--version"]
        let pipe = Pipe()
        process.standardOutput = pipe
        guard (try? process.run()) != nil else { return "?" }
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw ValidationErrorText("no free port on 127.0.0.1") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
