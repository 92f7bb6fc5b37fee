import ArgumentParser
import Foundation
import Logging
import OrgSyncPluginAPI
import PostgresAdapter
import SQLiteAdapter

/// `OrgSyncBenchmarks apply`: the seeded workload applied through an adapter in batches, next
/// to the same rows written straight through the database's own client in the same run
/// (``runApplyBenchmarkSQLite(_:)``, ``ApplyBenchmarkPostgres``).
/// The stream identity the apply benchmarks' batches carry (they read no real stream).
let benchIdentity = StreamIdentity(streamID: "bench", epoch: 1)

struct ApplyBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Apply the workload through the sqlite or postgres adapter vs straight upserts (entries/s, ratio).",
        discussion: """
            sqlite: a fresh file per round under --work-dir (default: a temp dir); --plugins-dir \
            (holding python-sqlite) adds the out-of-process overhead. postgres: the server of \
            ORGSYNC_TEST_PG_HOST/PORT/USER/PASSWORD/DB (`source .ci/postgres.sh`), fresh schemas per \
            round, dropped afterwards; skipped with a message when those are not set. Both use \
            `primary_key: org_key` (the workload's keys are unique per org only). With \
            --pg-tls-root-cert, the adapter is measured a second time in the same run with \
            `sslmode: verify-full` (the server must have ssl on, with a certificate for \
            --pg-tls-host signed by that CA); the straight side stays plain in both. \
            Ceilings: in each round, after the adapter, ceilings/sql_apply_ceiling.py (next to the \
            benchmark's sources) applies the same entries the way a good client does — Python's \
            sqlite3 executemany; psycopg 3 in pipeline mode, entry by entry and set-based — and \
            the adapter's rate is quoted as a share of the best (target ≥ 80 %). The PostgreSQL \
            modes need psycopg 3 in --ceiling-python (python3 -m pip install 'psycopg[binary]'); \
            without it they are skipped with a message.
            """
    )

    enum AdapterName: String, ExpressibleByArgument, CaseIterable {
        case sqlite, postgres
    }

    @OptionGroup var workload: WorkloadOptions
    @Option(help: "Adapter to measure: sqlite or postgres.") var adapter: AdapterName = .sqlite
    @Option(help: "Entries per batch (one transaction each), for both sides.") var batch: Int = 500
    @Option(help: "Rounds; the best of each side counts.") var rounds: Int = 2
    @Option(help: "sqlite: where the databases go (default: a new temp dir, removed at the end).") var workDir: String?
    @Option(help: "sqlite: plugins directory holding python-sqlite, to measure the out-of-process overhead.")
    var pluginsDir: String?
    @Option(help: "postgres: also measure the adapter with sslmode verify-full, trusting this CA file (PEM).")
    var pgTLSRootCert: String?
    @Option(help: "postgres: host name for the verify-full run; the server's certificate must be issued for it.")
    var pgTLSHost = "localhost"
    @Option(help: "Python 3 for the ceilings (psycopg 3 for PostgreSQL's); 'none' skips them.")
    var ceilingPython = "python3"
    @Flag(help: "Print RESULT lines instead of the Markdown table.") var json = false

    func validate() throws {
        guard batch >= 1, rounds >= 1 else { throw ValidationError("--batch and --rounds must be positive") }
    }

    func run() async throws {
        bootstrapBenchmarkLogging()
        let (lines, source) = try workload.entries()
        let entries = try ApplyBenchmarkWorkload.parse(lines)
        let header = "<!-- apply \(adapter.rawValue): \(entries.count) entries (\(source)); \(ProcessInfo.processInfo.activeProcessorCount) cores; load \(loadAverage()) -->"
        switch adapter {
        case .sqlite: try await runSQLite(entries, lines: lines, header: header)
        case .postgres: try await runPostgres(entries, lines: lines, header: header)
        }
    }

    private var ceiling: SQLApplyCeiling? {
        ceilingPython == "none" ? nil : SQLApplyCeiling(python: ceilingPython, batchSize: batch)
    }

    private func runSQLite(_ entries: [Entry], lines: [[UInt8]], header: String) async throws {
        let directory = try workDir ?? makeTempDir()
        defer { if workDir == nil { try? FileManager.default.removeItem(atPath: directory) } }
        var options = ApplyBenchmarkSQLiteOptions(entries: entries, workDirectory: directory)
        options.batchSize = batch
        options.roundCount = rounds
        options.pythonPluginsDirectory = pluginsDir
        let result = try await runApplyBenchmarkSQLite(options)
        var ceilings: [SQLApplyCeiling.Measurement] = []
        if let ceiling {
            for _ in 0..<rounds { ceilings += try ceiling.measure(lines, modes: ["sqlite"]) }
        }
        let best = SQLApplyCeiling.best(ceilings)["sqlite"]
        if json {
            var row = ApplyResultRow(
                adapter: "sqlite", batch: batch, entries: result.entryCount, entries_per_s: result.adapterEntriesPerSecond,
                straight_entries_per_s: result.straightEntriesPerSecond, rejected: result.rejectedCount)
            row.ceiling_entries_per_s = best?.entriesPerSecond
            print(resultLine(row))
        } else {
            print(header)
            print(result.markdown())
            if let best {
                print(String(
                    format: "ceiling (Python sqlite3 executemany, WAL, synchronous=FULL, same entries, best of %d): %.0f entries/s; adapter %.0f%% of it",
                    rounds, best.entriesPerSecond, result.adapterEntriesPerSecond / max(best.entriesPerSecond, 1) * 100))
            } else if ceiling != nil {
                print("ceiling: the script gave no sqlite result")
            }
        }
    }

    private func runPostgres(_ entries: [Entry], lines: [[UInt8]], header: String) async throws {
        guard let settings = PostgresBenchmarkServer.settings() else {
            print("apply --adapter postgres skipped: \(PostgresBenchmarkServer.missingMessage)")
            return
        }
        var ceiling = self.ceiling
        if let reason = ceiling?.postgresUnavailableReason() {
            print("ceilings skipped: \(reason)")
            ceiling = nil
        }
        let libpq = ["PGHOST": settings.host, "PGPORT": String(settings.port), "PGUSER": settings.user, "PGDATABASE": settings.database, "PGSSLMODE": "disable"]
            .merging(settings.password.map { ["PGPASSWORD": $0] } ?? [:]) { a, _ in a }
        // Round by round, the adapter (with the straight side interleaved) and then the ceilings,
        // so that load from elsewhere on the machine falls on all of them alike.
        // Both ways a batch may write (batch_writes: per_entry, the default, and per_record).
        var perRecordSettings = settings
        perRecordSettings.batchWrites = .perRecord
        var plain: ApplyBenchmarkPostgres.Result?
        var perRecord: ApplyBenchmarkPostgres.Result?
        var ceilings: [SQLApplyCeiling.Measurement] = []
        for _ in 0..<rounds {
            let round = try await ApplyBenchmarkPostgres(settings: settings, batchSize: batch, roundCount: 1).run(entries)
            if round.adapterEntriesPerSecond > plain?.adapterEntriesPerSecond ?? -1 { plain = round }
            let folded = try await ApplyBenchmarkPostgres(settings: perRecordSettings, batchSize: batch, roundCount: 1).run(entries)
            if folded.adapterEntriesPerSecond > perRecord?.adapterEntriesPerSecond ?? -1 { perRecord = folded }
            if let ceiling {
                let measured = try ceiling.measure(lines, modes: ["pg-rows", "pg-json"], environment: libpq)
                for measurement in measured where measurement.rowCount != round.rowCount {
                    throw ApplyBenchmarkPostgres.Failure(
                        description: "ceiling \(measurement.mode) left \(measurement.rowCount) rows, the adapter \(round.rowCount)")
                }
                ceilings += measured
            }
        }
        guard let plain, let perRecord else { return }
        var results = [plain, perRecord]
        if let pgTLSRootCert {
            var verifyFull = settings
            verifyFull.host = pgTLSHost
            verifyFull.tls = PostgresTLSSettings(mode: .verifyFull, rootCertificateFile: pgTLSRootCert)
            results.append(try await ApplyBenchmarkPostgres(settings: verifyFull, batchSize: batch, roundCount: rounds).run(entries))
        }
        let best = SQLApplyCeiling.best(ceilings)
        let bestRate = best.values.map(\.entriesPerSecond).max()
        if json {
            for result in results {
                var row = ApplyResultRow(
                    adapter: result.label, batch: batch, entries: result.entryCount, entries_per_s: result.adapterEntriesPerSecond,
                    straight_entries_per_s: result.straightEntriesPerSecond, rejected: result.rejectedCount)
                row.ceiling_entries_per_s = bestRate
                print(resultLine(row))
            }
        } else {
            print(header)
            print("| adapter | entries | batch | orgsync/s | straight/s | ratio |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            for result in results { print(result.markdownRow) }
            print("")
            if results.count == 3, results[0].adapterEntriesPerSecond > 0 {
                let ratio = results[2].adapterEntriesPerSecond / results[0].adapterEntriesPerSecond
                print(String(format: "adapter with verify-full / plain: %.0f%%", ratio * 100))
            }
            print("rejected entries (inserts of existing keys, dead-lettered as the link would): \(results[0].rejectedCount)")
            if !best.isEmpty {
                print("")
                print("| ceiling (psycopg 3, pipeline mode, same entries, best of \(rounds)) | entries/s | per_entry ÷ ceiling | per_record ÷ ceiling |")
                print("| --- | ---: | ---: | ---: |")
                for mode in best.keys.sorted() {
                    guard let measurement = best[mode] else { continue }
                    let ceilingRate = max(measurement.entriesPerSecond, 1)
                    print(String(
                        format: "| %@ | %.0f | %.0f%% | %.0f%% |", mode, measurement.entriesPerSecond,
                        plain.adapterEntriesPerSecond / ceilingRate * 100, perRecord.adapterEntriesPerSecond / ceilingRate * 100))
                }
            }
        }
    }
}

/// One `apply` measurement as a RESULT line (p50/p99 are not measured per batch here: 0).
struct ApplyResultRow: Encodable {
    var system = "orgsync"
    var mode: String
    var batch: Int
    var durable = true
    var entries: Int
    var entries_per_s: Double
    var straight_entries_per_s: Double
    var ratio: Double
    var rejected: Int
    /// The best ceiling of the same run (``SQLApplyCeiling``), when measured.
    var ceiling_entries_per_s: Double?
    var p50_ms = 0.0
    var p99_ms = 0.0
    var producers = 1

    init(adapter: String, batch: Int, entries: Int, entries_per_s: Double, straight_entries_per_s: Double, rejected: Int) {
        self.mode = "apply \(adapter)"
        self.batch = batch
        self.entries = entries
        self.entries_per_s = entries_per_s
        self.straight_entries_per_s = straight_entries_per_s
        self.ratio = straight_entries_per_s > 0 ? entries_per_s / straight_entries_per_s : 0
        self.rejected = rejected
    }
}
