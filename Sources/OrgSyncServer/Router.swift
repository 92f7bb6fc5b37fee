import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import OrgSyncBroker
import OrgSyncLog
import OrgSyncNotifications
import OrgSyncPluginAPI
import OrgSyncAPI

/// The request context of the broker's routes.
public struct BrokerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The connection the request came on (for its client certificate).
    public let channel: any Channel
    public init(source: Source) {
        coreContext = .init(source: source)
        channel = source.channel
    }
    /// Bodies are read and limited by the handlers themselves (streaming, with clear errors).
    public var maxUploadSize: Int { Int.max }
}

/// Builds the broker's HTTP routes. Tests call this directly (Hummingbird's `.router` test
/// client); `orgsync serve` wraps it in an `Application`. Every GET route answers HEAD too, as
/// GET without a body (RFC 9110). `bodyBudget` is the budget of request-body bytes in flight
/// (default: `server.inflight_body_bytes_max`, waiting at most 1 s for room).
public func buildRouter(
    broker: Broker, authenticator: Authenticator, ready: @escaping @Sendable () -> Bool = { true },
    bodyBudget: InflightBodyBudget? = nil
) -> Router<BrokerRequestContext> {
    let router = Router(context: BrokerRequestContext.self, options: .autoGenerateHeadEndpoints)
    let config = broker.configuration
    let api = EntriesAPI(broker: broker, limits: config.server,
                         bodyBudget: bodyBudget ?? InflightBodyBudget(bytesMax: config.server.inflightBodyBytesMax))
    // Added first, so it wraps every route and the answers for unmatched ones.
    router.add(middleware: HTTPSemanticsMiddleware())
    // Inside it (a HEAD's error answer is built from the API error): the broker's errors answered.
    router.add(middleware: BrokerErrorMiddleware())
    // The routes by the role they need; the status page's own files and whoami need none.
    let routes = RouteGroups(
        open: router.group(),
        produce: router.group().add(middleware: RequireRole(authenticator: authenticator, role: .produce)),
        admin: router.group().add(middleware: RequireRole(authenticator: authenticator, role: .admin)))

    routes.produce.post(APIRoutes.entries) { request, context -> Response in
        let stream = try context.parameters.require("stream")
        do {
            let (result, replayed) = try await api.append(request: request, stream: stream)
            var response = jsonResponse(result, status: .created)
            if replayed { response.headers[idempotentReplayedField] = "true" }
            return response
        } catch {
            broker.metrics.appendRefused()
            throw error
        }
    }
    routes.produce.get(APIRoutes.streams) { _, _ -> Response in
        var bodies: [StreamInfoBody] = []
        for name in broker.streams.keys.sorted() {
            if let store = broker.streams[name] { bodies.append(try await StreamInfoBody(store)) }
        }
        return jsonResponse(StreamList(streams: bodies))
    }
    routes.produce.get(APIRoutes.stream) { _, context -> Response in
        jsonResponse(try await StreamInfoBody(try broker.stream(try context.parameters.require("stream"))))
    }
    addLinkRoutes(to: routes, broker: broker)
    addSourceRoutes(to: routes, broker: broker)
    addNotificationRoutes(to: routes, broker: broker)
    addClusterRoutes(to: routes, broker: broker)
    addSampleRoutes(to: routes, broker: broker)
    addStatusPageRoutes(to: routes, authenticator: authenticator)
    let health = config.auth.openHealth ? routes.open : routes.produce
    health.get(APIRoutes.healthLive) { _, _ -> Response in
        jsonResponse(["status": "ok"])
    }
    health.get(APIRoutes.healthReady) { _, _ -> Response in
        guard ready() else { throw APIError(.serviceUnavailable, code: "not_ready", "the broker is starting or stopping") }
        return jsonResponse(["status": "ready"])
    }
    let metrics = config.auth.openMetrics ? routes.open : routes.produce
    metrics.get(APIRoutes.metrics) { _, _ -> Response in
        broker.metrics.recordProcessAndDisk(dataDirectory: broker.dataDirectory)
        if let notifier = broker.notifier { broker.metrics.record(notificationStatuses: notifier.status()) }
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(bytes: broker.metrics.render())))
    }
    routes.open.get(APIRoutes.openAPIDocument) { _, _ -> Response in
        Response(status: .ok, headers: [.contentType: "application/yaml"], body: .init(byteBuffer: ByteBuffer(string: openAPIDocument)))
    }
    // Added after every route, so it runs only for requests no route took.
    router.add(middleware: UnmatchedRouteMiddleware())
    return router
}

