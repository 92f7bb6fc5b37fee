import Foundation
import Logging
import OrgSyncPluginAPI
import PostgresAdapter
import PostgresNIO

/// `apply` benchmark for PostgreSQL: the seeded workload applied through ``PostgresAdapter`` in
/// batches, against the same rows upserted straight with postgres-nio in batches of the same
/// size (one transaction per batch, one statement per row, no orgsync), in the same run and the
/// same database. The two sides go batch by batch in turn (alternating which goes first), each
/// timed on its own, so load from elsewhere on the machine falls on both alike. Each round uses
/// fresh schemas; the best round of each side counts.
///
/// What the adapter does beyond the straight path: the offsets row (lock + update per batch),
/// table/column checks, type checks, and rejected entries (an `insert` of a key that exists,
/// which the workload has, is rejected and dead-lettered, and its batch re-applied without it,
/// as the link does). The straight path turns every insert into an upsert and never rejects.
/// Run it with `primary_key = org_key` on the seeded workload: its keys are unique per org
/// only, and with `key` alone about one entry in ten is an insert of another org's key.
struct ApplyBenchmarkPostgres {
    struct Result: Sendable, CustomStringConvertible {
        /// What was measured: `postgres`, or `postgres verify-full` for the adapter over TLS.
        var label = "postgres"
        var entryCount: Int
        var batchSize: Int
        var adapterEntriesPerSecond: Double
        var straightEntriesPerSecond: Double
        /// Entries the adapter rejected (and the benchmark skipped, as the link would).
        var rejectedCount: Int
        /// Rows in the adapter's tables afterwards.
        var rowCount: Int64 = 0

        var ratio: Double { straightEntriesPerSecond > 0 ? adapterEntriesPerSecond / straightEntriesPerSecond : 0 }

        var description: String {
            String(
                format: "%@ apply: %d entries, batch %d: orgsync %.0f entries/s, straight postgres-nio %.0f entries/s (%.0f%%), %d rejected",
                label, entryCount, batchSize, adapterEntriesPerSecond, straightEntriesPerSecond, ratio * 100, rejectedCount)
        }

        /// `| adapter | entries | batch | orgsync/s | straight/s | ratio |`
        var markdownRow: String {
            String(
                format: "| %@ | %d | %d | %.0f | %.0f | %.0f%% |", label, entryCount, batchSize, adapterEntriesPerSecond,
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

    func run(_ entries: [Entry]) async throws -> Result {
        var bestAdapter = 0.0
        var bestStraight = 0.0
        var rejected = 0
        var rows: Int64 = 0
        let admin = try await connect()
        for _ in 0..<roundCount {
            let tag = "\(UInt32.random(in: 0...UInt32.max))"
            let adapterSchema = "bench_orgsync_\(tag)"
            let straightSchema = "bench_straight_\(tag)"
            let shapesSchema = "bench_shapes_\(tag)"
            do {
                // The straight side needs the tables first; make them by applying through the
                // adapter once, untimed, and copying their shapes.
                _ = try await applyThroughAdapter(entries, schema: shapesSchema)
                let columns = try await copyTables(from: shapesSchema, to: straightSchema, on: admin)
                try await admin.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \"\(shapesSchema)\" CASCADE"), logger: logger)
                let round = try await interleaved(entries, adapterSchema: adapterSchema, straightSchema: straightSchema, columns: columns)
                bestAdapter = max(bestAdapter, round.adapter)
                bestStraight = max(bestStraight, round.straight)
                rejected = round.rejected
                let adapterRows = try await rowCount(schema: adapterSchema, on: admin)
                let straightRows = try await rowCount(schema: straightSchema, on: admin)
                if adapterRows != straightRows {
                    // The same rows must end up in both, or the comparison means nothing.
                    throw Failure(description: "row counts differ: orgsync \(adapterRows), straight \(straightRows)")
                }
                rows = adapterRows
            } catch {
                await drop([adapterSchema, straightSchema, shapesSchema], on: admin)
                try? await admin.close()
                throw error
            }
            await drop([adapterSchema, straightSchema], on: admin)
        }
        try? await admin.close()
        return Result(
            label: "postgres \(settings.batchWrites.rawValue)" + (settings.tls.mode == .disable ? "" : " \(settings.tls.mode.rawValue)"), entryCount: entries.count, batchSize: batchSize, adapterEntriesPerSecond: bestAdapter,
            straightEntriesPerSecond: bestStraight, rejectedCount: rejected, rowCount: rows)
    }

