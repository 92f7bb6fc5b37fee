import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
@testable import OrgSyncBroker
@testable import OrgSyncServer
import OrgSyncTestSupport
import ServiceLifecycle
import Testing

/// `/health/ready`: 503 while starting and from the moment graceful shutdown begins.
@Suite struct ReadinessTests {
    @Test func theRouteFollowsTheReadiness() async throws {
        let t = try TestBroker()
        let readiness = Readiness()
        let router = buildRouter(
            broker: t.broker, authenticator: Authenticator(configuration: t.broker.configuration, environment: [:]),
            ready: { readiness.isReady })
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .serviceUnavailable, "starting")
                #expect(errorCode(response) == "not_ready")
            }
            readiness.markReady()
            try await client.execute(uri: "/health/ready", method: .get) { response in #expect(response.status == .ok) }
            readiness.markStopping()
            try await client.execute(uri: "/health/ready", method: .get) { response in #expect(response.status == .serviceUnavailable) }
            readiness.markReady()
            #expect(readiness.phase == .stopping, "a stopping broker does not become ready again")
            try await client.execute(uri: "/health/live", method: .get) { response in #expect(response.status == .ok) }
        }
    }

    /// Last in the group, the readiness service hears of graceful shutdown first: readiness is
    /// `stopping` by the time the service before it (the HTTP server) is asked to stop.
    @Test func gracefulShutdownTurnsReadinessOffBeforeTheServicesBeforeItStop() async throws {
        let readiness = Readiness()
        readiness.markReady()
        let server = HeldService(readiness: readiness)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: server), .init(service: ReadinessService(readiness: readiness))],
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })))
        let running = Task { try await group.run() }
        try await withTimeout(ms: 10_000, "the held service to run") { try await server.phase.wait { $0 == .running } }
        #expect(readiness.isReady)
        await group.triggerGracefulShutdown()
        let stopping = try await withTimeout(ms: 10_000, "the held service to hear of the shutdown") {
            try await server.phase.wait { if case .askedToStop = $0 { true } else { false } }
        }
        #expect(stopping == .askedToStop(readinessThen: .stopping), "readiness was off before the server was asked to stop")
        server.release()
        try await withTimeout(ms: 10_000, "the group to stop") { try await running.value }
        #expect(server.phase.value == .stopped)
    }
}

/// A service that, once asked to shut down, records the broker's readiness at that moment and
/// stops only when the test releases it (as an HTTP server finishing its requests would).
final class HeldService: Service, Sendable {
    enum Phase: Sendable, Equatable {
        case notStarted, running, askedToStop(readinessThen: Readiness.Phase), stopped
    }

    let phase = Observed(Phase.notStarted)
    private let released = Observed(false)
    private let readiness: Readiness

    init(readiness: Readiness) { self.readiness = readiness }

    func release() { released.update { $0 = true } }

    func run() async throws {
        phase.update { $0 = .running }
        try? await gracefulShutdown()
        let readinessThen = readiness.phase
        phase.update { $0 = .askedToStop(readinessThen: readinessThen) }
        _ = try? await released.wait { $0 }
        phase.update { $0 = .stopped }
    }
}