/// The router's routes by the credentials they need (``RequireRole``).
struct RouteGroups {
    /// No credentials: the status page's files, `whoami`, the OpenAPI document (and health and
    /// metrics when `auth.open_health`/`auth.open_metrics` say so).
    let open: RouterGroup<BrokerRequestContext>
    /// Reading, and appending.
    let produce: RouterGroup<BrokerRequestContext>
    /// Changing a link: suspend, resume, reset, adopt, cursor, dead-letter retry.
    let admin: RouterGroup<BrokerRequestContext>
}

let idempotencyKeyField = HTTPField.Name("Idempotency-Key")!
let idempotentReplayedField = HTTPField.Name("Idempotent-Replayed")!

/// The methods answered on `route`: its table's methods, and HEAD where it answers GET.
func answeredMethods(_ route: APIRoute) -> [HTTPRequest.Method] {
    let methods = route.methods.compactMap { HTTPRequest.Method($0) }
    return methods.contains(.get) && !methods.contains(.head) ? methods + [.head] : methods
}

extension RouterGroup<BrokerRequestContext> {
    /// Registers `handler` for GET (and so HEAD) on `route` of the API's table.
    @discardableResult
    func get(_ route: APIRoute, use handler: @escaping @Sendable (Request, BrokerRequestContext) async throws -> Response) -> Self {
        assert(route.methods.contains("GET"), "\(route.pattern) does not list GET in APIRoutes")
        return get(RouterPath(route.pattern), use: handler)
    }

    /// Registers `handler` for POST on `route` of the API's table.
    @discardableResult
    func post(_ route: APIRoute, use handler: @escaping @Sendable (Request, BrokerRequestContext) async throws -> Response) -> Self {
        assert(route.methods.contains("POST"), "\(route.pattern) does not list POST in APIRoutes")
        return post(RouterPath(route.pattern), use: handler)
    }
}

/// What every request gets from HTTP itself, before and around the routes: a transfer coding
/// other than chunked is `501` (RFC 9112 §6.1), and the answer to HEAD, an error's too, has
/// the GET answer's header fields and no body (RFC 9110 §9.3.2).
struct HTTPSemanticsMiddleware: RouterMiddleware {
    typealias Context = BrokerRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let codings = request.headers[values: .transferEncoding].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        if let unsupported = codings.first(where: { $0 != "chunked" }) {
            return try bodyless(APIError(.notImplemented, code: "transfer_coding_not_implemented",
                                         "Transfer-Encoding '\(unsupported)' is not implemented; send the body with Content-Length or chunked (and Content-Encoding: gzip to compress it)"),
                                request, context)
        }
        guard request.method == .head else { return try await next(request, context) }
        do {
            return try await next(request, context).createHeadResponse()
        } catch let error as any HTTPResponseError {
            return try bodyless(error, request, context)
        }
    }

    private func bodyless(_ error: any HTTPResponseError, _ request: Request, _ context: Context) throws -> Response {
        let response = try error.response(from: request, context: context)
        return request.method == .head ? response.createHeadResponse() : response
    }
}

/// Answers requests that no route took in the API's error shape: 405 with `Allow` when the path
/// is a route's but the method is not one of its methods (RFC 9110), else 404.
struct UnmatchedRouteMiddleware: RouterMiddleware {
    typealias Context = BrokerRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let path = request.uri.path
            guard let route = APIRoutes.route(matching: path) else {
                throw APIError.notFound("no route for \(path)")
            }
            let allow = answeredMethods(route).map(\.rawValue).joined(separator: ", ")
            var notAllowed = APIError(.methodNotAllowed, code: "method_not_allowed", "\(path) answers \(allow), not \(request.method.rawValue)")
            notAllowed.headers[.allow] = allow
            throw notAllowed
        }
    }
}

extension StreamInfoBody {
    init(_ log: any StreamStore) async throws {
        let info = try await log.currentInfo()
        self.init(
            name: info.name, startOffset: info.startOffset, endOffset: info.endOffset, segments: info.segmentCount,
            storedBytes: info.storedBytes, rawBytes: info.rawBytes, compressionRatio: info.compressionRatio)
    }
}

/// Reads, limits and validates append requests. Nothing is appended unless every entry of
/// the request is valid.
struct EntriesAPI: Sendable {
    let broker: Broker
    let limits: BrokerConfiguration.Server
    let bodyBudget: InflightBodyBudget

