import ArgumentParser
import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import OrgSyncLog
import OrgSyncBroker
import OrgSyncServer
import OrgSyncTestCertificates
import Synchronization

struct HTTPBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http",
        abstract: "Append over HTTP: NDJSON batches from several connections, next to in-process appends of the same batches.",
        discussion: """
            Starts the broker's HTTP API in this process on 127.0.0.1 (auth off, fsync always), then \
            for each connection count sends closed-loop NDJSON requests of --batch entries with \
            AsyncHTTPClient for --seconds: entries/s, MB/s and request p50/p99 (send → 201, i.e. \
            durable), over plain HTTP and over TLS (a certificate made for the run). In the same run it \
            appends the same batches with the same concurrency straight to a StreamLog, to show what \
            HTTP and TLS cost.
            """
    )

    @OptionGroup var workload: WorkloadOptions
    @Option(help: "Seconds per scenario.") var seconds: Double = 5
    @Option(help: "Comma-separated connection counts.") var connections: String = "1,4,16"
    @Option(help: "Entries per request.") var batch: Int = 100
    @Flag(help: "Print RESULT lines instead of the Markdown table.") var json = false

    func run() async throws {
        bootstrapBenchmarkLogging()
        let (workload, _) = try self.workload.entries()
        guard workload.count >= batch else { throw ValidationErrorText("the workload has fewer than \(batch) entries") }
        let batches = workloadBatches(workload, size: batch)
        let bodies = batches.map { entries -> (ByteBuffer, Int) in
            var buffer = ByteBuffer()
            for entry in entries {
                buffer.writeBytes(entry)
                buffer.writeInteger(UInt8(0x0A))
            }
            return (buffer, byteCount(entries))
        }
        let counts = connections.split(separator: ",").compactMap { Int($0) }
        var rows: [ResultRow] = []
        for count in counts {
            rows.append(try await measureHTTP(bodies: bodies, connections: count, tls: false))
            if json, let row = rows.last { print(resultLine(row)) }
            rows.append(try await measureHTTP(bodies: bodies, connections: count, tls: true))
            if json, let row = rows.last { print(resultLine(row)) }
            rows.append(try await measureInProcess(batches: batches, connections: count))
            if json, let row = rows.last { print(resultLine(row)) }
        }
        if !json {
            print("<!-- load \(loadAverage()); \(batch) entries per request; fsync always -->")
            print("| path | producers | entries/request | entries/s | MB/s | p50 ms | p99 ms |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
            for row in rows {
                print("| \(row.mode) | \(row.producers) | \(row.batch) | \(fmt(row.entries_per_s, 0)) | \(fmt(row.mb_per_s)) | \(fmt(row.p50_ms, 3)) | \(fmt(row.p99_ms, 3)) |")
            }
        }
    }

    /// Appends through the broker's own HTTP server (`brokerHTTPServer`), over TLS (a P-256
    /// certificate made for the run, TLS 1.3, kept-alive connections) when `tls`.
    func measureHTTP(bodies: [(ByteBuffer, Int)], connections: Int, tls: Bool) async throws -> ResultRow {
        let directory = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var config = try BrokerConfiguration.parse(yaml: "auth: { enabled: false }\nstreams: [ { name: events } ]\n")
        config.server.port = 0
        let logger = Logger(label: "bench")
        let broker = try Broker(configuration: config, dataDirectory: directory + "/state", metrics: BrokerMetrics(), logger: logger)
        let router = buildRouter(broker: broker, authenticator: Authenticator(configuration: config, environment: [:]))
        var certificate: ServerCertificate?
        var clientTLS: TLSConfiguration?
        if tls {
            let authority = try TestCertificates(directory: directory, name: "benchmark CA", file: "benchmark")
            let issued = try authority.issue("server", hosts: ["127.0.0.1"])
            certificate = try ServerCertificate(.init(certFile: issued.certificateFile, keyFile: issued.keyFile))
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .file(authority.caFile)
            clientTLS = configuration
        }
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, server: try brokerHTTPServer(config.server, certificate: certificate, logger: logger),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portContinuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        let server = Task { try await app.run() }
        defer { server.cancel() }
        var ports = portStream.makeAsyncIterator()
        guard let port = await ports.next(), port > 0 else { throw ValidationErrorText("the server did not start") }

        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.tlsConfiguration = clientTLS
        clientConfiguration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)
        defer { _ = client.shutdown() }
        let url = "\(tls ? "https" : "http")://127.0.0.1:\(port)/v1/streams/events/entries"
        let next = Counter()
        let batch = self.batch
        let run = try await runClosedLoop(producers: connections, seconds: seconds) { _ in
            {
                let (body, size) = bodies[next.next() % bodies.count]
                var request = HTTPClientRequest(url: url)
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/x-ndjson")
                request.body = .bytes(body)
                let response = try await client.execute(request, timeout: .seconds(30))
                _ = try await response.body.collect(upTo: 1 << 16)
                guard response.status == .created else { throw ValidationErrorText("HTTP \(response.status.code)") }
                return (batch, size)
            }
        }
        try await client.shutdown()
        server.cancel()
        await broker.close()
        return ResultRow(mode: "\(tls ? "https" : "http") ndjson c\(connections)", batch: batch, durable: true,
                         entries_per_s: run.entriesPerSecond, p50_ms: run.latencyMs(percentile: 50), p99_ms: run.latencyMs(percentile: 99),
                         producers: connections, mb_per_s: run.megabytesPerSecond, compression_ratio: nil)
    }

    func measureInProcess(batches: [[[UInt8]]], connections: Int) async throws -> ResultRow {
        let directory = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try StreamLog.open(dataDirectory: directory, name: "events")
        let next = Counter()
        let run = try await runClosedLoop(producers: connections, seconds: seconds) { _ in
            {
                let slice = batches[next.next() % batches.count]
                _ = try await log.append(slice)
                return (slice.count, byteCount(slice))
            }
        }
        await log.close()
        return ResultRow(mode: "in-process append c\(connections)", batch: batch, durable: true,
                         entries_per_s: run.entriesPerSecond, p50_ms: run.latencyMs(percentile: 50), p99_ms: run.latencyMs(percentile: 99),
                         producers: connections, mb_per_s: run.megabytesPerSecond, compression_ratio: nil)
    }
}
