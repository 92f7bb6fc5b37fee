import Foundation
import GRDB
import Logging
import OrgSyncCore
import OrgSyncPluginAPI
import SQLiteAdapter

/// What `OrgSyncBenchmarks apply` measures for the `sqlite` adapter.
struct ApplyBenchmarkSQLiteOptions: Sendable {
    /// The workload, parsed.
    var entries: [Entry]
    /// Where the benchmark's databases go (created if missing; files are replaced).
    var workDirectory: String
    /// Entries per batch (one transaction each), for both the adapter and the straight run.
    var batchSize: Int = 500
    /// `org_key`: the seeded workload's keys are unique per org only.
    var primaryKey: SQLitePrimaryKey = .orgKey
    /// Each measurement runs this many times; the best (fastest) run counts.
    var roundCount: Int = 2
    /// `plugins/examples` (holding `python-sqlite`), to measure the out-of-process overhead;
    /// nil to skip that part.
    var pythonPluginsDirectory: String?
    /// Batches and batch size of the out-of-process comparison.
    var outOfProcessBatchCount: Int = 200
    var outOfProcessBatchSize: Int = 100
}

/// Entries/s through the adapter and straight through GRDB, and the out-of-process overhead.
struct ApplyBenchmarkSQLiteResult: Sendable {
    var entryCount: Int
    var batchSize: Int
    var adapterSeconds: Double
    var straightSeconds: Double
    /// Entries the adapter rejected (dead-lettered, as the link would), expected 0.
    var rejectedCount: Int
    var outOfProcess: OutOfProcessOverhead?

    var adapterEntriesPerSecond: Double { Double(entryCount) / adapterSeconds }
    var straightEntriesPerSecond: Double { Double(entryCount) / straightSeconds }
    /// orgsync's rate as a share of the straight rate (target ≥ 0.8).
    var ratio: Double { adapterEntriesPerSecond / straightEntriesPerSecond }

    struct OutOfProcessOverhead: Sendable {
        var batchCount: Int
        var batchSize: Int
        var inProcessMsPerBatch: Double
        var pythonMsPerBatch: Double
        /// Mean time of one `probe` (a round trip with almost no target work): the protocol's
        /// own cost per request, pipes and JSON both ways included.
        var probeCount: Int
        var inProcessProbeMs: Double
        var pythonProbeMs: Double
        var overheadMsPerBatch: Double { pythonMsPerBatch - inProcessMsPerBatch }
    }

