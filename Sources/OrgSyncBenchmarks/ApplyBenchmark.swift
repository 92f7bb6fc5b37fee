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
            --pg-tls-host signed by that CA); the straight side stays plain in both.
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
    @Flag(help: "Print RESULT lines instead of the Markdown table.") var json = false

    func validate() throws {
        guard batch >= 1, rounds >= 1 else { throw ValidationError("--batch and --rounds must be positive") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let (lines, source) = try workload.entries()
        let entries = try ApplyBenchmarkWorkload.parse(lines)
        let header = "<!-- apply \(adapter.rawValue): \(entries.count) entries (\(source)); \(ProcessInfo.processInfo.activeProcessorCount) cores; load \(loadAverage()) -->"
        switch adapter {
        case .sqlite: try await runSQLite(entries, header: header)
        case .postgres: try await runPostgres(entries, header: header)
        }
    }

    private func runSQLite(_ entries: [Entry], header: String) async throws {
        let directory = try workDir ?? makeTempDir()
        defer { if workDir == nil { try? FileManager.default.removeItem(atPath: directory) } }
        var options = ApplyBenchmarkSQLiteOptions(entries: entries, workDirectory: directory)
        options.batchSize = batch
        options.roundCount = rounds
        options.pythonPluginsDirectory = pluginsDir
        let result = try await runApplyBenchmarkSQLite(options)
        if json {
            print(resultLine(ApplyResultRow(
                adapter: "sqlite", batch: batch, entries: result.entryCount, entries_per_s: result.adapterEntriesPerSecond,
                straight_entries_per_s: result.straightEntriesPerSecond, rejected: result.rejectedCount)))
        } else {
            print(header)
            print(result.markdown())
        }
    }

    private func runPostgres(_ entries: [Entry], header: String) async throws {
        guard let settings = PostgresBenchmarkServer.settings() else {
            print("apply --adapter postgres skipped: \(PostgresBenchmarkServer.missingMessage)")
            return
        }
        var results = [try await ApplyBenchmarkPostgres(settings: settings, batchSize: batch, roundCount: rounds).run(entries)]
        if let pgTLSRootCert {
            var verifyFull = settings
            verifyFull.host = pgTLSHost
            verifyFull.tls = PostgresTLSSettings(mode: .verifyFull, rootCertificateFile: pgTLSRootCert)
            results.append(try await ApplyBenchmarkPostgres(settings: verifyFull, batchSize: batch, roundCount: rounds).run(entries))
        }
        if json {
            for result in results {
                print(resultLine(ApplyResultRow(
                    adapter: result.label, batch: batch, entries: result.entryCount, entries_per_s: result.adapterEntriesPerSecond,
                    straight_entries_per_s: result.straightEntriesPerSecond, rejected: result.rejectedCount)))
            }
        } else {
            print(header)
            print("| adapter | entries | batch | orgsync/s | straight/s | ratio |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            for result in results { print(result.markdownRow) }
            print("")
            if results.count == 2, results[0].adapterEntriesPerSecond > 0 {
                let ratio = results[1].adapterEntriesPerSecond / results[0].adapterEntriesPerSecond
                print(String(format: "adapter with verify-full / plain: %.0f%%", ratio * 100))
            }
            print("rejected entries (inserts of existing keys, dead-lettered as the link would): \(results[0].rejectedCount)")
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
