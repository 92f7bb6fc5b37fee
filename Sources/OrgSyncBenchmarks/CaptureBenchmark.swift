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
    @Option(help: "Latency run: single-row transactions per second committed on the source (0: no latency run).")
    var latencyRate = 200
    @Option(help: "Latency run: how long the source is written, in seconds.") var latencySeconds = 20
    @Option(help: "Latency run: the source's poll_ms.") var pollMs = 200

    func validate() throws {
        guard count >= 1, batch >= 1, rounds >= 1, latencyRate >= 0, latencySeconds >= 1, pollMs >= 1 else {
            throw ValidationError("--count, --batch, --rounds, --latency-seconds and --poll-ms must be positive; --latency-rate not negative")
        }
    }

    func run() async throws {
        bootstrapBenchmarkLogging()
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
        guard latencyRate > 0 else { return }
        let latency = try await measureLatency(settings, logger: logger)
        print("")
        print("<!-- commit → applied: \(latency.rows) single-row transactions at \(latencyRate)/s for \(latencySeconds) s; source poll_ms \(pollMs); a postgres link into another schema -->")
        print("| commit → applied in the target | p50 | p99 | max |")
        print("| --- | ---: | ---: | ---: |")
        print("| source (poll_ms \(pollMs)) → log → link | \(latency.p50) ms | \(latency.p99) ms | \(latency.max) ms |")
    }

    /// Commits single-row transactions at `latencyRate` per second on a source table while a
    /// source captures them and a `postgres` link applies them into another schema; the target
    /// table stamps each row when it arrives (`clock_timestamp()`, same server clock as the
    /// source's stamp at commit), and the percentiles of the difference are the answer.
    private func measureLatency(_ settings: PostgresAdapterSettings, logger: Logger) async throws -> (rows: Int, p50: Int, p99: Int, max: Int) {
        let tag = "bench_lat_\(UInt32.random(in: 0...UInt32.max))"
        let connection = try await PostgresBenchmarkServer.connect(settings, logger: logger)
        func execute(_ sql: String) async throws { try await connection.run(sql, logger: logger) }
        let directory = try makeTempDir()
        let target = tag + "_b"
        let rows = latencyRate * latencySeconds
        var result = (rows: rows, p50: 0, p99: 0, max: 0)
        do {
            try await execute("CREATE SCHEMA \(tag)")
            try await execute("CREATE TABLE \(tag).items (id bigint PRIMARY KEY, name text, written_at text NOT NULL DEFAULT clock_timestamp()::text)")
            try await execute("CREATE SCHEMA \(target)")
            // The link's table, made ahead with a column the adapter does not write: arrival time.
            try await execute("""
                CREATE TABLE \(target)."\(tag).items" (key text PRIMARY KEY, org text NOT NULL, ts text NOT NULL, id bigint, name text,
                    written_at text, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())
                """)
            let log = try StreamLog.open(dataDirectory: directory, name: "captured", logger: logger)
            var connectionSettings = ["host": settings.host, "port": String(settings.port), "user": settings.user, "database": settings.database,
                                      "sslmode": "disable"]
            if let password = settings.password { connectionSettings["password"] = password }
            let source = try PostgresSourceFactory().makeSource(AdapterConfiguration(
                linkName: tag, streamName: "captured",
                settings: connectionSettings.merging(["tables": "\(tag).items", "snapshot": "never", "poll_ms": String(pollMs)]) { $1 },
                dataDirectory: directory))
            let sourceSupervisor = try SourceSupervisor(name: tag, source: source, stream: StreamLogCaptureStream(log: log), logger: logger)
            let adapter = try PostgresAdapterFactory().makeAdapter(AdapterConfiguration(
                linkName: tag, streamName: "captured", settings: connectionSettings.merging(["schema": target]) { $1 }, dataDirectory: directory))
            let link = try LinkSupervisor(
                name: tag, source: StreamLogLinkSource(log: log), adapter: adapter, cursorStore: StreamLogCursorStore(log: log), logger: logger)
            let sourceRun = Task { try await sourceSupervisor.run() }
            let linkRun = Task { try await link.run() }
            // Wait for the slot: the source's first round.
            while await sourceSupervisor.status().rounds == 0 { try await Task.sleep(for: .milliseconds(10)) }
            let start = ContinuousClock.now
            for i in 0..<rows {
                try await Task.sleep(until: start + .microseconds(Int64(i) * 1_000_000 / Int64(latencyRate)), clock: .continuous)
                try await execute("INSERT INTO \(tag).items (id, name) VALUES (\(i), 'row \(i)')")
            }
            let deadline = ContinuousClock.now + .seconds(60)
            var applied: Int64 = 0
            while applied < Int64(rows), ContinuousClock.now < deadline {
                for try await count in try await connection.query(
                    PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(target).\"\(tag).items\""), logger: logger).decode(Int64.self) { applied = count }
                if applied < Int64(rows) { try await Task.sleep(for: .milliseconds(50)) }
            }
            guard applied == Int64(rows) else { throw CaptureBenchmarkError("only \(applied) of \(rows) rows applied within 60 s") }
            let sql = """
                SELECT (percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::bigint, (percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::bigint,
                       max(ms)::bigint
                FROM (SELECT extract(epoch FROM applied_at - written_at::timestamptz) * 1000 AS ms FROM \(target)."\(tag).items") AS l
                """
            for try await (p50, p99, max) in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode((Int64, Int64, Int64).self) {
                result = (rows, Int(p50), Int(p99), Int(max))
            }
            sourceRun.cancel()
            linkRun.cancel()
            _ = await (sourceRun.result, linkRun.result)
            await log.close()
        } catch {
            await cleanUp(connection, tag: tag, directory: directory, logger: logger, schemas: [target])
            throw error
        }
        await cleanUp(connection, tag: tag, directory: directory, logger: logger, schemas: [target])
        return result
    }

    private func measure(_ settings: PostgresAdapterSettings, round: Int, logger: Logger) async throws -> (Double, Double) {
        let tag = "bench_cap_\(UInt32.random(in: 0...UInt32.max))"
        let connection = try await PostgresBenchmarkServer.connect(settings, logger: logger)
        func execute(_ sql: String) async throws { try await connection.run(sql, logger: logger) }
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

    private func cleanUp(_ connection: PostgresConnection, tag: String, directory: String, logger: Logger, schemas: [String] = []) async {
        for slot in [tag, tag + "_server"] {
            _ = try? await connection.query(
                PostgresQuery(unsafeSQL: "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '\(slot)'"),
                logger: logger
            ).collect()
        }
        _ = try? await connection.query(PostgresQuery(unsafeSQL: "DROP PUBLICATION IF EXISTS \(tag)"), logger: logger).collect()
        for schema in [tag] + schemas {
            _ = try? await connection.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE"), logger: logger).collect()
        }
        _ = try? await connection.query(
            PostgresQuery(unsafeSQL: "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'orgsync_\(tag)'"),
            logger: logger
        ).collect()
        _ = try? await connection.query(PostgresQuery(unsafeSQL: "DROP PUBLICATION IF EXISTS orgsync_\(tag)"), logger: logger).collect()
        try? await connection.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

extension PostgresConnection {
    /// Runs one statement of SQL text, reading any rows to the end.
    func run(_ sql: String, logger: Logger) async throws {
        _ = try await query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
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