    /// The result as Markdown table rows.
    func markdown() -> String {
        var lines = [
            "| target | path | entries | batch | seconds | entries/s |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
            "| SQLite | orgsync `sqlite` adapter | \(entryCount) | \(batchSize) | \(format(adapterSeconds, 3)) | \(format(adapterEntriesPerSecond, 0)) |",
            "| SQLite | straight GRDB upserts | \(entryCount) | \(batchSize) | \(format(straightSeconds, 3)) | \(format(straightEntriesPerSecond, 0)) |",
            "",
            "orgsync / straight: \(format(ratio * 100, 1)) % (target ≥ 80 %); rejected entries: \(rejectedCount)",
        ]
        if let outOfProcess {
            lines += [
                "",
                "| adapter | batches × size | ms/batch |",
                "| --- | ---: | ---: |",
                "| `sqlite` in process | \(outOfProcess.batchCount) × \(outOfProcess.batchSize) | \(format(outOfProcess.inProcessMsPerBatch, 3)) |",
                "| `python-sqlite` out of process | \(outOfProcess.batchCount) × \(outOfProcess.batchSize) | \(format(outOfProcess.pythonMsPerBatch, 3)) |",
                "",
                "out-of-process overhead: \(format(outOfProcess.overheadMsPerBatch, 3)) ms per batch (JSON lines over pipes + Python's own SQLite work); "
                    + "one probe round trip: \(format(outOfProcess.pythonProbeMs, 3)) ms out of process vs \(format(outOfProcess.inProcessProbeMs, 3)) ms in process "
                    + "(mean of \(outOfProcess.probeCount))",
            ]
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func format(_ value: Double, _ decimals: Int) -> String {
        String(format: "%.\(decimals)f", value)
    }
}

/// Applies the workload through the `sqlite` adapter in batches, then upserts the same rows
/// straight through GRDB in batches of the same size into a fresh file, and (optionally)
/// compares per-batch time of the Python example plugin with the in-process adapter.
///
/// Both runs write a database with the same settings (WAL, SQLite's default `synchronous`);
/// the straight run gets its tables and columns created before the clock starts, as an
/// application with a fixed schema would, and does not keep an offsets table.
func runApplyBenchmarkSQLite(_ options: ApplyBenchmarkSQLiteOptions) async throws -> ApplyBenchmarkSQLiteResult {
    try FileManager.default.createDirectory(atPath: options.workDirectory, withIntermediateDirectories: true)
    let entries = options.entries
    let batches = stride(from: 0, to: entries.count, by: options.batchSize).map {
        EntryBatch(stream: "bench", identity: benchIdentity, entries: Array(entries[$0..<min($0 + options.batchSize, entries.count)]))
    }
    var adapterSeconds = Double.infinity
    var straightSeconds = Double.infinity
    var rejectedCount = 0
    for round in 0..<max(1, options.roundCount) {
        let adapterFile = try freshFile(options.workDirectory, "orgsync-\(round).sqlite")
        let (seconds, rejected) = try await timeAdapter(batches, path: adapterFile, primaryKey: options.primaryKey)
        adapterSeconds = min(adapterSeconds, seconds)
        rejectedCount = rejected
        let straightFile = try freshFile(options.workDirectory, "straight-\(round).sqlite")
        straightSeconds = min(straightSeconds, try await timeStraight(batches, path: straightFile, primaryKey: options.primaryKey))
    }
    var overhead: ApplyBenchmarkSQLiteResult.OutOfProcessOverhead?
    if let pluginsDirectory = options.pythonPluginsDirectory {
        overhead = try await measureOutOfProcess(entries, options: options, pluginsDirectory: pluginsDirectory)
    }
    return ApplyBenchmarkSQLiteResult(
        entryCount: entries.count, batchSize: options.batchSize, adapterSeconds: adapterSeconds,
        straightSeconds: straightSeconds, rejectedCount: rejectedCount, outOfProcess: overhead)
}

/// Reads the workload file into entries with dense offsets from 0.
enum ApplyBenchmarkWorkload {
    struct LoadError: Error, CustomStringConvertible {
        var line: Int
        var problem: String
        var description: String { "workload line \(line): \(problem)" }
    }

    /// The workload's lines as entries, at offsets 0, 1, …
    static func parse(_ lines: [[UInt8]]) throws -> [Entry] {
        var entries: [Entry] = []
        entries.reserveCapacity(lines.count)
        for (index, line) in lines.enumerated() {
            do {
                entries.append(try Entry.parse(line, offset: Offset(UInt64(entries.count))))
            } catch {
                throw LoadError(line: index + 1, problem: "\(error)")
            }
        }
        return entries
    }
}

private func freshFile(_ directory: String, _ name: String) throws -> String {
    let path = directory + "/" + name
    for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
        try FileManager.default.removeItem(atPath: path + suffix)
    }
    return path
}

/// Applies `batches` through the adapter like a link: on a rejection, the prefix is applied
/// again and the rejected entry skipped.
private func timeAdapter(_ batches: [EntryBatch], path: String, primaryKey: SQLitePrimaryKey) async throws -> (Double, Int) {
    let adapter = SQLiteOrgAdapter(linkName: "bench", settings: SQLiteAdapterSettings(path: path, primaryKey: primaryKey))
    try await adapter.open()
    var rejected = 0
    let clock = ContinuousClock()
    let start = clock.now
    for batch in batches {
        var pending = batch.entries
        while !pending.isEmpty {
            do {
                try await adapter.apply(EntryBatch(stream: batch.stream, identity: batch.identity, entries: pending))
                pending = []
            } catch let error as AdapterError {
                guard case .rejected(let offset) = error.kind, let index = pending.firstIndex(where: { $0.offset == offset }) else {
                    throw error
                }
                if index > 0 { try await adapter.apply(EntryBatch(stream: batch.stream, identity: batch.identity, entries: Array(pending[..<index]))) }
                rejected += 1
                pending = Array(pending[(index + 1)...])
            }
        }
    }
    let elapsed = clock.now - start
    await adapter.close()
    return (seconds(elapsed), rejected)
}

/// The same rows upserted straight through GRDB, the way an application would: one
/// transaction per batch, cached statements, a schema made beforehand.
private func timeStraight(_ batches: [EntryBatch], path: String, primaryKey: SQLitePrimaryKey) async throws -> Double {
    var configuration = Configuration()
    configuration.journalMode = .wal
    let database = try DatabaseQueue(path: path, configuration: configuration)
    defer { try? database.close() }
    var columns: [String: [String: String]] = [:]
    for batch in batches {
        for entry in batch.entries {
            for (name, value) in entry.fields where columns[entry.object, default: [:]][name] == nil {
                columns[entry.object, default: [:]][name] = straightType(value)
            }
            if columns[entry.object] == nil { columns[entry.object] = [:] }
        }
    }
    let schema = columns
    try await database.write { db in
        for (table, fields) in schema {
            let fieldColumns = fields.sorted { $0.key < $1.key }.map { ", \"\($0.key)\" \($0.value)" }.joined()
            let key = primaryKey == .key ? "PRIMARY KEY (\"key\")" : "PRIMARY KEY (\"org\", \"key\")"
            try db.execute(sql: "CREATE TABLE \"\(table)\" (\"key\" TEXT NOT NULL, \"org\" TEXT NOT NULL, \"ts\" TEXT NOT NULL\(fieldColumns), \(key))")
        }
    }
    let conflict = primaryKey == .key ? "\"key\"" : "\"org\", \"key\""
    let clock = ContinuousClock()
    let start = clock.now
    for batch in batches {
        try await database.write { db in
            for entry in batch.entries {
                if entry.op == .delete {
                    if primaryKey == .key {
                        try db.cachedStatement(sql: "DELETE FROM \"\(entry.object)\" WHERE \"key\" = ?").execute(arguments: [entry.key])
                    } else {
                        try db.cachedStatement(sql: "DELETE FROM \"\(entry.object)\" WHERE \"org\" = ? AND \"key\" = ?")
                            .execute(arguments: [entry.org, entry.key])
                    }
                    continue
                }
                let names = entry.fields.keys.sorted()
                let columnList = (["key", "org", "ts"] + names).map { "\"\($0)\"" }.joined(separator: ", ")
                let placeholders = Array(repeating: "?", count: names.count + 3).joined(separator: ", ")
                let updates = ((primaryKey == .key ? ["org", "ts"] : ["ts"]) + names).map { "\"\($0)\" = excluded.\"\($0)\"" }.joined(separator: ", ")
                var values: [(any DatabaseValueConvertible)?] = [entry.key, entry.org, entry.ts]
                for name in names { values.append(straightValue(entry.fields[name] ?? .null)) }
                try db.cachedStatement(
                    sql: "INSERT INTO \"\(entry.object)\" (\(columnList)) VALUES (\(placeholders)) ON CONFLICT(\(conflict)) DO UPDATE SET \(updates)"
                ).execute(arguments: StatementArguments(values))
            }
        }
    }
    return seconds(clock.now - start)
}

private func straightType(_ value: JSONValue) -> String {
    switch value {
    case .string, .array, .object: "TEXT"
    case .int, .bool: "INTEGER"
    case .double: "REAL"
    case .null: ""
    }
}

private func straightValue(_ value: JSONValue) -> (any DatabaseValueConvertible)? {
    switch value {
    case .null: nil
    case .bool(let flag): flag ? 1 : 0
    case .int(let number): number
    case .double(let number): number
    case .string(let text): text
    case .array, .object: String(decoding: (try? JSONEncoder().encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }
}

/// Per-batch time of the same small batches through the in-process adapter and through the
/// Python example plugin (`ProcessAdapter`), each into a fresh file.
private func measureOutOfProcess(
    _ entries: [Entry], options: ApplyBenchmarkSQLiteOptions, pluginsDirectory: String
) async throws -> ApplyBenchmarkSQLiteResult.OutOfProcessOverhead {
    let count = min(entries.count, options.outOfProcessBatchCount * options.outOfProcessBatchSize)
    let batches = stride(from: 0, to: count, by: options.outOfProcessBatchSize).map {
        EntryBatch(stream: "bench", identity: benchIdentity, entries: Array(entries[$0..<min($0 + options.outOfProcessBatchSize, count)]))
    }
    var logger = Logger(label: "orgsync.bench.plugin")
    logger.logLevel = .warning
    let registry = PluginRegistry(builtins: [SQLiteAdapterFactory()], pluginsDirectory: pluginsDirectory, logger: logger)
    var best: [String: Double] = [:]
    var probeBest: [String: Double] = [:]
    let probeCount = 1_000
    for round in 0..<max(1, options.roundCount) {
        for name in ["sqlite", "python-sqlite"] {
            let file = try freshFile(options.workDirectory, "overhead-\(name)-\(round).sqlite")
            let adapter = try registry.makeAdapter(
                named: name,
                configuration: AdapterConfiguration(
                    linkName: "bench", streamName: "bench",
                    settings: ["path": file, "primary_key": options.primaryKey.rawValue]))
            try await adapter.open()
            let clock = ContinuousClock()
            let start = clock.now
            for batch in batches { try await adapter.apply(batch) }
            let elapsed = seconds(clock.now - start)
            let probeStart = clock.now
            for _ in 0..<probeCount { try await adapter.probe() }
            let probeElapsed = seconds(clock.now - probeStart)
            await adapter.close()
            best[name] = min(best[name] ?? .infinity, elapsed)
            probeBest[name] = min(probeBest[name] ?? .infinity, probeElapsed)
        }
    }
    let perBatch = { (name: String) in (best[name] ?? 0) * 1000 / Double(max(1, batches.count)) }
    return ApplyBenchmarkSQLiteResult.OutOfProcessOverhead(
        batchCount: batches.count, batchSize: options.outOfProcessBatchSize,
        inProcessMsPerBatch: perBatch("sqlite"), pythonMsPerBatch: perBatch("python-sqlite"), probeCount: probeCount,
        inProcessProbeMs: (probeBest["sqlite"] ?? 0) * 1000 / Double(probeCount),
        pythonProbeMs: (probeBest["python-sqlite"] ?? 0) * 1000 / Double(probeCount))
}

private func seconds(_ duration: Duration) -> Double {
    let (whole, fraction) = duration.components
    return Double(whole) + Double(fraction) / 1e18
}
