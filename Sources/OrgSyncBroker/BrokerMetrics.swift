import OrgSyncCore
import OrgSyncLog
import OrgSyncNotifications
import OrgSyncPluginAPI
import Prometheus
import Synchronization

/// The broker's metrics in its own Prometheus registry (so several brokers in one process, as
/// in tests, do not share counters), exposed on `/metrics` in the text format that
/// `promtool check metrics` accepts: every family has HELP and TYPE, counters end in `_total`,
/// units are in the names.
///
/// Three kinds of source, one way each:
/// - what happens on a request or in the log is counted where it happens (appends, fsyncs);
/// - what a link's calls to its target produce comes through ``LinkObserver`` (applies and
///   their latency, rejections, probes);
/// - what is read as a snapshot — link status, the process, the data directory's filesystem —
///   is recorded from readings: gauges as read, cumulative counts through ``CumulativeReadings``.
public final class BrokerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let appendLatency: DurationHistogram
    let rejectedRequests: Counter
    let fsyncLatency: DurationHistogram
    let flushedBytes: Counter
    let groupCommits: Counter
    private let readings = Mutex(CumulativeReadings())
    private let appendedByStream = Mutex<[String: Counter]>([:])

    /// Latency buckets for appends, fsyncs and applies: 100 µs to 10 s.
    static let durationBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(10),
    ]

    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        appendLatency = registry.makeDurationHistogram(descriptor: MetricCatalog.orgsyncAppendDurationSeconds, buckets: Self.durationBuckets)
        rejectedRequests = registry.makeCounter(descriptor: MetricCatalog.orgsyncRejectedRequestsTotal)
        fsyncLatency = registry.makeDurationHistogram(descriptor: MetricCatalog.orgsyncFsyncDurationSeconds, buckets: Self.durationBuckets)
        flushedBytes = registry.makeCounter(descriptor: MetricCatalog.orgsyncFlushedBytesTotal)
        groupCommits = registry.makeCounter(descriptor: MetricCatalog.orgsyncGroupCommitsTotal)
    }

    /// One request's entries appended to `stream`, acknowledged `duration` after they reached the log.
    /// On every append: the stream's counter is looked up once, then kept (the registry would
    /// check the name and labels and build the family's name again on each call).
    func appended(stream: String, entryCount: Int, duration: Duration) {
        appendLatency.record(duration)
        let counter = appendedByStream.withLock { counters in
            if let counter = counters[stream] { return counter }
            let counter = registry.makeCounter(descriptor: MetricCatalog.orgsyncAppendedEntriesTotal, labels: [("stream", stream)])
            counters[stream] = counter
            return counter
        }
        counter.increment(by: Int64(entryCount))
    }

    /// One append request answered with an error.
    public func appendRefused() { rejectedRequests.increment() }

    /// Records every link's status: gauges as they are, the state machine's counts as counters.
    func record(linkStatuses statuses: [LinkStatus]) {
        for status in statuses {
            let labels = [("link", status.link), ("stream", status.stream)]
            registry.makeGauge(descriptor: MetricCatalog.orgsyncLinkLagEntries, labels: labels)
                .set(Double(status.lagCount))
            registry.makeGauge(descriptor: MetricCatalog.orgsyncLinkCursor, labels: labels)
                .set(Double(status.cursor.rawValue))
            for state in LinkState.allCases {
                registry.makeGauge(descriptor: MetricCatalog.orgsyncLinkState, labels: labels + [("state", state.rawValue)])
                    .set(to: state == status.state ? 1.0 : 0.0)
            }
            registry.makeGauge(descriptor: MetricCatalog.orgsyncLinkHeldDown, labels: labels)
                .set(to: status.heldDown ? 1.0 : 0.0)
            registry.makeGauge(descriptor: MetricCatalog.orgsyncLinkDeadLettersFailed, labels: labels)
                .set(Double(status.deadLetterFailedCount))
            let counts: [(family: MetricNameDescriptor, reading: Int)] = [
                (MetricCatalog.orgsyncLinkSuspensionsTotal, status.suspensionCount),
                (MetricCatalog.orgsyncLinkFlapsTotal, status.flapCount),
                (MetricCatalog.orgsyncLinkHoldDownsTotal, status.holdDownCount),
            ]
            for count in counts {
                let increment = readings.withLock {
                    $0.increment(.link(family: count.family.name, link: status.link), reading: Double(count.reading))
                }
                registry.makeCounter(descriptor: count.family, labels: labels).increment(by: increment)
            }
        }
    }

    /// Per-source gauges and counters (``SourceService`` refreshes them every second).
    public func record(sourceStatuses statuses: [SourceStatus]) {
        for status in statuses {
            let labels = [("source", status.source), ("stream", status.stream)]
            if let lag = status.lagBytes {
                registry.makeGauge(descriptor: MetricCatalog.orgsyncSourceLagBytes, labels: labels).set(Double(lag))
            }
            if let lagMs = status.lagMs {
                registry.makeGauge(descriptor: MetricCatalog.orgsyncSourceLagSeconds, labels: labels).set(Double(lagMs) / 1000)
            }
            for state in LinkState.allCases where state != .diverged {
                registry.makeGauge(descriptor: MetricCatalog.orgsyncSourceState, labels: labels + [("state", state.rawValue)])
                    .set(to: state == status.state ? 1.0 : 0.0)
            }
            let family = MetricCatalog.orgsyncSourceAppendedEntriesTotal
            let increment = readings.withLock {
                $0.increment(.source(family: family.name, source: status.source), reading: Double(status.appendedEntries))
            }
            registry.makeCounter(descriptor: family, labels: labels).increment(by: increment)
        }
    }

    /// Reads the process and the data directory's filesystem into their gauges and counters;
    /// called on each scrape, so they are as fresh as the scrape.
    public func recordProcessAndDisk(dataDirectory: String) {
        if let process = ProcessReading.read() {
            let increment = readings.withLock { $0.increment(.processCPU, reading: process.cpuSeconds) }
            registry.makeCounter(descriptor: MetricCatalog.processCpuSecondsTotal)
                .increment(by: increment)
            registry.makeGauge(descriptor: MetricCatalog.processResidentMemoryBytes)
                .set(Double(process.residentMemoryBytes))
            registry.makeGauge(descriptor: MetricCatalog.processVirtualMemoryBytes)
                .set(Double(process.virtualMemoryBytes))
            registry.makeGauge(descriptor: MetricCatalog.processOpenFds)
                .set(Double(process.openFileDescriptors))
            registry.makeGauge(descriptor: MetricCatalog.processMaxFds)
                .set(Double(process.maxFileDescriptors))
            registry.makeGauge(descriptor: MetricCatalog.processStartTimeSeconds)
                .set(process.startTimeSeconds)
        }
        if let disk = FilesystemReading.read(path: dataDirectory) {
            registry.makeGauge(descriptor: MetricCatalog.orgsyncDataFilesystemAvailBytes)
                .set(Double(disk.availableBytes))
            registry.makeGauge(descriptor: MetricCatalog.orgsyncDataFilesystemSizeBytes)
                .set(Double(disk.sizeBytes))
        }
    }

    /// The Prometheus text exposition of every metric.
    public func render() -> [UInt8] { registry.emitToBuffer() }
}

