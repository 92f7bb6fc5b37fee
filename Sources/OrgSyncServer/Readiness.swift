import ServiceLifecycle
import Synchronization

/// Whether the broker takes work: `/health/ready` answers 200 only while ``isReady``. Starting
/// until the HTTP server listens with every stream and link open; stopping from the moment
/// graceful shutdown begins, before the server stops accepting, so that a load balancer polling
/// readiness moves traffic away first.
public final class Readiness: Sendable {
    public enum Phase: String, Sendable {
        case starting, ready, stopping
    }

    private let current = Mutex(Phase.starting)

    public init() {}

    public var phase: Phase { current.withLock { $0 } }
    public var isReady: Bool { phase == .ready }

    /// Starting → ready; a broker already stopping stays stopping.
    public func markReady() {
        current.withLock { if $0 == .starting { $0 = .ready } }
    }

    public func markStopping() {
        current.withLock { $0 = .stopping }
    }
}

/// Marks the broker as stopping when graceful shutdown begins. Put it last in the service
/// group: ServiceLifecycle shuts services down in reverse order, so it runs first, while the HTTP
/// server still answers.
public struct ReadinessService: Service {
    let readiness: Readiness

    public init(readiness: Readiness) {
        self.readiness = readiness
    }

    public func run() async throws {
        // Returns when graceful shutdown is triggered, throws when the group is cancelled.
        try? await gracefulShutdown()
        readiness.markStopping()
    }
}
