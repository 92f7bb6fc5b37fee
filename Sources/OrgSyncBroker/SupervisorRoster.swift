import Logging
import OrgSyncCore
import OrgSyncLog

/// A supervisor a host runs and an operator pauses and resumes: a link's or a capture source's.
public protocol HostedSupervisor: Actor {
    associatedtype Status: Sendable
    /// Works until cancelled; throws when it cannot go on safely.
    func run() async throws
    func suspend(reason: String) -> LinkState
    func resume(force: Bool) -> LinkState
    func status() async -> Status
}

extension LinkSupervisor: HostedSupervisor {}
extension SourceSupervisor: HostedSupervisor {}

/// The supervisors a host runs, by name, each with the directory its `PAUSED` marker lives in:
/// lookup, an operator's pause (remembered across restarts) and resume, and the statuses.
struct SupervisorRoster<Supervisor: HostedSupervisor>: Sendable {
    /// The ones that run all the time.
    let supervisors: [String: Supervisor]
    /// In configuration order.
    let names: [String]
    let directories: [String: String]
    /// The error for a name that is not here.
    let missing: @Sendable (String) -> BrokerError
    /// The ones that run here only for a while (a cluster's leased links), by name.
    var transient: @Sendable () -> [String: Supervisor] = { [:] }

    /// Every supervisor running here now.
    var running: [String: Supervisor] { supervisors.merging(transient()) { always, _ in always } }

    func supervisor(_ name: String) throws(BrokerError) -> Supervisor {
        guard let supervisor = supervisors[name] ?? transient()[name] else { throw missing(name) }
        return supervisor
    }

    /// Pauses `name` and remembers it across restarts (an operator's pause outlives the process).
    func suspend(_ name: String) async throws(BrokerError) -> LinkState {
        let supervisor = try supervisor(name)
        OperatorPauseMarker(directory: directories[name] ?? "").set()
        return await supervisor.suspend(reason: "paused by operator")
    }

    /// Resumes `name` (forgetting an operator's pause) through verification, or at once with `force`.
    func resume(_ name: String, force: Bool) async throws(BrokerError) -> LinkState {
        let supervisor = try supervisor(name)
        OperatorPauseMarker(directory: directories[name] ?? "").clear()
        return await supervisor.resume(force: force)
    }

    /// Adds a task per supervisor to `group` that runs it; one that stops on an error is logged
    /// (as a stopped `kind`: link, source) and stays stopped, the others go on.
    func addRuns(to group: inout TaskGroup<Void>, logger: Logger, kind: String) {
        for name in names {
            guard let supervisor = supervisors[name] else { continue }
            group.addTask {
                do {
                    try await supervisor.run()
                } catch {
                    logger.error("\(kind) stopped", metadata: [kind: "\(name)", "error": "\(error)"])
                }
            }
        }
    }

    /// The statuses of the supervisors running here, in configuration order.
    func statuses() async -> [Supervisor.Status] {
        let running = running
        var result: [Supervisor.Status] = []
        for name in names { if let supervisor = running[name] { result.append(await supervisor.status()) } }
        return result
    }
}

/// Each supervisor's sync log, opened once in its directory, which is made durably first (its
/// parent synced): the sync log, dead letters and PAUSED marker in it must not vanish with a
/// directory entry a power cut never saw.
func openSyncLogs(_ supervisors: [(name: String, directory: String, recordsMax: Int)]) throws -> [String: SyncLog] {
    var syncLogs: [String: SyncLog] = [:]
    for supervisor in supervisors {
        try PosixStorage().createDirectory(supervisor.directory)
        syncLogs[supervisor.name] = try SyncLog.open(directory: supervisor.directory, link: supervisor.name, recordsMax: supervisor.recordsMax)
    }
    return syncLogs
}
