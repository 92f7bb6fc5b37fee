/// Time as the link supervisor sees it: a monotonic instant in milliseconds and a way to
/// sleep until one. Production uses ``SystemLinkClock``; tests inject a manual clock so that
/// thousands of simulated outages run in milliseconds, deterministically.
public protocol LinkClock: Sendable {
    /// Milliseconds since an arbitrary fixed origin; never goes backwards.
    func nowMs() -> UInt64
    /// Returns once `nowMs() >= deadlineMs`, or throws `CancellationError` when cancelled.
    func sleep(untilMs deadlineMs: UInt64) async throws
}

/// The real monotonic clock (`ContinuousClock`).
public struct SystemLinkClock: LinkClock {
    private let origin: ContinuousClock.Instant
    /// Longest single `Task.sleep` of ``sleep(untilMs:)``; longer waits loop.
    static let sleepStepMsMax: UInt64 = 86_400_000

    public init() { self.origin = ContinuousClock.now }

    public func nowMs() -> UInt64 {
        let elapsed = ContinuousClock.now - origin
        let (seconds, attoseconds) = elapsed.components
        return UInt64(max(0, seconds)) * 1000 + UInt64(max(0, attoseconds) / 1_000_000_000_000_000)
    }

    public func sleep(untilMs deadlineMs: UInt64) async throws {
        // A deadline may be UInt64.max ("never"): sleep in bounded steps rather than convert a
        // huge remainder into a Duration.
        var now = nowMs()
        while deadlineMs > now {
            try await Task.sleep(for: .milliseconds(Int64(min(deadlineMs - now, Self.sleepStepMsMax))))
            now = nowMs()
        }
    }
}
