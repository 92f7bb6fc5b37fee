import OrgSyncLog
import OrgSyncPluginAPI

/// Where a link starts consuming, given the position its target stores: a pure decision, made
/// every time consuming (re)starts, before anything is applied.
public enum LinkStartPosition: Sendable, Hashable {
    /// Consume from this offset. `note` says why it differs from the cursor, if it does.
    case startAt(Offset, note: String?)
    /// The target's position does not describe a prefix of this stream as it is now: apply
    /// nothing until an operator decides (reset to an offset, or adopt the position).
    case diverged(reason: String)

    /// - No stored position: start at the cursor.
    /// - A position of this stream in an epoch whose entries up to it are still the same, and
    ///   below the end: start at the larger of the cursor and the position's next offset (a
    ///   crash between the target's commit and the cursor write never applies twice; a cursor
    ///   ahead of the position is a skipped dead letter, not a gap).
    /// - A position stored without an identity (written before targets kept one) below the
    ///   end: taken as this stream's (the only reading there is), as above.
    /// - Anything else — another stream id, an unknown epoch, an offset cut by a repair, an
    ///   offset at or past the end — diverges, naming both positions.
    public static func decide(
        stored: AppliedPosition?, cursor: Offset, endOffset: Offset, lineage: StreamLineage
    ) -> LinkStartPosition {
        guard let stored else { return .startAt(cursor, note: nil) }
        let here = "this link reads stream id \(lineage.streamID) epoch \(lineage.currentEpoch), end offset \(endOffset)"
        if let identity = stored.identity {
            guard identity.streamID == lineage.streamID else {
                return .diverged(reason: "the target's position is \(stored), another stream; \(here)")
            }
            guard lineage.epochs.contains(where: { $0.epoch == identity.epoch }) else {
                return .diverged(reason: "the target's position is \(stored), an epoch this stream never had; \(here)")
            }
            if let cut = lineage.cutOffset(after: identity.epoch), stored.offset.rawValue >= cut {
                return .diverged(reason: "the target's position is \(stored), but offsets from \(cut) on were cut by a repair and given to new entries; \(here)")
            }
        }
        guard stored.offset < endOffset else {
            return .diverged(reason: "the target's position is \(stored), at or past the stream's end; \(here)")
        }
        let next = stored.offset.next
        guard next > cursor else { return .startAt(cursor, note: nil) }
        return .startAt(next, note: "the target had applied through offset \(stored.offset) (cursor was \(cursor))")
    }
}
