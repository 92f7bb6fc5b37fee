import ArgumentParser
import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import PostgresAdapter
import PostgresNIO

/// `OrgSyncBenchmarks capture`: committed changes of a PostgreSQL table captured into a segment
/// log (`postgres` source, durable appends) next to the server's own decoding rate in the same
/// run: `pg_recvlogical` streaming the same changes through pgoutput from a second slot, writing
/// them nowhere (`-f /dev/null`).
struct CaptureBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Capture from PostgreSQL into the log vs pg_recvlogical on the same changes (changes/s, ratio).",
        discussion: """
            Uses the server of ORGSYNC_TEST_PG_HOST/PORT/USER/PASSWORD/DB (`source .ci/postgres.sh`; \
            wal_level = logical). Per round: a fresh schema and table, two slots made before the \
            changes, --count rows inserted and then each updated once (transactions of --batch rows), \
            then pg_recvlogical reads one slot up to the last change and the source reads the other \
            into a log under a temp dir (fsync always). Target: the source ≥ 50 % of pg_recvlogical.
            """)

    @Option(help: "Rows inserted (and then updated): 2 × count changes.") var count = 50_000
    @Option(help: "Rows per source transaction.") var batch = 500
    @Option(help: "Rounds; the best of each side counts.") var rounds = 2
    @Option(help: "pg_recvlogical to run.") var pgRecvlogical = "/usr/lib/postgresql/15/bin/pg_recvlogical"

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        guard let settings = PostgresBenchmarkServer.settings() else {
            print("capture: skipped: \(PostgresBenchmarkServer.missingMessage)")
            return
        }
        let logger = Logger(label: "orgsync.bench.capture")
        var best: (source: Double, server: Double) = (0, 0)
        for round in 1...rounds {
            let (source, server) = try await measure(settings, round: round, logger: logger)
            print("round \(round): source \(Int(source)) changes/s, pg_recvlogical \(Int(server)) changes/s")
            best = (max(best.source, source), max(best.server, server))
        }
        print("<!-- capture: \(2 * count) changes in transactions of \(batch) rows; \(ProcessInfo.processInfo.activeProcessorCount) cores; load \(loadAverage()) -->")
        print("| path | changes/s | ÷ pg_recvlogical |")
        print("| --- | ---: | ---: |")
        print("| `postgres` source → segment log (fsync always) | \(Int(best.source)) | \(Int(100 * best.source / max(best.server, 1))) % |")
        print("| pg_recvlogical (pgoutput, to /dev/null) | \(Int(best.server)) | — |")
    }

    private func measure(_ settings: PostgresAdapterSettings, round: Int, logger: Logger) async throws -> (Double, Double) {
        let tag = "bench_cap_\(UInt32.random(in: 0...UInt32.max))"
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: settings.host, port: settings.port, username: settings.user, password: settings.password,
                                 database: settings.database, tls: .disable),
            id: 1, logger: logger)
        func execute(_ sql: String) async throws {
            _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
        }
        let directory = try makeTempDir()
        var result: (Double, Double) = (0, 0)
        do {
            try await execute("CREATE SCHEMA \(tag)")
            try await execute("CREATE TABLE \(tag).items (id bigint PRIMARY KEY, name text, qty int, amount numeric(12,2), note text)")
            try await execute("CREATE PUBLICATION \(tag) FOR TABLE \(tag).items")
            // Both slots before the changes: each has all of them to decode.
            try await execute("SELECT pg_create_logical_replication_slot('\(tag)', 'pgoutput')")
            try await execute("SELECT pg_create_logical_replication_slot('\(tag)_server', 'pgoutput')")
            var first = 1
            while first <= count {
                let last = min(count, first + batch - 1)
                try await execute("INSERT INTO \(tag).items SELECT i, 'name ' || i, i % 1000, i * 1.25, md5(i::text) FROM generate_series(\(first), \(last)) i")
                first = last + 1
            }
            first = 1
            while first <= count {
                let last = min(count, first + batch - 1)
                try await execute("UPDATE \(tag).items SET qty = qty + 1, note = 'updated' WHERE id BETWEEN \(first) AND \(last)")
                first = last + 1
            }
            var endLSN = ""
            for try await text in try await connection.query("SELECT pg_current_wal_lsn()::text", logger: logger).decode(String.self) { endLSN = text }

            let server = try await recvlogical(settings, slot: tag + "_server", publication: tag, endLSN: endLSN)
            let source = try await captureIntoLog(settings, tag: tag, directory: directory, changes: 2 * count, logger: logger)
            result = (Double(2 * count) / source, Double(2 * count) / server)
        } catch {
            await cleanUp(connection, tag: tag, directory: directory, logger: logger)
            throw error
        }
        await cleanUp(connection, tag: tag, directory: directory, logger: logger)
        return result
    }

    /// Seconds the server takes to decode and send every change of `slot` to `pg_recvlogical`.
    private func recvlogical(_ settings: PostgresAdapterSettings, slot: String, publication: String, endLSN: String) async throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: pgRecvlogical)
        process.arguments = [
            "-h", settings.host, "-p", String(settings.port), "-U", settings.user, "-d", settings.database, "-S", slot,
            "--start", "--no-loop", "-E", endLSN, "-f", "/dev/null", "-o", "proto_version=1", "-o", "publication_names=\(publication)",
        ]
        var environment = ProcessInfo.processInfo.environment
        if let password = settings.password { environment["PGPASSWORD"] = password }
        process.environment = environment
        let start = ContinuousClock.now
        try process.run()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                process.waitUntilExit()
                continuation.resume()
            }
        }
        guard process.terminationStatus == 0 else { throw CaptureBenchmarkError("pg_recvlogical exited \(process.terminationStatus)") }
        return (ContinuousClock.now - start).seconds
    }

    /// Seconds the `postgres` source takes to put `changes` changes durably into a fresh log.
    private func captureIntoLog(_ settings: PostgresAdapterSettings, tag: String, directory: String, changes: Int, logger: Logger) async throws -> Double {
        let log = try StreamLog.open(dataDirectory: directory, name: "captured", logger: logger)
        var sourceSettings = [
            "host": settings.host, "port": String(settings.port), "user": settings.user, "database": settings.database,
            "slot": tag, "publication": tag, "snapshot": "never", "poll_ms": "10", "sslmode": "disable",
        ]
        if let password = settings.password { sourceSettings["password"] = password }
        let source = try PostgresSourceFactory().makeSource(AdapterConfiguration(
            linkName: tag, streamName: "captured", settings: sourceSettings, dataDirectory: directory))
        let supervisor = try SourceSupervisor(name: tag, source: source, stream: StreamLogCaptureStream(log: log), logger: logger)
        let start = ContinuousClock.now
        let run = Task { try await supervisor.run() }
        try await log.waitForEntries(after: UInt64(changes - 1))
        let seconds = (ContinuousClock.now - start).seconds
        run.cancel()
        _ = await run.result
        await log.close()
        return seconds
    }

    private func cleanUp(_ connection: PostgresConnection, tag: String, directory: String, logger: Logger) async {
        for slot in [tag, tag + "_server"] {
            _ = try? await connection.query(
                PostgresQuery(unsafeSQL: "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '\(slot)'"),
                logger: logger
            ).collect()
        }
        _ = try? await connection.query(PostgresQuery(unsafeSQL: "DROP PUBLICATION IF EXISTS \(tag)"), logger: logger).collect()
        _ = try? await connection.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(tag) CASCADE"), logger: logger).collect()
        try? await connection.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

struct CaptureBenchmarkError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
