import Foundation
import OrgSyncCore
import OrgSyncPluginAPI

/// One event for a notification target, planned from a link's sync log. Its `id` is the
/// `webhook-id`: the same on every attempt and after a restart, so a receiver deduplicates by it.
public struct NotificationEvent: Sendable, Hashable, Codable {
    public var id: String
    public var type: NotificationEventType
    public var link: String
    public var stream: String
    /// When it happened (the sync log record's wall-clock time), milliseconds since 1970.
    public var timeMs: UInt64
    /// The link's state after it.
    public var state: LinkState
    public var reason: String
    /// The sync log record(s) it stands for.
    public var firstSequence: UInt64
    public var lastSequence: UInt64
    /// `entry.rejected`: how many entries, the first and last offset.
    public var count: Int?
    public var firstOffset: UInt64?
    public var lastOffset: UInt64?

    /// The JSON body (Standard Webhooks' `{type, timestamp, data}`), keys sorted so the bytes —
    /// and so the signature — are the same on every attempt.
    public func body() -> [UInt8] {
        struct Body: Encodable {
            var type: String
            var timestamp: String
            var data: Data
            struct Data: Encodable {
                var id: String
                var link: String
                var stream: String
                var state: String
                var reason: String
                var sync_log_first_sequence: UInt64
                var sync_log_last_sequence: UInt64
                var count: Int?
                var first_offset: UInt64?
                var last_offset: UInt64?
            }
        }
        let body = Body(
            type: type.rawValue, timestamp: Self.iso8601(ms: timeMs),
            data: .init(id: id, link: link, stream: stream, state: state.rawValue, reason: reason,
                        sync_log_first_sequence: firstSequence, sync_log_last_sequence: lastSequence,
                        count: count, first_offset: firstOffset, last_offset: lastOffset))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Strings and integers always encode.
        return Array((try? encoder.encode(body)) ?? Foundation.Data("{}".utf8))
    }

    static func iso8601(ms: UInt64) -> String {
        let date = Date(timeIntervalSince1970: Double(ms) / 1000)
        return date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }
}
