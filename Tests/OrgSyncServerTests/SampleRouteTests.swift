import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import OrgSyncAPI
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
@testable import OrgSyncBroker
@testable import OrgSyncServer
import Testing

/// `GET /v1/links/{link}/samples` and `GET /v1/streams/{stream}/samples`: fed by the links'
/// 1-second loop, read with a produce token, bad windows refused with 400.
@Suite struct SampleRouteTests {
    /// The loop of ``LinkService`` (at a short interval) records readings the routes serve:
    /// the entries appended show in the stream's readings and as applied by the link.
    @Test func theLinkLoopFeedsTheReadingsTheRoutesServe() async throws {
        let t = try LinkedBroker()
        let loop = Task { await LinkService(broker: t.broker, metricsIntervalMs: 20).exportMetrics() }
        defer { loop.cancel() }
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            // A rate needs a reading before the append: a bounded poll for the loop's first.
            let firstDeadline = ContinuousClock.now + .seconds(10)
            var first: StreamSamplesBody?
            while ContinuousClock.now < firstDeadline, first?.samples.isEmpty ?? true {
                let response = try await client.execute(uri: "/v1/streams/events/samples", method: .get, headers: headers(TestBroker.produceToken, nil)) { $0 }
                first = try APIJSON.decoder().decode(StreamSamplesBody.self, from: Data(response.body.readableBytesView))
                if first?.samples.isEmpty ?? true { try await Task.sleep(for: .milliseconds(5)) }
            }
            try #require(first?.samples.isEmpty == false, "no reading of the stream within 10 s")
            let body = (0..<30).map { entryJSON($0) }.joined(separator: "\n")
            try await client.execute(uri: "/v1/streams/events/entries", method: .post,
                                     headers: headers(TestBroker.produceToken, "application/x-ndjson"), body: ByteBuffer(string: body)) { response in
                #expect(response.status == .created)
            }
            try await t.waitFor("applied") { $0.cursor == 30 }
            // Readings are taken by the loop: a bounded poll until one shows the applied entries.
            let deadline = ContinuousClock.now + .seconds(10)
            var link: LinkSamplesBody?
            while ContinuousClock.now < deadline {
                let response = try await client.execute(uri: "/v1/links/demo/samples", method: .get, headers: headers(TestBroker.produceToken, nil)) { $0 }
                #expect(response.status == .ok)
                link = try APIJSON.decoder().decode(LinkSamplesBody.self, from: Data(response.body.readableBytesView))
                if link?.samples.last?.appliedEntries == 30 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let readings = try #require(link)
            #expect(readings.link == "demo")
            #expect(readings.stream == "events")
            #expect(readings.samplesMax == RecentSamples.samplesMax)
            #expect(readings.windowMs == RecentSamples.windowMsMax)
            #expect(readings.samples.last?.appliedEntries == 30)
            #expect(readings.samples.last?.cursor == 30)
            #expect(readings.samples.last?.state == "active")
            #expect(readings.samples.first?.appliedPerSecond == nil, "no rate before the first reading")
            #expect(readings.samples.dropFirst().allSatisfy { $0.appliedPerSecond != nil })
            #expect(zip(readings.samples, readings.samples.dropFirst()).allSatisfy { $0.timeMs <= $1.timeMs }, "oldest first")

            let response = try await client.execute(uri: "/v1/streams/events/samples?window_ms=900000", method: .get,
                                                    headers: headers(TestBroker.produceToken, nil)) { $0 }
            #expect(response.status == .ok)
            let stream = try APIJSON.decoder().decode(StreamSamplesBody.self, from: Data(response.body.readableBytesView))
            #expect(stream.stream == "events")
            #expect(stream.samples.last?.endOffset == 30)
            #expect(stream.samples.contains { ($0.appendedPerSecond ?? 0) > 0 }, "the append shows as a rate: \(stream.samples)")
        }
    }

    @Test func readingsNeedATokenAKnownNameAndAWindowInRange() async throws {
        let t = try LinkedBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            for uri in ["/v1/links/demo/samples", "/v1/streams/events/samples"] {
                try await client.execute(uri: uri, method: .get, headers: headers(nil, nil)) { response in
                    #expect(response.status == .unauthorized, "\(uri)")
                }
                for window in ["0", "900001", "-5", "abc", "", "1.5", "18446744073709551616"] {
                    try await client.execute(uri: uri + "?window_ms=" + window, method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                        #expect(response.status == .badRequest, "\(uri) window_ms=\(window)")
                        #expect(errorCode(response) == "bad_request")
                        #expect(String(buffer: response.body).contains("window_ms"))
                    }
                }
                try await client.execute(uri: uri + "?window_ms=1", method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                    #expect(response.status == .ok, "\(uri)")
                    #expect(json(response)["window_ms"] as? Int == 1)
                    #expect((json(response)["samples"] as? [Any])?.isEmpty == true, "nothing recorded yet")
                }
            }
            for uri in ["/v1/links/nope/samples", "/v1/streams/nope/samples"] {
                try await client.execute(uri: uri, method: .get, headers: headers(TestBroker.produceToken, nil)) { response in
                    #expect(response.status == .notFound, "\(uri)")
                    #expect(errorCode(response) == "not_found")
                }
            }
        }
        #expect((t.broker.streams["events"] as? StreamLog)?.endOffset == 0)
    }
}
