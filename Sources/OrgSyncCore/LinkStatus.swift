import OrgSyncPluginAPI

/// A snapshot of one link, for `orgsync status`, `GET /v1/links/{link}` and the status page.
public struct LinkStatus: Sendable, Hashable, Codable {
    public var link: String
    public var stream: String
    public var state: LinkState
    /// True while a flapping link waits out its hold-down (then `heldDownUntilMs` is set, in
    /// link-clock time).
    public var heldDown: Bool
    public var heldDownUntilMs: UInt64?
    /// The next offset to apply: every entry below it is in the target.
    public var cursor: Offset
    /// The stream's end: the offset the next appended entry will get.
    public var endOffset: Offset
    /// Entries appended but not yet applied (`endOffset − cursor`).
    public var lagCount: UInt64
    public var lastError: String?
    /// k/K of the current verification (k is 0 outside `verifying`).
    public var probeSuccessCount: Int
    public var probeThreshold: Int
    public var timeInStateMs: UInt64
    public var suspensionCount: Int
    public var flapCount: Int
    public var holdDownCount: Int
    /// Entries the target rejected: the link's dead letters (failed or resolved, persisted, so
    /// the count survives a restart; at most `dead_letters_max`), plus rejections that paused a
    /// `stop_on_reject` link since it started.
    public var rejectedCount: Int
    /// Entries applied since the supervisor started.
    public var appliedCount: UInt64
    /// Dead letters still `failed`.
    public var deadLetterFailedCount: Int
    /// Whether the supervisor's `run()` is going.
    public var isRunning: Bool
    /// The identity of the stream as the link reads it now (what the target must hold).
    public var streamID: String
    public var epoch: UInt64
}

/// A request to a supervisor that cannot be carried out.
public enum LinkSupervisorError: Error, Sendable, Hashable, CustomStringConvertible {
    case alreadyRunning(link: String)
    case notRunning(link: String)
    /// The stored cursor is past the stream's end: the log lost data or the cursor file is not
    /// this stream's. The link refuses to start rather than guess.
    case cursorBeyondEnd(link: String, cursor: Offset, endOffset: Offset)
    /// The source returned entries that do not start at the cursor or are not dense.
    case sourceOutOfOrder(link: String, expected: Offset, got: Offset)
    case deadLetterNotFound(link: String, offset: Offset)
    case deadLetterAlreadyResolved(link: String, offset: Offset)
    case deadLetterUnreadable(link: String, offset: Offset, problem: String)
    /// The retried entry failed again; `error` is the target's answer.
    case retryFailed(link: String, offset: Offset, error: AdapterError)
    case cursorChangeRefused(link: String, reason: String)
    /// The target could not be reached or refused while its position was being read or rewritten.
    case targetFailed(link: String, reason: String)

    public var description: String {
        switch self {
        case .alreadyRunning(let link): "link \(link) is already running"
        case .notRunning(let link): "link \(link) is not running"
        case .cursorBeyondEnd(let link, let cursor, let end):
            "link \(link): stored cursor \(cursor) is beyond the stream's end \(end)"
        case .sourceOutOfOrder(let link, let expected, let got):
            "link \(link): the stream returned offset \(got) where \(expected) was expected"
        case .deadLetterNotFound(let link, let offset): "link \(link) has no dead letter at offset \(offset)"
        case .deadLetterAlreadyResolved(let link, let offset): "link \(link): dead letter \(offset) is already resolved"
        case .deadLetterUnreadable(let link, let offset, let problem):
            "link \(link): dead letter \(offset) cannot be read back: \(problem)"
        case .retryFailed(let link, let offset, let error): "link \(link): retry of entry \(offset) failed: \(error)"
        case .cursorChangeRefused(let link, let reason): "link \(link): cannot change its position: \(reason)"
        case .targetFailed(let link, let reason): "link \(link): the target failed: \(reason)"
        }
    }
}

/// An operator's change of where a link stands (see ``LinkSupervisor/changePosition(_:)``).
public enum PositionChange: Sendable, Hashable {
    /// Consume from `from`: the target's position becomes `from - 1` of this stream's current
    /// identity (none at 0), the cursor `from`. Replays when `from` is below what the target
    /// holds; skips when above.
    case reset(from: Offset)
    /// Take the offset the target holds as this stream's (its data is known to match): the
    /// target's position gets this stream's identity, the cursor its next offset. Refused when
    /// the target holds none or one at or past the end.
    case adopt
}

/// What a position change did.
public struct PositionChangeResult: Sendable, Hashable, Codable {
    public var cursor: Offset
    public var targetPosition: AppliedPosition?
    public var state: LinkState
}
