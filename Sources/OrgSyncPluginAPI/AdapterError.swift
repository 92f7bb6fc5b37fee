/// A failure of an adapter, classified so the link knows what to do with it.
///
/// Throw an `AdapterError` from every ``OrgAdapter`` method. Any other error type is treated
/// as ``Kind/connection`` (the safe choice: the link suspends and nothing is skipped).
public struct AdapterError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// The target cannot be reached or will not talk to us now: refused, reset, timeout,
        /// DNS, TLS, expired credentials, server shutting down. The link suspends, freezes its
        /// cursor and probes until the target answers `probeThreshold` times in a row.
        case connection
        /// The entry at `offset` can never be applied as it is (constraint violation, bad
        /// field, unknown column type). Nothing of the batch may have been committed. The link
        /// applies the entries before it, sends this one to its dead letters and goes on.
        case rejected(offset: Offset)
        /// A transient failure that is not about the connection (serialization failure,
        /// deadlock, lock timeout). Nothing of the batch may have been committed. The link
        /// retries the same batch with backoff a bounded number of times, then treats it as
        /// ``connection``.
        case retryable
        /// The target holds a position for this link from another stream, or from a later
        /// epoch of this one (see ``StoredPositionVerdict``). Nothing of the batch may have
        /// been committed. The link stops in `diverged` and applies nothing until an operator
        /// resets or adopts the target's position.
        case positionConflict
        /// The target holds a position for this link stored by a later owner (a higher owner
        /// epoch, see ``EntryBatch/ownerEpoch``): the member applying lost the link to another
        /// member. Nothing of the batch may have been committed. The link stops applying.
        case fenced
    }

    public var kind: Kind
    /// What happened, for an operator. Never include credentials.
    public var message: String
    /// The target's own error code, when it has one (SQLSTATE, SQLite result code, HTTP status).
    public var targetCode: String?

    public init(_ kind: Kind, _ message: String, targetCode: String? = nil) {
        self.kind = kind
        self.message = message
        self.targetCode = targetCode
    }

    public static func connection(_ message: String, targetCode: String? = nil) -> AdapterError {
        AdapterError(.connection, message, targetCode: targetCode)
    }

    public static func rejected(offset: Offset, _ message: String, targetCode: String? = nil) -> AdapterError {
        AdapterError(.rejected(offset: offset), message, targetCode: targetCode)
    }

    public static func retryable(_ message: String, targetCode: String? = nil) -> AdapterError {
        AdapterError(.retryable, message, targetCode: targetCode)
    }

    public static func positionConflict(_ message: String) -> AdapterError {
        AdapterError(.positionConflict, message)
    }

    public static func fenced(_ message: String) -> AdapterError {
        AdapterError(.fenced, message)
    }

    public var description: String {
        let code = targetCode.map { " [\($0)]" } ?? ""
        switch kind {
        case .connection: return "connection: \(message)\(code)"
        case .rejected(let offset): return "rejected entry \(offset): \(message)\(code)"
        case .retryable: return "retryable: \(message)\(code)"
        case .positionConflict: return "position conflict: \(message)"
        case .fenced: return "fenced: \(message)"
        }
    }
}
