import ArgumentParser
import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncBroker
import OrgSyncServer
import SQLiteAdapter
import ServiceLifecycle

/// `OrgSyncBenchmarks memory`: what links catching up a backlog cost in memory. The broker as
/// `orgsync serve` builds it (configuration, streams, links, the link service) runs in this
/// process, N SQLite links on one stream; the whole workload is appended at once, the links
/// catch up, then the broker idles. Reports resident memory at start, at its peak and after
/// the idle wait, and the links' aggregate apply rate while catching up.
struct MemoryBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Resident memory of N SQLite links catching up a backlog: start, peak, after idling; aggregate apply rate.",
        discussion: """
            Targets (issue 15): 10 links catching up 50 000 entries peak at most 150 MiB and return to \
            at most 100 MiB; with --paced-minutes 30 (long mode), 10 links at a paced load stay at most \
            100 MiB with no upward trend over the last half. The workload is generated (--count, --seed) or read (--input); the RSS \
            at start is taken once the workload is in memory and the broker is open, so both runs \
            of a comparison carry the same fixed costs.
            """
    )

    @OptionGroup var workload: WorkloadOptions
    @Option(help: "SQLite links on the stream.") var links = 10
    @Option(help: "Entries per append while loading the backlog.") var appendBatch = 500
    @Option(help: "Seconds to idle after the links caught up before the last reading.") var idleSeconds = 10.0
    @Option(help: "Give up when the links have not caught up within this many seconds.") var timeoutSeconds = 600.0
    @Option(help: "Scratch directory (default: a new temp dir, removed at the end).") var dataDir: String?
    @Option(help: "Long mode: after the idle reading, minutes of paced appends (0: none; the target's run is 30).")
    var pacedMinutes = 0.0
    @Option(help: "Long mode: entries/s appended (new entries of the same generator, after the backlog).")
    var pacedRate = 1_000.0
    @Option(help: "Long mode: seconds between readings of the resident memory.") var sampleSeconds = 10.0

    func validate() throws {
        guard links >= 1, appendBatch >= 1, idleSeconds >= 0, timeoutSeconds > 0 else {
            throw ValidationError("--links and --append-batch must be positive, the times not negative")
        }
        guard pacedMinutes.isFinite, pacedMinutes >= 0, pacedMinutes <= 24 * 60 else {
            throw ValidationError("--paced-minutes must be in 0...1440")
        }
        if pacedMinutes > 0 {
            guard workload.input == nil else {
                throw ValidationError("--paced-minutes continues the generator after --count entries: leave out --input")
            }
            guard pacedRate.isFinite, pacedRate > 0, sampleSeconds.isFinite, sampleSeconds >= 0.1 else {
                throw ValidationError("--paced-rate must be positive and --sample-seconds at least 0.1")
            }
        }
    }

    func run() async throws {
        FreedMemory.limitArenas()  // as `orgsync serve` does
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .error  // the workload's inserts of existing keys are rejected entries
            return handler
        }
        let loaded = try workload.entries()
        var entries = loaded.entries
        let source = loaded.source
        let entryCount = entries.count
        let scratch = try dataDir ?? makeTempDir()
        defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: scratch) } }
        let linkLines = (0..<links).map {
            "  - { name: l\($0), stream: events, adapter: sqlite, settings: { path: l\($0).sqlite, primary_key: org_key } }"
        }
        let yaml = "auth: { enabled: false }\nstreams: [ { name: events } ]\nlinks:\n" + linkLines.joined(separator: "\n") + "\n"
        let configuration = try BrokerConfiguration.parse(yaml: yaml)
        let logger = Logger(label: "orgsync")
        let broker = try Broker(
            configuration: configuration, dataDirectory: scratch, metrics: BrokerMetrics(), logger: logger,
            registry: PluginRegistry(builtins: [SQLiteAdapterFactory()], logger: logger))
        let startKiB = try residentKiB("VmRSS")

        let group = ServiceGroup(configuration: .init(
            services: [.init(service: LinkService(broker: broker))], logger: logger))
        let running = Task { try await group.run() }
        let started = nowNs()
        for start in stride(from: 0, to: entries.count, by: appendBatch) {
            _ = try await broker.append(stream: "events", entries: Array(entries[start..<min(entries.count, start + appendBatch)]))
        }
        try await waitForCatchUp(broker, to: UInt64(entries.count))
        let caughtUpSeconds = Double(nowNs() - started) / 1e9
        let peakKiB = try residentKiB("VmHWM")
        try await Task.sleep(for: .seconds(idleSeconds))
        let afterKiB = try residentKiB("VmRSS")
        // The backlog's entries are the benchmark's, not the broker's: the long mode measures
        // without them (the broker's own trim gives their pages back while the links work).
        entries = []
        let paced = pacedMinutes > 0 ? try await runPaced(broker, after: entryCount) : nil
        await group.triggerGracefulShutdown()
        try await running.value
        await broker.close()

        let linkEntriesPerSecond = Double(entryCount * links) / caughtUpSeconds
        print("<!-- memory: \(entryCount) entries (\(source)), \(links) SQLite links; \(ProcessInfo.processInfo.activeProcessorCount) cores; load \(loadAverage()) -->")
        print("| links | entries | RSS at start | peak | after \(fmt(idleSeconds, 0)) s idle | peak − start | catch-up | link-entries/s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print("| \(links) | \(entryCount) | \(startKiB / 1024) MiB | \(peakKiB / 1024) MiB | \(afterKiB / 1024) MiB | \((peakKiB - startKiB) / 1024) MiB | \(fmt(caughtUpSeconds, 2)) s | \(fmt(linkEntriesPerSecond, 0)) |")
        if let paced { printPaced(paced) }
    }

    /// Waits until every link's cursor reached `end`, at most `timeoutSeconds`.
    func waitForCatchUp(_ broker: Broker, to end: UInt64) async throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while await broker.links.statuses().contains(where: { $0.cursor.rawValue < end }) {
            guard Date() < deadline else { throw ValidationErrorText("the links did not catch up within \(timeoutSeconds) s") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    struct PacedRun {
        var samples: [MemorySample]
        var durationSeconds: Double
        var appended: Int
        var caughtUpSeconds: Double
    }

    /// Appends new entries at `pacedRate` for `pacedMinutes` (open loop, ``PacingSchedule``),
    /// reading the resident memory every `sampleSeconds`, then waits for the links to catch up.
    func runPaced(_ broker: Broker, after backlog: Int) async throws -> PacedRun {
        var generator = WorkloadGenerator(seed: workload.seed)
        for _ in 0..<backlog { _ = generator.next() }  // the same stream of entries, after the backlog
        let durationSeconds = pacedMinutes * 60
        let startNs = nowNs()
        guard let schedule = PacingSchedule(
            startNs: startNs, entriesPerSecond: pacedRate, durationSeconds: durationSeconds, appendBatchMax: appendBatch,
            appendIntervalMinNs: 1_000_000)
        else { throw ValidationErrorText("--paced-rate × --paced-minutes must make 1...\(PacingSchedule.entryCountMax) entries") }
        let sampleNs = UInt64(sampleSeconds * 1e9)
        var samples = [MemorySample(seconds: 0, residentKiB: try residentKiB("VmRSS"))]
        var nextSampleNs = startNs + sampleNs
        var appended = 0
        var lastAppendStartNs: UInt64?
        var lastProgressMinute = 0
        while true {
            let now = nowNs()
            if now >= nextSampleNs {
                samples.append(MemorySample(seconds: Double(now - startNs) / 1e9, residentKiB: try residentKiB("VmRSS")))
                nextSampleNs += sampleNs
                let minute = Int(Double(now - startNs) / 60e9)
                if minute > lastProgressMinute {
                    lastProgressMinute = minute
                    FileHandle.standardError.write(Data(
                        "memory: paced minute \(minute) of \(fmt(pacedMinutes, 0)), \(appended) appended, RSS \(samples.last.map { $0.residentKiB / 1024 } ?? 0) MiB\n".utf8))
                }
            }
            switch schedule.nextStep(appendedCount: appended, lastAppendStartNs: lastAppendStartNs, nowNs: now) {
            case .finished:
                try await waitForCatchUp(broker, to: try await broker.stream("events").currentInfo().endOffset)
                return PacedRun(
                    samples: samples, durationSeconds: durationSeconds, appended: appended,
                    caughtUpSeconds: Double(nowNs() - startNs) / 1e9 - durationSeconds)
            case .wait(let untilNs):
                let wakeNs = min(untilNs, nextSampleNs)
                if wakeNs > now { try await Task.sleep(for: .nanoseconds(Int(min(wakeNs - now, 1_000_000_000)))) }
            case .append(let range):
                lastAppendStartNs = now
                _ = try await broker.append(stream: "events", entries: range.map { _ in generator.next() })
                appended = range.upperBound
            }
        }
    }

    func printPaced(_ run: PacedRun) {
        let targets = MemoryTargets()
        print("")
        print("Long mode: \(links) links, \(fmt(pacedRate, 0)) entries/s appended for \(fmt(pacedMinutes, 1)) min (\(run.appended) entries; caught up \(fmt(run.caughtUpSeconds, 1)) s after the last); the backlog's entries dropped before it")
        print("")
        print("| minute | RSS |")
        print("| ---: | ---: |")
        for sample in MemoryTrend.milestones(run.samples, durationSeconds: run.durationSeconds, count: 6) {
            print("| \(fmt(sample.seconds / 60, 1)) | \(sample.residentKiB / 1024) MiB |")
        }
        guard let trend = MemoryTrend(run.samples, durationSeconds: run.durationSeconds, targets: targets) else { return }
        print("")
        print("| max RSS | trend over the last half | verdict |")
        print("| ---: | ---: | --- |")
        let slope = trend.trendMiBPer10Minutes.map { "\(fmt($0, 2)) MiB / 10 min" } ?? "too few samples"
        print("| \(fmt(trend.maxMiB, 1)) MiB (target ≤ \(fmt(targets.residentMiBMax, 0))) | \(slope) (target ≤ \(fmt(targets.trendMiBPer10MinutesMax, 1))) | \(trend.passed ? "PASS" : "FAIL") |")
    }

    /// A field of /proc/self/status, in KiB (VmRSS: now; VmHWM: the peak so far).
    func residentKiB(_ field: String) throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let kib = line.split(separator: " ").dropFirst().lazy.compactMap({ Int($0) }).first
        else { throw ValidationErrorText("no \(field) in /proc/self/status") }
        return kib
    }
}
