import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import OrgSyncAPI
import OrgSyncBroker
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI

/// An error answered as `{"error":{"code","message"}}` with its HTTP status.
public struct APIError: Error, HTTPResponseError, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    /// Stable, machine-readable: `bad_request`, `invalid_entry`, `payload_too_large`, …
    public var code: String
    public var message: String
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    public static func notFound(_ message: String) -> APIError { APIError(.notFound, code: "not_found", message) }
    public static func badRequest(_ message: String) -> APIError { APIError(.badRequest, code: "bad_request", message) }
    public static func invalidEntry(_ message: String) -> APIError { APIError(.badRequest, code: "invalid_entry", message) }
    public static func tooLarge(_ message: String) -> APIError { APIError(.contentTooLarge, code: "payload_too_large", message) }
    public static func unsupportedMediaType(_ message: String) -> APIError {
        APIError(.unsupportedMediaType, code: "unsupported_media_type", message)
    }
    public static func unauthorized(_ message: String) -> APIError {
        var error = APIError(.unauthorized, code: "unauthorized", message)
        error.headers[.wwwAuthenticate] = #"Bearer realm="orgsync""#
        return error
    }
    public static func forbidden(_ message: String) -> APIError { APIError(.forbidden, code: "forbidden", message) }
    public static func conflict(_ message: String) -> APIError { APIError(.conflict, code: "conflict", message) }

    /// The HTTP answer to an error the broker, its streams or its links threw, or nil for one
    /// that is not theirs (Hummingbird's own errors; anything else is a 500). The one place where
    /// the core's errors become API errors: ``BrokerErrorMiddleware`` applies it to every route.
    public static func from(_ error: any Error) -> APIError? {
        switch error {
        case let error as APIError: error
        case let error as BrokerError: from(error)
        case let error as LogError: from(error)
        case let error as LinkSupervisorError: from(error)
        default: nil
        }
    }

    static func from(_ error: BrokerError) -> APIError {
        switch error {
        case .noSuchStream, .noSuchLink, .noSuchSource, .linkOnAnotherMember, .sourceOnAnotherMember:
            return APIError.notFound("\(error)")
        case .linkDiverged(let name):
            return APIError(.conflict, code: "link_diverged",
                            "\(error) (POST /v1/links/\(name)/reset?from=N or POST /v1/links/\(name)/adopt)")
        case .appendTooLarge:
            return APIError.tooLarge("\(error)")
        case .streamUnavailable:
            var unavailable = APIError(.serviceUnavailable, code: "stream_unavailable", "\(error)")
            unavailable.headers[.retryAfter] = "1"
            return unavailable
        }
    }

    /// An operator's request a link refused: 404 for a dead letter it does not have, 502 when
    /// its target could not be reached, 409 (the link's state does not allow it, or the target
    /// answered "no" again to a retried entry: an outcome, not a gateway failure).
    static func from(_ error: LinkSupervisorError) -> APIError {
        switch error {
        case .deadLetterNotFound:
            return APIError.notFound("\(error)")
        case .retryFailed(_, _, let adapterError):
            if case .rejected = adapterError.kind { return APIError(.conflict, code: "retry_rejected", "\(error)") }
            return APIError(.badGateway, code: "target_unavailable", "\(error)")
        case .targetFailed:
            return APIError(.badGateway, code: "target_unavailable", "\(error)")
        case .alreadyRunning, .notRunning, .cursorBeyondEnd, .sourceOutOfOrder, .deadLetterAlreadyResolved,
             .deadLetterUnreadable, .cursorChangeRefused:
            return APIError.conflict("\(error)")
        }
    }

    /// Maps a log error to its HTTP answer: a full disk is 507, a closed log 503, …
    static func from(_ error: LogError) -> APIError {
        switch error {
        case .storage(let storage) where storage.isNoSpace:
            return APIError(.init(code: 507, reasonPhrase: "Insufficient Storage"), code: "insufficient_storage",
                            "the broker's disk is full; nothing of this request was acknowledged")
        case .storage(let storage):
            return APIError(.internalServerError, code: "storage_error", "storage failed (\(storage.operation), errno \(storage.errno)); nothing of this request was acknowledged")
        case .closed:
            return APIError(.serviceUnavailable, code: "shutting_down", "the broker is shutting down")
        case .corrupt(let report):
            return APIError(.serviceUnavailable, code: "stream_corrupt", "the stream is refused until repaired: \(report)")
        case .entryTooLarge, .tooManyEntries:
            return APIError.tooLarge("\(error)")
        case .emptyAppend:
            return APIError.badRequest("no entries in the request")
        case .offsetOutOfRange:
            return APIError(.rangeNotSatisfiable, code: "offset_out_of_range", "\(error)")
        case .cursorBeyondEnd:
            return APIError.conflict("\(error)")
        case .invalidConfiguration, .invalidStreamName, .invalidCursorName:
            return APIError.badRequest("\(error)")
        case .identityDamaged:
            return APIError(.serviceUnavailable, code: "stream_identity_damaged", "\(error)")
        case .invalidIdempotencyKey:
            return APIError(.badRequest, code: "invalid_idempotency_key", "\(error)")
        case .idempotencyKeyReused:
            return APIError(.unprocessableContent, code: "idempotency_key_reused", "\(error); nothing was appended")
        case .activeSegmentLost:
            return APIError(.serviceUnavailable, code: "stream_stopped", "\(error)")
        case .idempotencyKeyAppendRemoved:
            return APIError(.gone, code: "idempotency_key_append_removed", "\(error); nothing was appended")
        case .idempotencyKeyInFlight:
            var inFlight = APIError(.conflict, code: "idempotency_key_in_flight", "\(error); retry once it is answered")
            inFlight.headers[.retryAfter] = "1"
            return inFlight
        }
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        let body = jsonBytes(ErrorBody(code: code, message: message))
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Answers every error a route throws that is the broker's (``APIError/from(_:)-(any Error)``) in
/// the API's error shape; Hummingbird's own errors and unknown ones pass on unchanged.
struct BrokerErrorMiddleware: RouterMiddleware {
    typealias Context = BrokerRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            throw APIError.from(error) ?? error
        }
    }
}

/// JSON bytes of a value (snake_case keys, sorted).
func jsonBytes(_ value: some Encodable) -> [UInt8] {
    (try? APIJSON.encoder().encode(value)).map { Array($0) } ?? Array(#"{"error":{"code":"internal","message":"encoding failed"}}"#.utf8)
}

/// A `201`/`200` JSON response.
func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: jsonBytes(value))))
}
