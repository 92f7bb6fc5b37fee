import Foundation
import Hummingbird
import OrgSyncAPI
import OrgSyncBroker
import OrgSyncCore
import OrgSyncLog

/// `GET /v1/links/{link}/samples` and `GET /v1/streams/{stream}/samples`: the recent readings
/// the status page draws its charts from (``RecentSamples``). Two routes, one per resource, like
/// the rest of the API: a link's body and a stream's are different shapes, an unknown name is the
/// 404 of its resource, and the page asks only for what its view shows.
func addSampleRoutes(to routes: RouteGroups, broker: Broker) {
    routes.produce.get(APIRoutes.linkSamples) { request, context -> Response in
        let name = try context.parameters.require("link")
        guard let link = broker.configuration.hostedHere.links.first(where: { $0.name == name }) else {
            throw BrokerError.noSuchLink(name)
        }
        let windowMs = try sampleWindowMs(request.uri.queryParameters.get("window_ms"))
        let readings = broker.samples.link(name, windowMs: windowMs, nowMs: UInt64(clamping: wallClockMs())) ?? []
        return jsonResponse(LinkSamplesBody(
            link: name, stream: link.stream, windowMs: windowMs, samplesMax: RecentSamples.samplesMax,
            samples: readings.map {
                LinkSampleBody(timeMs: $0.sample.timeMs, state: $0.sample.state.rawValue, heldDown: $0.sample.heldDown,
                               lag: $0.sample.lag, cursor: $0.sample.cursor, appliedEntries: $0.sample.appliedCount,
                               appliedPerSecond: $0.appliedPerSecond)
            }))
    }
    routes.produce.get(APIRoutes.streamSamples) { request, context -> Response in
        let name = try context.parameters.require("stream")
        _ = try broker.stream(name)
        let windowMs = try sampleWindowMs(request.uri.queryParameters.get("window_ms"))
        let readings = broker.samples.stream(name, windowMs: windowMs, nowMs: UInt64(clamping: wallClockMs())) ?? []
        return jsonResponse(StreamSamplesBody(
            stream: name, windowMs: windowMs, samplesMax: RecentSamples.samplesMax,
            samples: readings.map {
                StreamSampleBody(timeMs: $0.sample.timeMs, endOffset: $0.sample.endOffset, appendedPerSecond: $0.appendedPerSecond)
            }))
    }
}

/// The `window_ms` query parameter: 1...``RecentSamples/windowMsMax`` (15 minutes, the default).
func sampleWindowMs(_ text: String?) throws -> UInt64 {
    guard let text else { return RecentSamples.windowMsMax }
    guard let value = UInt64(text), (1...RecentSamples.windowMsMax).contains(value) else {
        throw APIError.badRequest("window_ms must be an integer in 1...\(RecentSamples.windowMsMax) (milliseconds)")
    }
    return value
}
