import ArgumentParser
import Foundation
import Logging
import OrgSyncCore
import OrgSyncPluginAPI
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
            at most 100 MiB. The workload is generated (--count, --seed) or read (--input); the RSS \
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

    func validate() throws {
        guard links >= 1, appendBatch >= 1, idleSeconds >= 0, timeoutSeconds > 0 else {
            throw ValidationError("--links and --append-batch must be positive, the times not negative")
        }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .error  // the workload's inserts of existing keys are rejected entries
            return handler
        }
        let (entries, source) = try workload.entries()
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
        let end = UInt64(entries.count)
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while await broker.links.statuses().contains(where: { $0.cursor.rawValue < end }) {
            guard Date() < deadline else { throw ValidationErrorText("the links did not catch up within \(timeoutSeconds) s") }
            try await Task.sleep(for: .milliseconds(50))
        }
        let caughtUpSeconds = Double(nowNs() - started) / 1e9
        let peakKiB = try residentKiB("VmHWM")
        try await Task.sleep(for: .seconds(idleSeconds))
        let afterKiB = try residentKiB("VmRSS")
        await group.triggerGracefulShutdown()
        try await running.value
        await broker.close()

        let linkEntriesPerSecond = Double(entries.count * links) / caughtUpSeconds
        print("<!-- memory: \(entries.count) entries (\(source)), \(links) SQLite links; \(ProcessInfo.processInfo.activeProcessorCount) cores; load \(loadAverage()) -->")
        print("| links | entries | RSS at start | peak | after \(fmt(idleSeconds, 0)) s idle | peak − start | catch-up | link-entries/s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print("| \(links) | \(entries.count) | \(startKiB / 1024) MiB | \(peakKiB / 1024) MiB | \(afterKiB / 1024) MiB | \((peakKiB - startKiB) / 1024) MiB | \(fmt(caughtUpSeconds, 2)) s | \(fmt(linkEntriesPerSecond, 0)) |")
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
