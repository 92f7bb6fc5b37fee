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
    ///   crash between the target's commit and the cursor write never applies twice). A cursor
    ///   ahead of the position is fine only when every offset between them is a dead letter
    ///   (`deadLetterOffsets`: rejected entries move the cursor, not the target's position);
    ///   any other gap means the target lost entries it had applied (restored from a backup,
    ///   commits lost in a crash) and diverges: skipping them would leave the target without
    ///   acknowledged entries, silently.
    /// - A position stored without an identity (written before targets kept one) below the
    ///   end: taken as this stream's (the only reading there is), as above.
    /// - Anything else — another stream id, an unknown epoch, an offset cut by a repair, an
    ///   offset at or past the end — diverges, naming both positions.
    public static func decide(
        stored: AppliedPosition?, cursor: Offset, endOffset: Offset, lineage: StreamLineage,
        deadLetterOffsets: Set<Offset> = []
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
        if next > cursor {
            return .startAt(next, note: "the target had applied through offset \(stored.offset) (cursor was \(cursor))")
        }
        // next <= cursor: the offsets next..<cursor were acknowledged; each must be a dead letter.
        let gapCount = cursor.rawValue - next.rawValue
        let lettersInGap = deadLetterOffsets.count { $0 >= next && $0 < cursor }
        guard UInt64(lettersInGap) < gapCount else { return .startAt(cursor, note: nil) }
        return .diverged(reason: """
            the target's position is \(stored) but the cursor is at \(cursor): \(gapCount - UInt64(lettersInGap)) of the \
            entries \(next)..<\(cursor) were applied and acknowledged, yet the target no longer has them (restored from \
            a backup? commits lost?). `orgsync links adopt` applies them again from \(next); `orgsync links reset \
            --from \(cursor)` leaves them out; \(here)
            """)
    }
}
