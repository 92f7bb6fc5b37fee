/// What `orgsync links resume LINK --wait` makes of each status it reads after the resume: the
/// link is active (done), still verifying (go on, unless the timeout passed), or it went back to
/// suspended, was paused, diverged or stopped (failed, with the reason). Pure: the status and
/// the time waited come in, the decision comes out.
public enum ResumeWait {
    /// The timeout of a bare `--wait`.
    public static let defaultTimeoutMs: UInt64 = 60_000
    /// The longest `--wait=TIMEOUT`: one day.
    public static let timeoutMsMax: UInt64 = 86_400_000

    public enum Decision: Sendable, Hashable {
        /// The link is active: the wait is over.
        case done(String)
        /// Still verifying: wait and read the status again. The text is the progress line.
        case waiting(String)
        /// The link will not become active by waiting; the text says why.
        case failed(String)
    }

    public static func decide(_ status: LinkStatusBody, waitedMs: UInt64, timeoutMs: UInt64) -> Decision {
        let name = status.name
        let reason = status.lastError.map { ": \($0)" } ?? ""
        guard status.running else { return .failed("\(name): the link stopped\(reason)") }
        switch status.state {
        case "active":
            return .done("\(name): active (cursor \(status.cursor), lag \(status.lag))")
        case "verifying":
            let progress = "verifying \(status.probeSuccesses)/\(status.probeThreshold)"
            guard waitedMs < timeoutMs else {
                return .failed("\(name): not active after \(describe(ms: timeoutMs)) (still \(progress))")
            }
            return .waiting("\(name): \(progress)")
        case "suspended":
            return .failed("\(name): went back to suspended\(status.heldDown ? " (held down)" : "")\(reason)")
        case "diverged":
            return .failed("\(name): diverged\(reason); reset it (links reset) or adopt the target's position (links adopt)")
        case "paused":
            return .failed("\(name): paused (by an operator, or stopped on a rejected entry)\(reason)")
        default:
            return .failed("\(name): in state \(status.state)\(reason)")
        }
    }

    /// A timeout as written after `--wait=`: a number of seconds, or a number with `ms`, `s` or
    /// `m`; 1 ms to ``timeoutMsMax``. Nil for anything else.
    public static func parseTimeoutMs(_ text: String) -> UInt64? {
        let units: [(suffix: String, ms: UInt64)] = [("ms", 1), ("s", 1_000), ("m", 60_000)]
        var digits = Substring(text)
        var unitMs: UInt64 = 1_000
        if let unit = units.first(where: { text.hasSuffix($0.suffix) }) {
            digits = digits.dropLast(unit.suffix.count)
            unitMs = unit.ms
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let count = UInt64(digits) else { return nil }
        let (ms, overflow) = count.multipliedReportingOverflow(by: unitMs)
        guard !overflow, (1...timeoutMsMax).contains(ms) else { return nil }
        return ms
    }

    /// `1500 ms`, `60 s`, `2 min 30 s`.
    public static func describe(ms: UInt64) -> String {
        if ms % 1_000 != 0 { return "\(ms) ms" }
        let seconds = ms / 1_000
        if seconds < 60 { return "\(seconds) s" }
        return seconds % 60 == 0 ? "\(seconds / 60) min" : "\(seconds / 60) min \(seconds % 60) s"
    }
}