    /// The body to answer with, and whether it replays an earlier answer (an idempotency key
    /// seen before: nothing was appended).
    func append(request: Request, stream: String) async throws -> (AppendBody, replayed: Bool) {
        _ = try broker.stream(stream)
        let keys = request.headers[values: idempotencyKeyField]
        guard keys.count <= 1 else { throw APIError.badRequest("more than one Idempotency-Key header") }
        let key = keys.first
        if let key, !IdempotencyKey.isValid(key) {
            throw APIError(.badRequest, code: "invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters")
        }
        let mediaType = (request.headers[.contentType] ?? "").split(separator: ";").first.map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        } ?? ""
        let ndjson: Bool
        switch mediaType {
        case "application/json": ndjson = false
        case "application/x-ndjson", "application/ndjson", "application/jsonl": ndjson = true
        default:
            throw APIError.unsupportedMediaType("Content-Type must be application/json (one entry) or application/x-ndjson (one entry per line), not '\(mediaType)'")
        }
        let limit = ndjson ? limits.bodyBytesMax : min(limits.bodyBytesMax, limits.entryBytesMax)
        let coding = try contentCoding(request.headers[values: .contentEncoding])
        let length = request.headers[.contentLength].flatMap { Int($0) }
        if let length, length > limit {
            throw APIError.tooLarge("the body is \(length) bytes; the limit is \(limit)")
        }
        // The body's bytes count against the broker-wide budget from before they are read until
        // the append is answered (the entries are copies of them until then).
        let reservation = BodyReservation(budget: bodyBudget, capBytes: limit)
        do {
            if let length, coding == nil { try await reservation.cover(length) }
            let answer = try await readAndAppend(
                request, limit: limit, coding: coding, reservation: reservation, ndjson: ndjson, stream: stream, key: key)
            await reservation.release()
            return answer
        } catch {
            await reservation.release()
            throw error
        }
    }

    /// Reads the body, splits it and appends the entries. Its own function so that the body and
    /// the entries are freed when it returns, before the reservation is released (a release
    /// that empties the budget gives freed pages back to the system; a debug build keeps a local
    /// alive to the end of its scope).
    private func readAndAppend(
        _ request: Request, limit: Int, coding: Zlib.Format?, reservation: BodyReservation, ndjson: Bool,
        stream: String, key: String?
    ) async throws -> (AppendBody, replayed: Bool) {
        // The raw body is gone once it is split: only the entries stay in memory while the
        // append waits to be durable (they are what the reservation covers).
        let entries = try await entries(of: request, limit: limit, coding: coding, reservation: reservation, ndjson: ndjson)
        return try await append(entries: entries, stream: stream, key: key)
    }

    private func entries(
        of request: Request, limit: Int, coding: Zlib.Format?, reservation: BodyReservation, ndjson: Bool
    ) async throws -> [[UInt8]] {
        let body = try await readBody(request, limit: limit, coding: coding, reservation: reservation)
        let entries = ndjson ? try splitLines(body) : [try validate(trimmed(body[...]), line: nil)]
        guard !entries.isEmpty else { throw APIError.badRequest("the body holds no entry") }
        return entries
    }

    private func append(entries: [[UInt8]], stream: String, key: String?) async throws -> (AppendBody, replayed: Bool) {
        let outcome = try await broker.append(stream: stream, entries: entries, idempotencyKey: key)
        let result = outcome.result
        let body = AppendBody(firstOffset: result.firstOffset, lastOffset: result.lastOffset, count: result.count)
        if case .replayed = outcome { return (body, true) }
        return (body, false)
    }

    /// The body's content coding (RFC 9110 §8.4): nil for none or `identity`, else gzip or
    /// deflate (the zlib format). Any other coding, or more than one, is 415.
    func contentCoding(_ values: [String]) throws -> Zlib.Format? {
        let codings = values.flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            .filter { $0 != "identity" && !$0.isEmpty }
        guard codings.count <= 1 else {
            throw APIError.unsupportedMediaType("Content-Encoding '\(codings.joined(separator: ", "))': only one of gzip, deflate or identity is accepted")
        }
        switch codings.first {
        case nil: return nil
        case "gzip", "x-gzip": return .gzip
        case "deflate": return .zlib
        case let other?:
            var error = APIError.unsupportedMediaType("Content-Encoding '\(other)' is not accepted; use gzip, deflate or identity")
            error.headers[.acceptEncoding] = "gzip, deflate, identity"
            throw error
        }
    }

    /// Collects the body, inflating it when `coding` says so, and refuses it as soon as the bytes
    /// read or the bytes inflated pass `limit` (never buffers more; a zip bomb is found while
    /// inflating). Buffered bytes are covered by `reservation` as they grow.
    func readBody(_ request: Request, limit: Int, coding: Zlib.Format?, reservation: BodyReservation) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        // With a Content-Length, one allocation of the right size: growing by doubling would
        // hold up to twice the body at once.
        if coding == nil, let length = request.headers[.contentLength].flatMap({ Int($0) }), length > 0, length <= limit {
            bytes.reserveCapacity(length)
        }
        var wireBytes = 0
        let inflater = try coding.map { try Zlib.Inflater(format: $0, outputBytesMax: limit) }
        for try await buffer in request.body {
            wireBytes += buffer.readableBytes
            guard wireBytes <= limit else {
                throw APIError.tooLarge("the body is over the limit of \(limit) bytes")
            }
            if let inflater {
                do {
                    try buffer.withUnsafeReadableBytes { try inflater.inflate($0, into: &bytes) }
                } catch is Zlib.OutputLimitExceeded {
                    throw APIError.tooLarge("the body inflates to more than the limit of \(limit) bytes")
                } catch let error as Zlib.Error {
                    throw APIError.badRequest("the \(inflater.format) body cannot be inflated: \(error.message)")
                }
            } else {
                bytes.append(contentsOf: buffer.readableBytesView)
            }
            try await reservation.cover(bytes.count)
        }
        if let inflater, !inflater.isFinished {
            throw APIError.badRequest("the \(inflater.format) body is truncated")
        }
        return bytes
    }

    func splitLines(_ body: [UInt8]) throws -> [[UInt8]] {
        var entries: [[UInt8]] = []
        var lineNumber = 0
        for line in body.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            let text = trimmed(line)
            if text.isEmpty { continue }
            guard entries.count < limits.requestEntriesMax else {
                throw APIError.tooLarge("more than \(limits.requestEntriesMax) entries in one request (line \(lineNumber))")
            }
            entries.append(try validate(text, line: lineNumber))
        }
        return entries
    }

    func validate(_ bytes: ArraySlice<UInt8>, line: Int?) throws -> [UInt8] {
        let at = line.map { "line \($0): " } ?? ""
        guard bytes.count <= limits.entryBytesMax else {
            throw APIError.tooLarge("\(at)the entry is \(bytes.count) bytes; the limit is \(limits.entryBytesMax)")
        }
        do {
            _ = try Entry.parse(bytes)
        } catch {
            throw APIError.invalidEntry("\(at)\(error); nothing was appended")
        }
        return Array(bytes)
    }

    func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var slice = bytes
        while let first = slice.first, first == 0x20 || first == 0x09 || first == 0x0D || first == 0x0A { slice = slice.dropFirst() }
        while let last = slice.last, last == 0x20 || last == 0x09 || last == 0x0D || last == 0x0A { slice = slice.dropLast() }
        return slice
    }
}