extension BrokerMetrics: LogObserver {
    public func didFlush(stream: String, entryCount: Int, byteCount: Int, syncNanoseconds: UInt64) {
        fsyncLatency.record(.nanoseconds(Int64(clamping: syncNanoseconds)))
        flushedBytes.increment(by: Int64(byteCount))
        groupCommits.increment()
    }
}

extension BrokerMetrics: NotificationObserver {
    public func didAttempt(notification: String, outcome: NotificationOutcome) {
        registry.makeCounter(descriptor: MetricCatalog.orgsyncNotificationDeliveriesTotal,
                             labels: [("notification", notification), ("result", outcome.rawValue)])
            .increment()
    }

    /// Events waiting for each notification target, summed over its links.
    public func record(notificationStatuses statuses: [NotificationLaneStatus]) {
        var pending: [String: Int] = [:]
        for status in statuses { pending[status.notification, default: 0] += status.pending }
        for (notification, count) in pending {
            registry.makeGauge(descriptor: MetricCatalog.orgsyncNotificationPendingEvents, labels: [("notification", notification)])
                .set(to: Double(count))
        }
    }
}

extension BrokerMetrics: LinkObserver {
    public func didApply(link: String, stream: String, entryCount: Int, duration: Duration) {
        let labels = [("link", link), ("stream", stream)]
        registry.makeCounter(descriptor: MetricCatalog.orgsyncLinkAppliedEntriesTotal, labels: labels)
            .increment(by: Int64(entryCount))
        registry.makeDurationHistogram(descriptor: MetricCatalog.orgsyncLinkApplyDurationSeconds, labels: labels,
                                       buckets: Self.durationBuckets)
            .record(duration)
    }

    public func didReject(link: String, stream: String) {
        registry.makeCounter(descriptor: MetricCatalog.orgsyncLinkRejectedEntriesTotal, labels: [("link", link), ("stream", stream)])
            .increment()
    }

    public func didProbe(link: String, stream: String, answered: Bool) {
        registry.makeCounter(descriptor: MetricCatalog.orgsyncLinkProbesTotal,
                             labels: [("link", link), ("stream", stream), ("result", answered ? "answered" : "failed")])
            .increment()
    }
}

/// Turns readings of cumulative counts — numbers that only grow while the process lives, like
/// a link's suspensions or the process's CPU time — into the increments a Prometheus counter
/// takes. A reading below the last one adds nothing (the counter never goes back).
struct CumulativeReadings: Sendable {
    enum Key: Hashable, Sendable {
        case link(family: String, link: String)
        case source(family: String, source: String)
        case processCPU
    }

    private var last: [Key: Double] = [:]

    mutating func increment(_ key: Key, reading: Double) -> Double {
        guard reading.isFinite else { return 0 }
        let previous = last[key] ?? 0
        last[key] = max(previous, reading)
        return max(0, reading - previous)
    }
}
