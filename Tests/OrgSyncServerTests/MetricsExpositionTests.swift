import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import OrgSyncCore
import OrgSyncNotifications
import OrgSyncPluginAPI
@testable import OrgSyncBroker
@testable import OrgSyncServer
import Testing

/// `/metrics` as Prometheus' own tools want it (CI also runs `promtool check metrics` on a live
/// broker's): HELP and TYPE on every family, counters named `_total`, nothing outside the
/// catalog; the link, process and filesystem families present and moving.
@Suite struct MetricsExpositionTests {
    /// One family as the exposition declares it, and the samples under it.
    struct Family {
        var help: String?
        var type: String?
        var samples: [(name: String, labels: String, value: Double)] = []
    }

    /// Parses the text format, recording every way it breaks the rules the tests hold it to.
    static func parse(_ text: String) -> (families: [String: Family], problems: [String]) {
        var families: [String: Family] = [:]
        var problems: [String] = []
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { problems.append("bad comment line: \(line)"); continue }
                if line.hasPrefix("# HELP ") { families[parts[0], default: Family()].help = parts[1] }
                else { families[parts[0], default: Family()].type = parts[1] }
                continue
            }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                problems.append("bad sample line: \(line)")
                continue
            }
            let series = String(line[..<space])
            let name = String(series.prefix { $0 != "{" })
            let labels = String(series.dropFirst(name.count))
            var family = name
            for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
                let base = String(name.dropLast(suffix.count))
                if families[base]?.type == "histogram" { family = base }
            }
            guard families[family]?.type != nil, families[family]?.help?.isEmpty == false else {
                problems.append("sample of \(family) without HELP and TYPE before it")
                continue
            }
            families[family]?.samples.append((name, labels, value))
        }
        for (name, family) in families {
            if family.type == "counter", !name.hasSuffix("_total") { problems.append("counter \(name) not named _total") }
            if family.type != "counter", name.hasSuffix("_total") { problems.append("\(family.type ?? "?") \(name) named _total") }
        }
        return (families, problems)
    }

    @Test func everyFamilyHasHelpAndTypeCountersEndInTotalAndNothingIsOutsideTheCatalog() async throws {
        let t = try LinkedBroker()
        let app = Application(router: t.router)
        let bad = #"{"org":"o","object":"Contact","op":"upsert","key":"bad","ts":"2026-11-25T00:00:00Z","fields":{"key":"taken by the adapter"}}"#
        try await app.test(.router) { client in
            let body = ((0..<5).map { entryJSON($0) } + [bad]).joined(separator: "\n")
            try await client.execute(uri: "/v1/streams/events/entries", method: .post,
                                     headers: headers(TestBroker.produceToken, "application/x-ndjson"), body: ByteBuffer(string: body)) { response in
                #expect(response.status == .created)
            }
        }
        try await t.waitFor("the batch applied and the bad entry dead-lettered") { $0.cursor == 6 && $0.deadLetterFailedCount == 1 }
        t.broker.metrics.record(linkStatuses: await t.broker.links.statuses())
        t.broker.metrics.didProbe(link: "demo", stream: "events", answered: false)
        t.broker.metrics.didProbe(link: "demo", stream: "events", answered: true)
        t.broker.metrics.didAttempt(notification: "ops", outcome: .retried)
        t.broker.metrics.didAttempt(notification: "ops", outcome: .delivered)
        t.broker.metrics.record(notificationStatuses: [
            NotificationLaneStatus(notification: "ops", link: "demo", pending: 2),
            NotificationLaneStatus(notification: "ops", link: "other", pending: 1),
        ])
        t.broker.metrics.record(sourceStatuses: [
            SourceStatus(source: "crm", stream: "events", state: .suspended, lagBytes: 4_096, lagMs: 2_500, appendedEntries: 9)
        ])
        let text = try await app.test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                #expect(response.status == .ok)
                return String(buffer: response.body)
            }
        }
        let (families, problems) = Self.parse(text)
        #expect(problems.isEmpty, "\(problems)")
        let catalog = Set(MetricCatalog.names)
        #expect(Set(families.keys) == catalog, "outside the catalog: \(Set(families.keys).subtracting(catalog)); missing: \(catalog.subtracting(families.keys))")
        func value(_ name: String, _ labels: String) -> Double? {
            families.values.lazy.flatMap(\.samples).first { $0.name == name && $0.labels == labels }?.value
        }
        let link = #"{link="demo",stream="events"}"#
        #expect(value("orgsync_appended_entries_total", #"{stream="events"}"#) == 6)
        #expect(value("orgsync_link_applied_entries_total", link) == 5)
        #expect(value("orgsync_link_rejected_entries_total", link) == 1)
        #expect(value("orgsync_link_dead_letters_failed", link) == 1)
        #expect(value("orgsync_link_lag_entries", link) == 0)
        #expect(value("orgsync_link_cursor", link) == 6)
        #expect(value("orgsync_link_state", #"{link="demo",stream="events",state="active"}"#) == 1)
        #expect(value("orgsync_link_probes_total", #"{link="demo",stream="events",result="failed"}"#) == 1)
        #expect(value("orgsync_link_probes_total", #"{link="demo",stream="events",result="answered"}"#) == 1)
        #expect((value("orgsync_link_apply_duration_seconds_count", link) ?? 0) >= 1)
        #expect(value("orgsync_notification_deliveries_total", #"{notification="ops",result="retried"}"#) == 1)
        #expect(value("orgsync_notification_pending_events", #"{notification="ops"}"#) == 3, "summed over the target's links")
        let source = #"{source="crm",stream="events"}"#
        #expect(value("orgsync_source_lag_bytes", source) == 4_096)
        #expect(value("orgsync_source_lag_seconds", source) == 2.5)
        #expect(value("orgsync_source_appended_entries_total", source) == 9)
        #expect(value("orgsync_source_state", #"{source="crm",stream="events",state="suspended"}"#) == 1)
        #expect(value("orgsync_source_state", #"{source="crm",stream="events",state="active"}"#) == 0)
        #expect(families["orgsync_link_apply_duration_seconds"]?.type == "histogram")
        #expect((value("process_resident_memory_bytes", "") ?? 0) > 1_000_000, "a Swift process holds more than 1 MB")
        #expect((value("process_open_fds", "") ?? 0) >= 3)
        #expect((value("process_max_fds", "") ?? 0) >= (value("process_open_fds", "") ?? .infinity))
        let started = try #require(value("process_start_time_seconds", ""))
        #expect(abs(started - Date().timeIntervalSince1970) < 24 * 3600, "the test process started today: \(started)")
        let available = try #require(value("orgsync_data_filesystem_avail_bytes", ""))
        let size = try #require(value("orgsync_data_filesystem_size_bytes", ""))
        #expect(available > 0 && available <= size)
    }

    @Test func theStateMachinesCountsBecomeCountersThatNeverGoBack() {
        var readings = CumulativeReadings()
        let key = CumulativeReadings.Key.link(family: "orgsync_link_suspensions_total", link: "a")
        #expect(readings.increment(key, reading: 0) == 0)
        #expect(readings.increment(key, reading: 3) == 3)
        #expect(readings.increment(key, reading: 3) == 0)
        #expect(readings.increment(key, reading: 5) == 2)
        #expect(readings.increment(key, reading: 1) == 0, "a lower reading adds nothing")
        #expect(readings.increment(key, reading: 6) == 1, "and the counter goes on from the highest reading")
        #expect(readings.increment(.link(family: "orgsync_link_suspensions_total", link: "b"), reading: 4) == 4, "per link")
        #expect(readings.increment(.processCPU, reading: .nan) == 0)
    }

    @Test func procStatParsesWithParenthesesAndSpacesInTheCommandName() throws {
        // Fields 3 onwards after ") "; utime 150, stime 50, starttime 1000, vsize 4096000, rss 300.
        let stat = "4242 (or (g) sync) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 7 0 1000 4096000 300 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        let reading = try #require(ProcessReading.parse(
            stat: stat, bootTimeSeconds: 1_700_000_000, ticksPerSecond: 100, pageBytes: 4096,
            openFileDescriptors: 9, maxFileDescriptors: 1024))
        #expect(reading.cpuSeconds == 2.0)
        #expect(reading.startTimeSeconds == 1_700_000_010)
        #expect(reading.virtualMemoryBytes == 4_096_000)
        #expect(reading.residentMemoryBytes == 300 * 4096)
        #expect(ProcessReading.parse(stat: "4242 (cut) S 1 2", bootTimeSeconds: 0, ticksPerSecond: 100, pageBytes: 4096,
                                     openFileDescriptors: 0, maxFileDescriptors: 0) == nil, "too few fields")
        #expect(ProcessReading.parse(stat: stat, bootTimeSeconds: 0, ticksPerSecond: 0, pageBytes: 4096,
                                     openFileDescriptors: 0, maxFileDescriptors: 0) == nil, "no clock rate")
        #expect(ProcessReading.bootTimeSeconds(procStat: "cpu  1 2 3\nintr 5\nbtime 1764201600\nprocesses 9\n") == 1_764_201_600)
        #expect(ProcessReading.bootTimeSeconds(procStat: "cpu 1\n") == nil)
        #expect(ProcessReading.read() != nil, "this is Linux: /proc is there")
    }
}
