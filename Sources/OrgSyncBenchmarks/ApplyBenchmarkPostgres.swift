import Foundation
import Logging
import OrgSyncPluginAPI
import PostgresAdapter
import PostgresNIO

/// `apply` benchmark for PostgreSQL: the shared workload applied through ``PostgresAdapter`` in
/// batches, against the same rows upserted straight with postgres-nio in batches of the same
/// size (one transaction per batch, one statement per row, no orgsync), in the same run and the
/// same database. Each round uses fresh schemas; rounds alternate which side goes first, and the
/// best round of each side counts.
///
/// What the adapter does beyond the straight path: the offsets row (lock + update per batch),
/// table/column checks, type checks, and rejected entries (an `insert` of a key that exists,
/// which the workload has, is rejected and dead-lettered, and its batch re-applied without it,
/// as the link does). The straight path turns every insert into an upsert and never rejects.
/// Run it with `primary_key = org_key` on the shared workload: its keys are unique per org
/// only, and with `key` alone about one entry in ten is an insert of another org's key.
struct ApplyBenchmarkPostgres {
    struct Result: Sendable, CustomStringConvertible {
        var entryCount: Int
        var batchSize: Int
        var adapterEntriesPerSecond: Double
        var straightEntriesPerSecond: Double
        /// Entries the adapter rejected (and the benchmark skipped, as the link would).
        var rejectedCount: Int

        var ratio: Double { straightEntriesPerSecond > 0 ? adapterEntriesPerSecond / straightEntriesPerSecond : 0 }

        var description: String {
            String(
                format: "postgres apply: %d entries, batch %d: orgsync %.0f entries/s, straight postgres-nio %.0f entries/s (%.0f%%), %d rejected",
                entryCount, batchSize, adapterEntriesPerSecond, straightEntriesPerSecond, ratio * 100, rejectedCount)
        }

        /// `| adapter | entries | batch | orgsync/s | straight/s | ratio |`
        var markdownRow: String {
            String(
                format: "| postgres | %d | %d | %.0f | %.0f | %.0f%% |", entryCount, batchSize, adapterEntriesPerSecond,
                straightEntriesPerSecond, ratio * 100)
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    var settings: PostgresAdapterSettings
    var batchSize = 500
    var roundCount = 2
    private let logger = Logger(label: "orgsync.bench.postgres")

    init(settings: PostgresAdapterSettings, batchSize: Int = 500, roundCount: Int = 2) {
        self.settings = settings
        self.batchSize = max(1, batchSize)
        self.roundCount = max(1, roundCount)
    }

    /// Generates `count` workload entries with the shared generator into `outputPath`.
    static func generateWorkload(generator: String, count: Int, outputPath: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", generator, "--count", String(count), "--out", outputPath]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(generator) exited with \(process.terminationStatus)")
        }
    }

