import Foundation
import OrgSyncNotifications

extension BrokerConfiguration {
    /// Bounds of the `notifications[]` durations, in milliseconds.
    static let notificationTimeoutMsRange: ClosedRange<Int64> = 100...600_000
    static let notificationBackoffMsRange: ClosedRange<Int64> = 1...86_400_000
    static let notificationGiveUpAfterMsRange: ClosedRange<Int64> = 1_000...2_592_000_000
    static let notificationStableAfterMsRange: ClosedRange<Int64> = 0...86_400_000
    static let notificationRejectedSummaryMsRange: ClosedRange<Int64> = 0...3_600_000

    /// The notification targets, checked and with their secrets read from the environment.
    /// Errors name the field; they never quote a secret.
    public func notificationSettings(environment: [String: String]) throws -> [NotificationSettings] {
        func fail(_ field: String, _ problem: String) -> ConfigurationError { ConfigurationError(field: field, problem: problem) }
        var names = Set<String>()
        var settings: [NotificationSettings] = []
        for (i, target) in notifications.enumerated() {
            let field = "notifications[\(i)]"
            guard isValidStreamName(target.name) else { throw fail("\(field).name", "use letters, digits, '.', '_', '-' (at most 128)") }
            guard names.insert(target.name).inserted else { throw fail("\(field).name", "duplicate notification \(target.name)") }
            guard let url = URL(string: target.url), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
                  let host = url.host, !host.isEmpty
            else { throw fail("\(field).url", "must be an http:// or https:// URL with a host") }
            let secret = try Self.environmentValue(of: target.secretEnv, field: "\(field).secret_env", environment: environment)
            let key: [UInt8]
            do { key = try StandardWebhookSignature.key(fromSecret: secret) } catch {
                throw fail("\(field).secret_env", "the secret in \(target.secretEnv) \(error)")
            }
            var events = Set(NotificationEventType.allCases)
            if let names = target.events {
                events = []
                for (j, name) in names.enumerated() {
                    guard let type = NotificationEventType(rawValue: name) else {
                        throw fail("\(field).events[\(j)]", "unknown event \(name) (known: \(NotificationEventType.allCases.map(\.rawValue).joined(separator: ", ")))")
                    }
                    events.insert(type)
                }
                guard !events.isEmpty else { throw fail("\(field).events", "names no event; leave it out for all") }
            }
            func duration(_ value: Int64?, _ name: String, _ range: ClosedRange<Int64>, _ defaultMs: UInt64) throws -> UInt64 {
                guard let value else { return defaultMs }
                guard range.contains(value) else { throw fail("\(field).\(name)", "must be \(range.lowerBound)...\(range.upperBound) (ms)") }
                return UInt64(value)
            }
            typealias D = NotificationSettings
            let base = try duration(target.backoffBaseMs, "backoff_base_ms", Self.notificationBackoffMsRange, D.defaultBackoffBaseMs)
            let cap = try duration(target.backoffCapMs, "backoff_cap_ms", Self.notificationBackoffMsRange, max(base, D.defaultBackoffCapMs))
            guard cap >= base else { throw fail("\(field).backoff_cap_ms", "must be at least backoff_base_ms (\(base))") }
            settings.append(NotificationSettings(
                name: target.name, url: target.url, secret: key, events: events,
                timeoutMs: try duration(target.timeoutMs, "timeout_ms", Self.notificationTimeoutMsRange, D.defaultTimeoutMs),
                backoffBaseMs: base, backoffCapMs: cap,
                giveUpAfterMs: try duration(target.giveUpAfterMs, "give_up_after_ms", Self.notificationGiveUpAfterMsRange, D.defaultGiveUpAfterMs),
                stableAfterMs: try duration(target.stableAfterMs, "stable_after_ms", Self.notificationStableAfterMsRange, D.defaultStableAfterMs),
                rejectedSummaryMs: try duration(target.rejectedSummaryMs, "rejected_summary_ms", Self.notificationRejectedSummaryMsRange, D.defaultRejectedSummaryMs)))
        }
        return settings
    }
}
