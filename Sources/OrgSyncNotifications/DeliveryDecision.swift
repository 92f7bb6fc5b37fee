import Foundation
import OrgSyncCore

/// What to do after one delivery attempt: pure, so every rule is tested without a network.
///
/// - 2xx: delivered.
/// - No answer (refused, reset, timed out), 5xx, 408 or 429: retried after
///   `backoffBaseMs × 2^(attempt−1)` capped at `backoffCapMs`, or after what `Retry-After`
///   asks when that is longer — unless the event would then be older than `giveUpAfterMs`,
///   when it goes to the dead letters.
/// - Anything else (another 4xx, a 3xx, a 1xx): the receiver refuses the event; retrying
///   cannot help, so it goes to the dead letters at once.
public enum DeliveryDecision: Sendable, Hashable {
    case delivered
    case retry(afterMs: UInt64, reason: String)
    case deadLetter(reason: String)

    /// - Parameters:
    ///   - status: the answer's status, or nil when there was no answer (`failure` says why).
    ///   - retryAfter: the answer's `Retry-After` header, if any.
    ///   - attempt: 1 for the first attempt.
    ///   - eventTimeMs, nowMs: wall clock, ms since 1970.
    public static func after(
        status: Int?, failure: String? = nil, retryAfter: String?, attempt: Int, eventTimeMs: UInt64, nowMs: UInt64,
        settings: NotificationSettings
    ) -> DeliveryDecision {
        let what: String
        switch status {
        case .some(200..<300):
            return .delivered
        case .some(let code) where code >= 500 || code == 408 || code == 429:
            what = "HTTP \(code)"
        case .some(let code):
            return .deadLetter(reason: "the receiver refused the event: HTTP \(code)")
        case .none:
            what = failure ?? "no answer"
        }
        let shift = UInt64(min(max(attempt - 1, 0), 40))
        var delayMs = min(settings.backoffCapMs, settings.backoffBaseMs.saturatingMultiply(1 << shift))
        if let asked = retryAfterMs(retryAfter, nowMs: nowMs) { delayMs = max(delayMs, asked) }
        let age = nowMs >= eventTimeMs ? nowMs - eventTimeMs : 0
        if age.saturatingAdd(delayMs) > settings.giveUpAfterMs {
            return .deadLetter(reason: "gave up after \(attempt) attempt\(attempt == 1 ? "" : "s") (\(giveUpText(settings.giveUpAfterMs))); the last: \(what)")
        }
        return .retry(afterMs: delayMs, reason: what)
    }

    /// `Retry-After` as milliseconds from now: delta-seconds, or an HTTP date (RFC 9110 §10.2.3).
    /// Nil when absent or unreadable (the backoff applies).
    static func retryAfterMs(_ value: String?, nowMs: UInt64) -> UInt64? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            guard let seconds = UInt64(value) else { return .max }  // more digits than fit: "a very long time"
            let (ms, overflow) = seconds.multipliedReportingOverflow(by: 1000)
            return overflow ? .max : ms
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        guard let date = formatter.date(from: value) else { return nil }
        let targetMs = date.timeIntervalSince1970 * 1000
        guard targetMs.isFinite, targetMs > Double(nowMs) else { return 0 }
        return UInt64(exactly: (targetMs - Double(nowMs)).rounded()) ?? .max
    }

    private static func giveUpText(_ ms: UInt64) -> String {
        ms % 3_600_000 == 0 ? "give_up_after_ms \(ms), \(ms / 3_600_000) h" : "give_up_after_ms \(ms)"
    }
}
