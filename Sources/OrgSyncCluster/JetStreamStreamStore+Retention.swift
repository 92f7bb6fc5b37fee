import Logging
import OrgSyncBroker
import OrgSyncCore
import OrgSyncLog
import OrgSyncNATS
import OrgSyncPluginAPI

extension JetStreamStreamStore {
    public func applyRetention() async throws -> RetentionReport {
        try await applyRetention(nowMs: wallClockMs())
    }

    /// Removes the oldest messages the stream's limits no longer keep (``ClusterRetention``) as
    /// of `nowMs`, the age limit's clock. Every member runs it; a purge to a sequence already
    /// passed removes nothing, so members that decide at once cannot remove more than either
    /// decided. Cursors are read from the bucket; one a link stores after they were read is at or
    /// past the one read (cursors only move on), so it is not overtaken either.
    ///
    /// - Throws: ``BrokerError/streamUnavailable(stream:problem:)`` when NATS cannot answer.
    public func applyRetention(nowMs: Int64) async throws -> RetentionReport {
        var report = RetentionReport()
        guard retention.isSet else { return report }
        let info = try await streamInfo().state
        guard info.messages > 1, info.firstSequence < info.lastSequence, info.lastSequence < Self.sequenceMax else { return report }
        let state = ClusterRetention.State(
            firstSequence: info.firstSequence, lastSequence: info.lastSequence, messages: info.messages, bytes: info.bytes)
        var firstYoungEnough: UInt64?
        if let cutoffMs = retention.ageCutoffMs(nowMs: nowMs) {
            firstYoungEnough = try await firstSequence(appendedAfter: cutoffMs, first: state.firstSequence, last: state.lastSequence)
        }
        let cursorOffsets = try await streamCursors()
        var firstUnconsumed: UInt64?
        if let lowest = cursorOffsets.values.min() {
            do {
                firstUnconsumed = try await sequence(holding: lowest)
            } catch LogError.offsetOutOfRange {
                firstUnconsumed = state.firstSequence  // a cursor already behind the start: nothing more goes for it
            }
        }
        let cut = retention.firstKept(state, firstYoungEnough: firstYoungEnough, firstUnconsumed: firstUnconsumed)
        let uncapped = retention.firstKept(state, firstYoungEnough: firstYoungEnough, firstUnconsumed: nil)
        if !retention.dropsUnconsumed, cut < uncapped, let lowest = cursorOffsets.values.min() {
            report.keptForCursors = cursorOffsets.filter { $0.value == lowest }.keys.sorted()
        }
        guard cut > state.firstSequence else { return report }
        let purged: UInt64
        do {
            purged = try await jetStream.purge(stream: jetStreamName, before: cut)
        } catch where !(error is CancellationError) {
            throw BrokerError.streamUnavailable(stream: name, problem: "removing messages before \(cut) for retention: \(error)")
        }
        let after = try await streamInfo().state
        let newStart = try await storedAppend(at: after.firstSequence, decodingEntries: false).first
        report.deletedMessages = purged
        report.deletedBytes = Int64(clamping: info.bytes > after.bytes ? info.bytes - after.bytes : 0)
        report.newStartOffset = newStart
        for (cursor, offset) in cursorOffsets where offset < newStart {
            report.lostRanges[cursor] = offset..<newStart
            logger.warning("retention removed entries a consumer had not read", metadata: [
                "stream": "\(name)", "cursor": "\(cursor)", "from": "\(offset)", "to": "\(newStart)",
            ])
        }
        return report
    }

    /// The first message in `first...last` appended after `cutoffMs` (`last + 1` when none):
    /// a binary search on the append times members write (their clocks; a member's skew moves
    /// the cut by as much).
    func firstSequence(appendedAfter cutoffMs: Int64, first: UInt64, last: UInt64) async throws -> UInt64 {
        var low = first
        var high = last + 1
        while low < high {
            let middle = low + (high - low) / 2
            if try await appendTimeMs(at: middle) > cutoffMs { high = middle } else { low = middle + 1 }
        }
        return low
    }

    /// When the append at `sequence` was made (`Orgsync-Time-Ms`).
    func appendTimeMs(at sequence: UInt64) async throws -> Int64 {
        let message = try await storedMessage(at: sequence)
        guard let time = message.headers?[ClusterAppendMessage.Header.timeMs].flatMap(Int64.init) else {
            throw BrokerError.streamUnavailable(stream: name, problem: "message \(sequence) of \(jetStreamName) has no append time")
        }
        return time
    }

    /// This stream's cursors (links' and capture sources' position hints) by name, from the
    /// bucket: the keys `<stream>.<name>` — a cursor no link has any more included, as the
    /// segment log counts its cursor files — less those of a stream whose name begins with this
    /// one's and a dot, unless the name is one this stream's configuration makes (the
    /// configuration refuses two streams' cursors on one key).
    func streamCursors() async throws -> [String: UInt64] {
        let prefix = name + "."
        let longer = otherStreams.filter { $0.hasPrefix(prefix) }.map { $0 + "." }
        let keys: [String]
        do {
            keys = try await cursors.keys()
        } catch where !(error is CancellationError) {
            throw BrokerError.streamUnavailable(stream: name, problem: "listing the cursors in bucket \(cursors.name): \(error)")
        }
        let store = KeyValueCursorStore(bucket: cursors, stream: name)
        var offsets: [String: UInt64] = [:]
        for key in keys where key.hasPrefix(prefix) {
            let cursor = String(key.dropFirst(prefix.count))
            guard configuredCursors.contains(cursor) || !longer.contains(where: { key.hasPrefix($0) }) else { continue }
            do {
                if let offset = try await store.load(link: cursor) { offsets[cursor] = offset.rawValue }
            } catch let error as LinkStoreUnavailable {
                throw BrokerError.streamUnavailable(stream: name, problem: "\(error)")
            }
        }
        return offsets
    }
}
