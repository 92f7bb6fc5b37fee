/// Which stream, and which incarnation of it, a batch's offsets belong to.
///
/// A stream gets a random id when it is created; its epoch starts at 1 and grows whenever the
/// broker had to cut acknowledged entries (an operator's `orgsync log repair`), because from
/// then on an offset may name a different entry than before. Store the identity with the
/// applied offset, so that a target can never be mistaken for one fed from another stream.
public struct StreamIdentity: Sendable, Hashable, Codable, CustomStringConvertible {
    /// 1–64 of `0-9 a-z A-Z - _`; random for a stream the broker created.
    public var streamID: String
    /// ≥ 1.
    public var epoch: UInt64

    public init(streamID: String, epoch: UInt64) {
        self.streamID = streamID
        self.epoch = epoch
    }

    public var description: String { "stream id \(streamID) epoch \(epoch)" }
}

/// What a target stores for a link: the last offset applied, and the stream identity it was
/// applied from. ``identity`` is nil for a position stored before adapters kept identities
/// (an upgrade); the link then checks the offset against the stream's end alone.
public struct AppliedPosition: Sendable, Hashable, Codable, CustomStringConvertible {
    public var identity: StreamIdentity?
    /// The last offset applied (not the next one).
    public var offset: Offset

    public init(identity: StreamIdentity?, offset: Offset) {
        self.identity = identity
        self.offset = offset
    }

    public var description: String {
        if let identity { return "offset \(offset) of \(identity)" }
        return "offset \(offset) (stored without a stream identity)"
    }
}

/// What an adapter that stores its position should do with a batch, given the position it
/// found in the target for this link (nil: none). One rule for every adapter.
public enum StoredPositionVerdict: Sendable, Hashable {
    /// Apply the entries after `skipThrough` (nil: apply all of them).
    case apply(skipThrough: Offset?)
    /// The target's position belongs to another stream, or to a later epoch of this one: apply
    /// nothing and throw ``AdapterError/Kind/positionConflict``.
    case conflict(String)

    /// - A position of the batch's own stream and epoch: skip what it already holds (a
    ///   re-sent batch), unless this is a dead-letter retry.
    /// - No position, one stored without an identity, or one of an earlier epoch of the same
    ///   stream: apply every entry (the link checked that position before it started, and
    ///   starts after it).
    /// - Another stream id, or a later epoch: a conflict.
    public static func decide(stored: AppliedPosition?, batch: EntryBatch) -> StoredPositionVerdict {
        guard let stored, let storedIdentity = stored.identity else { return .apply(skipThrough: nil) }
        if storedIdentity.streamID != batch.identity.streamID || storedIdentity.epoch > batch.identity.epoch {
            return .conflict("the target's position for this link is \(stored); this batch is from \(batch.identity)")
        }
        if storedIdentity.epoch < batch.identity.epoch || batch.isDeadLetterRetry { return .apply(skipThrough: nil) }
        return .apply(skipThrough: stored.offset)
    }

    /// The position to store after applying `batch` over `stored`: the batch's last offset
    /// with its identity, except that a dead-letter retry never moves a position of the same
    /// identity backwards.
    public static func positionAfter(_ batch: EntryBatch, stored: AppliedPosition?) -> AppliedPosition? {
        guard let last = batch.lastOffset else { return stored }
        if batch.isDeadLetterRetry, let stored, stored.identity == batch.identity, stored.offset >= last { return stored }
        return AppliedPosition(identity: batch.identity, offset: last)
    }
}
