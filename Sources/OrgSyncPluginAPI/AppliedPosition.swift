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

/// What a target stores for a link: the last offset applied, the stream identity it was
/// applied from, and the owner epoch of the member that applied it. ``identity`` is nil for a
/// position stored before adapters kept identities (an upgrade); the link then checks the offset
/// against the stream's end alone.
public struct AppliedPosition: Sendable, Hashable, Codable, CustomStringConvertible {
    public var identity: StreamIdentity?
    /// The last offset applied (not the next one).
    public var offset: Offset
    /// The ``EntryBatch/ownerEpoch`` of the batch that stored this position: 0 on a standalone
    /// broker, and for a position stored before adapters kept owner epochs.
    public var ownerEpoch: UInt64

    public init(identity: StreamIdentity?, offset: Offset, ownerEpoch: UInt64 = 0) {
        self.identity = identity
        self.offset = offset
        self.ownerEpoch = ownerEpoch
    }

    private enum CodingKeys: String, CodingKey { case identity, offset, ownerEpoch }

    /// A position encoded before owner epochs existed decodes with owner epoch 0.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        identity = try container.decodeIfPresent(StreamIdentity.self, forKey: .identity)
        offset = try container.decode(Offset.self, forKey: .offset)
        ownerEpoch = try container.decodeIfPresent(UInt64.self, forKey: .ownerEpoch) ?? 0
    }

    public var description: String {
        let owner = ownerEpoch == 0 ? "" : ", owner epoch \(ownerEpoch)"
        if let identity { return "offset \(offset) of \(identity)\(owner)" }
        return "offset \(offset) (stored without a stream identity)\(owner)"
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
    /// The target's position was stored by a later owner of the link (a higher owner epoch):
    /// the member sending this batch lost the link. Apply nothing and throw
    /// ``AdapterError/Kind/fenced``.
    case fenced(String)

    /// - A position stored under a higher owner epoch than the batch's: fenced, whatever else.
    /// - A position of the batch's own stream and epoch: skip what it already holds (a
    ///   re-sent batch), unless this is a dead-letter retry.
    /// - No position, one stored without an identity, or one of an earlier epoch of the same
    ///   stream: apply every entry (the link checked that position before it started, and
    ///   starts after it).
    /// - Another stream id, or a later epoch: a conflict.
    public static func decide(stored: AppliedPosition?, batch: EntryBatch) -> StoredPositionVerdict {
        if let stored, stored.ownerEpoch > batch.ownerEpoch {
            return .fenced("the target's position for this link (\(stored)) was stored by a later owner; this batch is from owner epoch \(batch.ownerEpoch)")
        }
        guard let stored, let storedIdentity = stored.identity else { return .apply(skipThrough: nil) }
        if storedIdentity.streamID != batch.identity.streamID || storedIdentity.epoch > batch.identity.epoch {
            return .conflict("the target's position for this link is \(stored); this batch is from \(batch.identity)")
        }
        if storedIdentity.epoch < batch.identity.epoch || batch.isDeadLetterRetry { return .apply(skipThrough: nil) }
        return .apply(skipThrough: stored.offset)
    }

    /// The position to store after applying `batch` over `stored`: the batch's last offset
    /// with its identity and owner epoch, except that a dead-letter retry never moves a position
    /// of the same identity backwards (it still records the batch's owner epoch).
    public static func positionAfter(_ batch: EntryBatch, stored: AppliedPosition?) -> AppliedPosition? {
        guard let last = batch.lastOffset else { return stored }
        if batch.isDeadLetterRetry, let stored, stored.identity == batch.identity, stored.offset >= last {
            return AppliedPosition(identity: stored.identity, offset: stored.offset, ownerEpoch: max(stored.ownerEpoch, batch.ownerEpoch))
        }
        return AppliedPosition(identity: batch.identity, offset: last, ownerEpoch: batch.ownerEpoch)
    }
}