    /// Both sides batch by batch, alternating which goes first, each timed on its own: on a
    /// shared, loaded machine both then see the same load, and the ratio stays meaningful.
    private func interleaved(
        _ entries: [Entry], adapterSchema: String, straightSchema: String, columns: [String: Set<String>]
    ) async throws -> (adapter: Double, straight: Double, rejected: Int) {
        var adapterSettings = settings
        adapterSettings.schema = adapterSchema
        let adapter = PostgresAdapter(linkName: "bench", settings: adapterSettings)
        let connection: PostgresConnection
        do {
            try await adapter.open()
            connection = try await connect()
        } catch {
            await adapter.close()
            throw error
        }
        var adapterTime = Duration.zero
        var straightTime = Duration.zero
        var rejected = 0
        do {
            var start = 0
            var index = 0
            while start < entries.count {
                let batch = Array(entries[start..<min(start + batchSize, entries.count)])
                for side in (index % 2 == 0 ? [0, 1] : [1, 0]) {
                    let started = ContinuousClock.now
                    if side == 0 {
                        rejected += try await applyLikeALink(batch, to: adapter)
                        adapterTime += ContinuousClock.now - started
                    } else {
                        try await applyStraight(batch, on: connection, schema: straightSchema, columns: columns)
                        straightTime += ContinuousClock.now - started
                    }
                }
                start += batchSize
                index += 1
            }
        } catch {
            await adapter.close()
            try? await connection.close()
            throw error
        }
        await adapter.close()
        try? await connection.close()
        return (rate(entries.count, over: adapterTime), rate(entries.count, over: straightTime), rejected)
    }

    // MARK: orgsync side

    /// Applies in batches like a link: on a rejection, re-apply the batch without that entry.
    private func applyThroughAdapter(_ entries: [Entry], schema: String) async throws -> Int {
        var adapterSettings = settings
        adapterSettings.schema = schema
        let adapter = PostgresAdapter(linkName: "bench", settings: adapterSettings)
        var rejected = 0
        do {
            try await adapter.open()
            var start = 0
            while start < entries.count {
                rejected += try await applyLikeALink(Array(entries[start..<min(start + batchSize, entries.count)]), to: adapter)
                start += batchSize
            }
        } catch {
            await adapter.close()
            throw error
        }
        await adapter.close()
        return rejected
    }

    /// One batch as the link applies it: a rejected entry is left out and the rest sent again.
    private func applyLikeALink(_ batch: [Entry], to adapter: PostgresAdapter) async throws -> Int {
        var pending = batch
        var rejected = 0
        while !pending.isEmpty {
            do {
                try await adapter.apply(EntryBatch(stream: "bench", identity: benchIdentity, entries: pending))
                pending = []
            } catch let error as AdapterError {
                guard case .rejected(let offset) = error.kind else { throw error }
                rejected += 1
                pending.removeAll { $0.offset == offset }
            }
        }
        return rejected
    }

    // MARK: straight side

    /// One batch in one transaction, one plain statement per row.
    private func applyStraight(
        _ batch: [Entry], on connection: PostgresConnection, schema: String, columns: [String: Set<String>]
    ) async throws {
        try await connection.query("BEGIN", logger: logger)
        for entry in batch {
            try await connection.query(straightStatement(entry, schema: schema, columns: columns), logger: logger)
        }
        try await connection.query("COMMIT", logger: logger)
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
        try await PostgresBenchmarkServer.connect(settings, logger: logger)
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

    private func rate(_ count: Int, over elapsed: Duration) -> Double {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return seconds > 0 ? Double(count) / seconds : 0
    }
}
