import Foundation
import Hummingbird
import OrgSyncAPI
import OrgSyncCore

/// `GET /v1/links/{link}/samples` and `GET /v1/streams/{stream}/samples`: the recent readings
/// the status page draws its charts from (``RecentSamples``). Two routes, one per resource, like
/// the rest of the API: a link's body and a stream's are different shapes, an unknown name is the
/// 404 of its resource, and the page asks only for what its view shows.
func addSampleRoutes(to router: Router<BrokerRequestContext>, broker: Broker, authenticator: Authenticator) {
    router.get("/v1/links/{link}/samples") { request, context -> Response in
        try await authenticator.authorize(request, context, .produce)
        let name = try context.parameters.require("link")
        guard let link = broker.configuration.links.first(where: { $0.name == name }) else {
            throw APIError.notFound("no link named \(name)")
        }
        let windowMs = try sampleWindowMs(request.uri.queryParameters.get("window_ms"))
        let readings = broker.samples.link(name, windowMs: windowMs, nowMs: wallClockMs()) ?? []
        return jsonResponse(LinkSamplesBody(
            link: name, stream: link.stream, windowMs: windowMs, samplesMax: RecentSamples.samplesMax,
            samples: readings.map {
                LinkSampleBody(timeMs: $0.sample.timeMs, state: $0.sample.state.rawValue, heldDown: $0.sample.heldDown,
                               lag: $0.sample.lag, cursor: $0.sample.cursor, appliedEntries: $0.sample.appliedCount,
                               appliedPerSecond: $0.appliedPerSecond)
            }))
    }
    router.get("/v1/streams/{stream}/samples") { request, context -> Response in
        try await authenticator.authorize(request, context, .produce)
        let name = try context.parameters.require("stream")
        guard broker.streams[name] != nil else { throw APIError.notFound("no stream named \(name)") }
        let windowMs = try sampleWindowMs(request.uri.queryParameters.get("window_ms"))
        let readings = broker.samples.stream(name, windowMs: windowMs, nowMs: wallClockMs()) ?? []
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

/// Milliseconds since 1970 (UTC): the time of readings and of the sync log's records.
func wallClockMs() -> UInt64 {
    UInt64(max(0, Date().timeIntervalSince1970 * 1000))
}
