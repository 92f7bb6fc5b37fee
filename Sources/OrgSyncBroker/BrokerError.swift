/// What the broker refuses by itself (its streams and links throw their own errors:
/// `LogError`, `LinkSupervisorError`). The HTTP server maps each to its answer in one place.
public enum BrokerError: Error, Sendable, Hashable, CustomStringConvertible {
    case noSuchStream(String)
    case noSuchLink(String)
    case noSuchSource(String)
    /// An operator resumed a link whose target holds a position that does not belong to its
    /// stream as it is now: it stays diverged until reset or adopted.
    case linkDiverged(String)
    /// A link the cluster places by lease that another member runs now (or none, between two).
    case linkOnAnotherMember(String)
    /// A capture source the cluster places by lease that another member runs now (or none).
    case sourceOnAnotherMember(String)
    /// A stream kept elsewhere (a cluster's JetStream) could not be reached or answered what it
    /// must not; `problem` says whether an append may have been stored.
    case streamUnavailable(stream: String, problem: String)
    /// A cluster stream stores an append as one NATS message: this one, as stored, is larger
    /// than the NATS servers take (`max_payload`).
    case appendTooLarge(stream: String, bytes: Int, maxBytes: Int)

    public var description: String {
        switch self {
        case .noSuchStream(let name): "no stream named \(name)"
        case .noSuchLink(let name): "no link named \(name)"
        case .noSuchSource(let name): "no source named \(name)"
        case .linkOnAnotherMember(let name): "link \(name) does not run on this member now: the cluster leases it to another member (ask that one)"
        case .sourceOnAnotherMember(let name): "source \(name) does not run on this member now: the cluster leases it to another member (ask that one)"
        case .linkDiverged(let name):
            "link \(name) is diverged: its target holds a position that does not belong to this stream as it is now; "
                + "reset it to an offset or adopt the target's position"
        case .streamUnavailable(let stream, let problem): "stream \(stream) is unavailable: \(problem)"
        case .appendTooLarge(let stream, let bytes, let maxBytes):
            "an append to stream \(stream) is \(bytes) bytes as stored, over the NATS servers' max_payload of \(maxBytes): "
                + "send fewer entries per request, or raise max_payload on the servers (up to 64 MiB); nothing was appended"
        }
    }
}
