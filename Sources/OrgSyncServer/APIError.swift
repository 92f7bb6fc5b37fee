import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import OrgSyncLog
import OrgSyncAPI

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

    /// Maps a log error to its HTTP answer: a full disk is 507, a closed log 503, …
    public static func from(_ error: LogError) -> APIError {
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

/// JSON bytes of a value (snake_case keys, sorted).
func jsonBytes(_ value: some Encodable) -> [UInt8] {
    (try? APIJSON.encoder().encode(value)).map { Array($0) } ?? Array(#"{"error":{"code":"internal","message":"encoding failed"}}"#.utf8)
}

/// A `201`/`200` JSON response.
func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: jsonBytes(value))))
}