/// One request's share of the ``InflightBodyBudget``: grows before the body's bytes are held
/// (in steps, to keep the budget's actor off the per-chunk path) and is released when the
/// request is answered.
final class BodyReservation {
    let budget: InflightBodyBudget
    /// The most this request can hold (its body limit).
    let capBytes: Int
    private(set) var reservedBytes = 0
    /// The smallest step the reservation grows by.
    static let stepBytes = 64 << 10

    init(budget: InflightBodyBudget, capBytes: Int) {
        self.budget = budget
        self.capBytes = capBytes
    }

    /// Makes sure `bytes` are reserved; 503 with `Retry-After` when the budget has no room
    /// within its wait.
    func cover(_ bytes: Int) async throws {
        guard bytes > reservedBytes else { return }
        let extra = min(max(bytes - reservedBytes, Self.stepBytes), max(capBytes, bytes) - reservedBytes)
        guard await budget.reserve(extra) else {
            var busy = APIError(.serviceUnavailable, code: "request_bodies_over_budget",
                                "the broker holds its limit of request bodies in flight (server.inflight_body_bytes_max); nothing was appended, retry shortly")
            busy.headers[.retryAfter] = "1"
            throw busy
        }
        reservedBytes += extra
    }

    func release() async {
        await budget.release(reservedBytes)
        reservedBytes = 0
    }
}
