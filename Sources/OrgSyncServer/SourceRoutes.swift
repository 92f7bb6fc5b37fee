import Hummingbird
import OrgSyncAPI
import OrgSyncBroker
import OrgSyncCore

/// `/v1/sources…`: capture sources' status, operator suspend/resume, sync log.
func addSourceRoutes(to routes: RouteGroups, broker: Broker) {
    let sources = broker.sources
    routes.produce.get(APIRoutes.sources) { request, context -> Response in
        jsonResponse(SourceList(sources: await sources.statuses().map(SourceStatusBody.init)))
    }
    routes.produce.get(APIRoutes.source) { request, context -> Response in
        let supervisor = try sources.supervisor(try context.parameters.require("source"))
        return jsonResponse(SourceStatusBody(await supervisor.status()))
    }
    routes.admin.post(APIRoutes.sourceSuspend) { request, context -> Response in
        let name = try context.parameters.require("source")
        try await sources.suspend(name)
        return jsonResponse(SourceStatusBody(await (try sources.supervisor(name)).status()))
    }
    routes.admin.post(APIRoutes.sourceResume) { request, context -> Response in
        let name = try context.parameters.require("source")
        let force = try parseBool(request.uri.queryParameters.get("force"), name: "force")
        try await sources.resume(name, force: force)
        return jsonResponse(SourceStatusBody(await (try sources.supervisor(name)).status()))
    }
    routes.produce.get(APIRoutes.sourceSyncLog) { request, context -> Response in
        try syncLogPage(try sources.supervisor(try context.parameters.require("source")).syncLog, request)
    }
}

extension SourceStatusBody {
    init(_ status: SourceStatus) {
        self.init(
            name: status.source, stream: status.stream, state: status.state.rawValue, heldDown: status.heldDown,
            positionCommit: status.position?.commit, positionChange: status.position?.change, lagBytes: status.lagBytes, lagMs: status.lagMs,
            lastAppendTimeMs: status.lastAppendTimeMs, lastError: status.lastError,
            probeProgress: "\(status.probeSuccessCount)/\(status.probeThreshold)", timeInStateMs: status.timeInStateMs,
            suspensions: status.suspensionCount, appendedEntries: status.appendedEntries, skippedChanges: status.skippedChanges,
            fencedAppends: status.fencedAppends,
            transactions: status.transactions, rounds: status.rounds, running: status.isRunning)
    }
}
