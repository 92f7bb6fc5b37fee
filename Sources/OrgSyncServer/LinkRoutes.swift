import Foundation
import HTTPTypes
import Hummingbird
import OrgSyncBroker
import OrgSyncCore
import OrgSyncPluginAPI
import OrgSyncAPI

/// `/v1/links…`: status, operator suspend/resume, cursor, sync log and dead letters.
func addLinkRoutes(to routes: RouteGroups, broker: Broker) {
    let links = broker.links
    routes.produce.get(APIRoutes.links) { request, context -> Response in
        return jsonResponse(LinkList(links: await links.statuses().map(LinkStatusBody.init)))
    }
    routes.produce.get(APIRoutes.link) { request, context -> Response in
        let supervisor = try links.supervisor(try context.parameters.require("link"))
        return jsonResponse(LinkStatusBody(await supervisor.status()))
    }
    routes.admin.post(APIRoutes.linkSuspend) { request, context -> Response in
        let name = try context.parameters.require("link")
        try await links.suspend(name)
        return jsonResponse(LinkStatusBody(await (try links.supervisor(name)).status()))
    }
    routes.admin.post(APIRoutes.linkResume) { request, context -> Response in
        let name = try context.parameters.require("link")
        let force = try parseBool(request.uri.queryParameters.get("force"), name: "force")
        try await links.resume(name, force: force)
        return jsonResponse(LinkStatusBody(await (try links.supervisor(name)).status()))
    }
    routes.admin.post(APIRoutes.linkReset) { request, context -> Response in
        let supervisor = try links.supervisor(try context.parameters.require("link"))
        guard let from = try parseUInt(request.uri.queryParameters.get("from"), name: "from") else {
            throw APIError.badRequest("query parameter from (a non-negative integer) is required")
        }
        _ = try await supervisor.changePosition(.reset(from: Offset(rawValue: from)))
        return jsonResponse(LinkStatusBody(await supervisor.status()))
    }
    routes.admin.post(APIRoutes.linkAdopt) { request, context -> Response in
        let supervisor = try links.supervisor(try context.parameters.require("link"))
        _ = try await supervisor.changePosition(.adopt)
        return jsonResponse(LinkStatusBody(await supervisor.status()))
    }
    routes.admin.post(APIRoutes.linkCursor) { request, context -> Response in
        let name = try context.parameters.require("link")
        let supervisor = try links.supervisor(name)
        guard let offset = try parseUInt(request.uri.queryParameters.get("offset"), name: "offset") else {
            throw APIError.badRequest("query parameter offset (a non-negative integer) is required")
        }
        _ = try await supervisor.changePosition(.reset(from: Offset(rawValue: offset)))
        return jsonResponse(LinkStatusBody(await supervisor.status()))
    }
    routes.produce.get(APIRoutes.linkSyncLog) { request, context -> Response in
        try syncLogPage(try links.supervisor(try context.parameters.require("link")).syncLog, request)
    }
    routes.produce.get(APIRoutes.linkDeadLetters) { request, context -> Response in
        let supervisor = try links.supervisor(try context.parameters.require("link"))
        let limit = try pageLimit(request)
        let before = try parseUInt(request.uri.queryParameters.get("before"), name: "before").map { Offset($0) }
        let status: EntryStatus?
        switch request.uri.queryParameters.get("status").map({ String($0) }) {
        case nil: status = nil
        case "failed"?: status = .failed
        case "resolved"?: status = .resolved
        case let other?: throw APIError.badRequest("status must be failed or resolved, not \(other)")
        }
        let letters = supervisor.deadLetters.page(beforeOffset: before, status: status, limit: limit)
        return jsonResponse(DeadLetterPage(
            deadLetters: letters.map(DeadLetterBody.init), nextBefore: letters.count == limit ? letters.last?.offset.rawValue : nil))
    }
    routes.admin.post(APIRoutes.linkDeadLetterRetry) { request, context -> Response in
        let supervisor = try links.supervisor(try context.parameters.require("link"))
        guard let offset = try parseUInt(try context.parameters.require("offset"), name: "offset") else {
            throw APIError.badRequest("the offset must be a non-negative integer")
        }
        return jsonResponse(DeadLetterBody(try await supervisor.retryDeadLetter(Offset(rawValue: offset))))
    }
}

/// One page of a link's or a source's sync log (`before`, `limit`), newest first.
func syncLogPage(_ syncLog: SyncLog, _ request: Request) throws -> Response {
    let limit = try pageLimit(request)
    let before = try parseUInt(request.uri.queryParameters.get("before"), name: "before")
    let records = syncLog.page(beforeSequence: before, limit: limit)
    return jsonResponse(SyncLogPage(records: records.map(SyncLogRecordBody.init), nextBefore: records.count == limit ? records.last?.sequence : nil))
}

func pageLimit(_ request: Request) throws -> Int {
    guard let text = request.uri.queryParameters.get("limit") else { return 100 }
    guard let value = Int(text), (1...1000).contains(value) else { throw APIError.badRequest("limit must be 1...1000") }
    return value
}

/// A non-negative integer parameter, at most `Int64.max`: offsets and sequence numbers are
/// int64 in the API (JSON clients and the OpenAPI document), though stored as UInt64.
func parseUInt(_ text: String?, name: String) throws -> UInt64? {
    guard let text else { return nil }
    guard let value = UInt64(text), value <= UInt64(Int64.max) else {
        throw APIError.badRequest("\(name) must be an integer in 0...\(Int64.max)")
    }
    return value
}

func parseBool(_ text: String?, name: String) throws -> Bool {
    switch text {
    case nil, "false"?, "0"?: return false
    case "true"?, "1"?, ""?: return true
    default: throw APIError.badRequest("\(name) must be true or false")
    }
}

extension LinkStatusBody {
    init(_ status: LinkStatus) {
        self.init(
            name: status.link, stream: status.stream, state: status.state.rawValue, heldDown: status.heldDown,
            cursor: status.cursor.rawValue, endOffset: status.endOffset.rawValue, lag: status.lagCount,
            lastError: status.lastError, probeProgress: "\(status.probeSuccessCount)/\(status.probeThreshold)",
            probeSuccesses: status.probeSuccessCount, probeThreshold: status.probeThreshold, timeInStateMs: status.timeInStateMs,
            suspensions: status.suspensionCount, flaps: status.flapCount, holdDowns: status.holdDownCount,
            rejectedEntries: status.rejectedCount, appliedEntries: status.appliedCount, deadLettersFailed: status.deadLetterFailedCount,
            running: status.isRunning, streamId: status.streamID, epoch: status.epoch)
    }
}

extension SyncLogRecordBody {
    init(_ record: SyncLogRecord) {
        self.init(
            sequence: record.sequence, timeMs: record.timeMs, event: record.event.rawValue, state: record.state.rawValue,
            reason: record.reason, offset: record.offset?.rawValue, status: record.status?.rawValue, targetCode: record.targetCode)
    }
}

extension DeadLetterBody {
    init(_ letter: DeadLetter) {
        self.init(
            offset: letter.offset.rawValue, entry: letter.entryJSON, error: letter.error, targetCode: letter.targetCode,
            status: letter.status.rawValue, failedAtMs: letter.failedAtMs, resolvedAtMs: letter.resolvedAtMs,
            attempts: letter.attemptCount)
    }
}
