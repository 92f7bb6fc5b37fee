import CoreMetrics
import Metrics
import OrgSyncLog
import Prometheus

/// The broker's metrics, registered with its own Prometheus registry (so several brokers in
/// one process, as in tests, do not share counters) through swift-metrics.
public final class BrokerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory
    let appendLatency: CoreMetrics.Timer
    let appendedEntries: CoreMetrics.Counter
    let rejectedRequests: CoreMetrics.Counter
    let fsyncLatency: CoreMetrics.Timer
    let flushedBytes: CoreMetrics.Counter
    let flushes: CoreMetrics.Counter

    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .seconds(1),
        ]
        self.registry = registry
        self.factory = factory
        appendLatency = CoreMetrics.Timer(label: "orgsync_append_duration_seconds", factory: factory)
        appendedEntries = CoreMetrics.Counter(label: "orgsync_appended_entries_total", factory: factory)
        rejectedRequests = CoreMetrics.Counter(label: "orgsync_rejected_requests_total", factory: factory)
        fsyncLatency = CoreMetrics.Timer(label: "orgsync_fsync_duration_seconds", factory: factory)
        flushedBytes = CoreMetrics.Counter(label: "orgsync_flushed_bytes_total", factory: factory)
        flushes = CoreMetrics.Counter(label: "orgsync_group_commits_total", factory: factory)
    }

    /// A gauge with labels, e.g. per link lag.
    public func gauge(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Gauge {
        CoreMetrics.Gauge(label: label, dimensions: dimensions, factory: factory)
    }

    public func counter(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: label, dimensions: dimensions, factory: factory)
    }

    /// The Prometheus text exposition of every metric.
    public func render() -> [UInt8] { registry.emitToBuffer() }
}

extension BrokerMetrics: LogObserver {
    public func didFlush(stream: String, entryCount: Int, byteCount: Int, syncNanoseconds: UInt64) {
        fsyncLatency.recordNanoseconds(Int64(clamping: syncNanoseconds))
        flushedBytes.increment(by: Int64(byteCount))
        flushes.increment()
    }
}
