/// Receives what a link's work with its target produced, as it happens, for metrics.
///
/// What the ``LinkStateMachine`` counts (suspensions, flaps, hold-downs) is in ``LinkStatus``;
/// this carries what only the supervisor's calls to the adapter know: how long an apply took,
/// which entries the target rejected, how probes went. Called on the link's actor: keep it
/// quick and never call back into the supervisor.
public protocol LinkObserver: Sendable {
    /// The target applied `entryCount` entries in one call that took `duration`.
    func didApply(link: String, stream: String, entryCount: Int, duration: Duration)
    /// The target rejected one entry (it is dead-lettered, or it paused a `stop_on_reject` link).
    func didReject(link: String, stream: String)
    /// A probe of a suspended link's target was answered (`answered`) or failed.
    func didProbe(link: String, stream: String, answered: Bool)
}