    /// The first `count` entries of a JSON Lines file, with offsets 0, 1, 2, …
    static func loadWorkload(path: String, count: Int) throws -> [Entry] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) where entries.count < count {
            do {
                entries.append(try Entry.parse(Array(line.utf8), offset: Offset(UInt64(entries.count))))
            } catch {
                throw Failure(description: "\(path) line \(entries.count + 1): \(error)")
            }
        }
        return entries
    }

    func run(_ entries: [Entry]) async throws -> Result {
        var bestAdapter = 0.0
        var bestStraight = 0.0
        var rejected = 0
        let admin = try await connect()
        for round in 0..<roundCount {
            let tag = "\(UInt32.random(in: 0...UInt32.max))"
            let adapterSchema = "bench_orgsync_\(tag)"
            let straightSchema = "bench_straight_\(tag)"
            do {
                // The straight side needs the tables first; make them by applying through the
                // adapter once, untimed, and copying their shapes.
                let shapesSchema = "bench_shapes_\(tag)"
                _ = try await applyThroughAdapter(entries, schema: shapesSchema)
                let columns = try await copyTables(from: shapesSchema, to: straightSchema, on: admin)
                try await admin.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \"\(shapesSchema)\" CASCADE"), logger: logger)

                var adapterRate = 0.0
                var straightRate = 0.0
                if round % 2 == 0 {
                    (adapterRate, rejected) = try await timedAdapter(entries, schema: adapterSchema)
                    straightRate = try await timedStraight(entries, schema: straightSchema, columns: columns)
                } else {
                    straightRate = try await timedStraight(entries, schema: straightSchema, columns: columns)
                    (adapterRate, rejected) = try await timedAdapter(entries, schema: adapterSchema)
                }
                bestAdapter = max(bestAdapter, adapterRate)
                bestStraight = max(bestStraight, straightRate)
                let adapterRows = try await rowCount(schema: adapterSchema, on: admin)
                let straightRows = try await rowCount(schema: straightSchema, on: admin)
                if adapterRows != straightRows {
                    // The same rows must end up in both, or the comparison means nothing.
                    throw Failure(description: "row counts differ: orgsync \(adapterRows), straight \(straightRows)")
                }
            } catch {
                await drop([adapterSchema, straightSchema], on: admin)
                try? await admin.close()
                throw error
            }
            await drop([adapterSchema, straightSchema], on: admin)
        }
        try? await admin.close()
        return Result(
            entryCount: entries.count, batchSize: batchSize, adapterEntriesPerSecond: bestAdapter,
            straightEntriesPerSecond: bestStraight, rejectedCount: rejected)
    }

    // MARK: orgsync side

    private func timedAdapter(_ entries: [Entry], schema: String) async throws -> (Double, Int) {
        let started = ContinuousClock.now
        let rejected = try await applyThroughAdapter(entries, schema: schema)
        return (rate(entries.count, since: started), rejected)
    }

    /// Applies in batches like a link: on a rejection, re-apply the batch without that entry.
    private func applyThroughAdapter(_ entries: [Entry], schema: String) async throws -> Int {
        var adapterSettings = settings
        adapterSettings.schema = schema
        let adapter = PostgresAdapter(linkName: "bench", settings: adapterSettings)
        try await adapter.open()
        var rejected = 0
        var start = 0
        while start < entries.count {
            var pending = Array(entries[start..<min(start + batchSize, entries.count)])
            while !pending.isEmpty {
                do {
                    try await adapter.apply(EntryBatch(stream: "bench", entries: pending))
                    pending = []
                } catch let error as AdapterError {
                    guard case .rejected(let offset) = error.kind else {
                        await adapter.close()
                        throw error
                    }
                    rejected += 1
                    pending.removeAll { $0.offset == offset }
                }
            }
            start += batchSize
        }
        await adapter.close()
        return rejected
    }

    // MARK: straight side

    private func timedStraight(_ entries: [Entry], schema: String, columns: [String: Set<String>]) async throws -> Double {
        let connection = try await connect()
        let started = ContinuousClock.now
        var start = 0
        do {
            while start < entries.count {
                try await connection.query("BEGIN", logger: logger)
                for entry in entries[start..<min(start + batchSize, entries.count)] {
                    try await connection.query(straightStatement(entry, schema: schema, columns: columns), logger: logger)
                }
                try await connection.query("COMMIT", logger: logger)
                start += batchSize
            }
        } catch {
            try? await connection.close()
            throw error
        }
        let elapsed = rate(entries.count, since: started)
        try? await connection.close()
        return elapsed
    }

    /// A plain upsert (or delete) of the entry's row, as someone without orgsync would write it.
    private func straightStatement(_ entry: Entry, schema: String, columns: [String: Set<String>]) -> PostgresQuery {
        let table = "\"\(schema)\".\"\(entry.object)\""
        var binds = PostgresBindings()
        binds.append(entry.key)
        let byOrg = settings.primaryKey == .orgKey
        if entry.op == .delete {
            guard byOrg else { return PostgresQuery(unsafeSQL: "DELETE FROM \(table) WHERE \"key\" = $1", binds: binds) }
            binds.append(entry.org)
            return PostgresQuery(unsafeSQL: "DELETE FROM \(table) WHERE \"key\" = $1 AND \"org\" = $2", binds: binds)
        }
        binds.append(entry.org)
        binds.append(entry.ts)
        var names = "\"key\", \"org\", \"ts\""
        var values = "$1, $2, $3"
        var updates = byOrg ? "\"ts\" = EXCLUDED.\"ts\"" : "\"org\" = EXCLUDED.\"org\", \"ts\" = EXCLUDED.\"ts\""
        let known = columns[entry.object] ?? []
        for (name, value) in entry.fields.sorted(by: { $0.key < $1.key }) where known.contains(name) {
            switch value {
            case .null: binds.appendNull()
            case .string(let text): binds.append(text)
            case .int(let number): binds.append(number)
            case .double(let number): binds.append(number)
            case .bool(let flag): binds.append(flag)
            case .array, .object: binds.append(String(decoding: (try? JSONEncoder().encode(value)) ?? Data(), as: UTF8.self))
            }
            names += ", \"\(name)\""
            values += ", $\(binds.count)"
            updates += ", \"\(name)\" = EXCLUDED.\"\(name)\""
        }
        return PostgresQuery(
            unsafeSQL: "INSERT INTO \(table) (\(names)) VALUES (\(values)) ON CONFLICT (\(byOrg ? "\"org\", \"key\"" : "\"key\"")) DO UPDATE SET \(updates)",
            binds: binds)
    }

    // MARK: Helpers

    private func connect() async throws -> PostgresConnection {
        let configuration = PostgresConnection.Configuration(
            host: settings.host, port: settings.port, username: settings.user, password: settings.password,
            database: settings.database, tls: .disable)
        return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
    }

    /// Copies every table of `source` (structure only) into a new schema; returns their columns.
    private func copyTables(from source: String, to target: String, on connection: PostgresConnection) async throws -> [String: Set<String>] {
        try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA \"\(target)\""), logger: logger)
        var columns: [String: Set<String>] = [:]
        let rows = try await connection.query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = \(source) AND table_name <> 'orgsync_offsets'",
            logger: logger)
        for try await (table, column) in rows.decode((String, String).self) { columns[table, default: []].insert(column) }
        for table in columns.keys.sorted() {
            try await connection.query(
                PostgresQuery(unsafeSQL: "CREATE TABLE \"\(target)\".\"\(table)\" (LIKE \"\(source)\".\"\(table)\" INCLUDING ALL)"),
                logger: logger)
        }
        return columns
    }

    private func rowCount(schema: String, on connection: PostgresConnection) async throws -> Int64 {
        var total: Int64 = 0
        let rows = try await connection.query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = \(schema) AND table_name <> 'orgsync_offsets'",
            logger: logger)
        var tables: [String] = []
        for try await table in rows.decode(String.self) { tables.append(table) }
        for table in tables {
            let counted = try await connection.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \"\(schema)\".\"\(table)\""), logger: logger)
            for try await count in counted.decode(Int64.self) { total += count }
        }
        return total
    }

    private func drop(_ schemas: [String], on connection: PostgresConnection) async {
        for schema in schemas {
            _ = try? await connection.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE"), logger: logger)
        }
    }

    private func rate(_ count: Int, since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return seconds > 0 ? Double(count) / seconds : 0
    }
}
