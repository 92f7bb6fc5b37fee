import OrgSyncCore
import OrgSyncPluginAPI

/// Turns a link's sync log into the events one notification target is told, with the
/// summaries operators want instead of one message per blip. Pure: records and the time in,
/// events out; its state is saved with the target's queue, so a restart plans the same events
/// with the same ids from the same records.
///
/// - Rejected entries within `rejectedSummaryMs` of the first are one `entry.rejected` (count,
///   first and last offset), sent once that window has passed or another event comes.
/// - `link.held_down` the first time while not flapping is preceded by one `link.flapping`; then,
///   until `link.stable`, the link's suspensions and resumptions are not sent one by one.
/// - `link.stable` once a flapping link has been active, with no transition, for `stableAfterMs`.
public struct NotificationPlanner: Sendable, Hashable, Codable {
    /// Records up to this sequence have been planned.
    public var afterSequence: UInt64
    /// Prefixes every event id: chosen at random when the target's state is first created, so
    /// ids never repeat if a data directory is replaced and sequences start again.
    public var idPrefix: String
    public var flapping = false
    /// Wall-clock time of the last transition seen, and the state after it.
    public var lastTransitionMs: UInt64 = 0
    public var lastState: LinkState?
    public var openRejections: Rejections?

    public struct Rejections: Sendable, Hashable, Codable {
        var firstSequence: UInt64
        var lastSequence: UInt64
        var firstTimeMs: UInt64
        var count: Int
        var firstOffset: UInt64?
        var lastOffset: UInt64?
        var firstReason: String
        var state: LinkState
    }

    public struct Rules: Sendable, Hashable {
        public var stableAfterMs: UInt64
        public var rejectedSummaryMs: UInt64
        public init(stableAfterMs: UInt64, rejectedSummaryMs: UInt64) {
            self.stableAfterMs = stableAfterMs
            self.rejectedSummaryMs = rejectedSummaryMs
        }
    }

    public init(afterSequence: UInt64, idPrefix: String) {
        self.afterSequence = afterSequence
        self.idPrefix = idPrefix
    }

    /// The events `records` (oldest first; those at or below ``afterSequence`` are skipped) and
    /// the time `nowMs` (wall clock, ms since 1970) give, in the order they happened.
    public mutating func plan(_ records: [SyncLogRecord], link: String, stream: String, nowMs: UInt64, rules: Rules) -> [NotificationEvent] {
        var events: [NotificationEvent] = []
        func event(_ type: NotificationEventType, _ record: SyncLogRecord) -> NotificationEvent {
            NotificationEvent(id: "\(idPrefix).\(link).\(record.sequence).\(type.rawValue)", type: type, link: link, stream: stream,
                              timeMs: record.timeMs, state: record.state, reason: record.reason,
                              firstSequence: record.sequence, lastSequence: record.sequence)
        }
        for record in records where record.sequence > afterSequence {
            if let open = openRejections,
               record.event != .entryFailed || record.timeMs >= open.firstTimeMs.saturatingAdd(rules.rejectedSummaryMs) {
                events.append(closeRejections(open, link: link, stream: stream))
            }
            switch record.event {
            case .entryFailed:
                if var open = openRejections {
                    open.count += 1
                    open.lastSequence = record.sequence
                    open.lastOffset = record.offset?.rawValue
                    open.state = record.state
                    openRejections = open
                } else {
                    openRejections = Rejections(
                        firstSequence: record.sequence, lastSequence: record.sequence, firstTimeMs: record.timeMs, count: 1,
                        firstOffset: record.offset?.rawValue, lastOffset: record.offset?.rawValue, firstReason: record.reason,
                        state: record.state)
                }
            case .suspended:
                if !flapping { events.append(event(.linkSuspended, record)) }
            case .heldDown:
                if !flapping {
                    flapping = true
                    events.append(event(.linkFlapping, record))
                }
                events.append(event(.linkHeldDown, record))
            case .resumed, .forcedResume:
                if !flapping { events.append(event(.linkResumed, record)) }
            case .paused:
                events.append(event(.linkPaused, record))
            case .diverged:
                events.append(event(.linkDiverged, record))
            case .verifying, .verificationFailed, .entryResolved, .cursorSet, .positionReset:
                break
            }
            if record.event != .entryFailed && record.event != .entryResolved {
                lastTransitionMs = record.timeMs
                lastState = record.state
            }
            afterSequence = record.sequence
        }
        if let open = openRejections, nowMs >= open.firstTimeMs.saturatingAdd(rules.rejectedSummaryMs) {
            events.append(closeRejections(open, link: link, stream: stream))
        }
        if flapping, lastState == .active, nowMs >= lastTransitionMs.saturatingAdd(rules.stableAfterMs) {
            flapping = false
            events.append(NotificationEvent(
                id: "\(idPrefix).\(link).\(afterSequence).\(NotificationEventType.linkStable.rawValue)", type: .linkStable,
                link: link, stream: stream, timeMs: nowMs, state: .active,
                reason: "active without a failure for \(rules.stableAfterMs) ms after flapping",
                firstSequence: afterSequence, lastSequence: afterSequence))
        }
        return events
    }

    /// When ``plan(_:link:stream:nowMs:rules:)`` next has something to say without a new record
    /// (a summary window ending, a flapping link becoming stable), or nil.
    public func nextDueMs(rules: Rules) -> UInt64? {
        let summary = openRejections.map { $0.firstTimeMs.saturatingAdd(rules.rejectedSummaryMs) }
        let stable = flapping && lastState == .active ? lastTransitionMs.saturatingAdd(rules.stableAfterMs) : nil
        return [summary, stable].compactMap { $0 }.min()
    }

    private mutating func closeRejections(_ open: Rejections, link: String, stream: String) -> NotificationEvent {
        openRejections = nil
        let reason = open.count == 1 ? open.firstReason : "\(open.count) entries rejected; the first: \(open.firstReason)"
        return NotificationEvent(
            id: "\(idPrefix).\(link).\(open.firstSequence).\(NotificationEventType.entryRejected.rawValue)", type: .entryRejected,
            link: link, stream: stream, timeMs: open.firstTimeMs, state: open.state, reason: reason,
            firstSequence: open.firstSequence, lastSequence: open.lastSequence, count: open.count,
            firstOffset: open.firstOffset, lastOffset: open.lastOffset)
    }
}
