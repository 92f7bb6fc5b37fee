import Logging
import Synchronization

/// What one retention pass did.
public struct RetentionReport: Sendable, Hashable {
    public var deletedSegments: [String] = []
    /// Messages removed from a stream kept as messages (a cluster's JetStream stream).
    public var deletedMessages: UInt64 = 0
    public var deletedBytes: Int64 = 0
    public var newStartOffset: UInt64 = 0
    /// Segments (for a cluster stream: cursors) over a limit that were kept because a cursor
    /// has not passed them.
    public var keptForCursors: [String] = []
    /// With `retentionDropsUnconsumed`: cursors whose unread entries were deleted, with the
    /// range lost ([from, to)). The consumer must report it.
    public var lostRanges: [String: Range<UInt64>] = [:]

    public init() {}
}

extension StreamLog {
    /// Deletes the oldest sealed segments while the stream is over `retentionBytesMax` or they
    /// are older than `retentionAgeMsMax`. A segment is deleted only when every cursor has
    /// passed it, unless `retentionDropsUnconsumed` is set. The active segment is never deleted.
    @discardableResult
    public func applyRetention() throws -> RetentionReport {
        try applyRetention(nowMs: wallClockMs())
    }

    /// ``applyRetention()`` as of `nowMs` (milliseconds since 1970): the age limit's clock.
    @discardableResult
    public func applyRetention(nowMs: Int64) throws -> RetentionReport {
        var report = RetentionReport()
        report.newStartOffset = startOffset
        guard configuration.retentionBytesMax != nil || configuration.retentionAgeMsMax != nil else { return report }
        let cursorOffsets = try cursors.all()
        let minCursor = cursorOffsets.values.min()
        let segments = state.withLock { $0.segments }
        var totalBytes = segments.reduce(Int64(0)) { $0 + $1.snapshot.dataEnd }
        var deleteCount = 0
        for (i, segment) in segments.enumerated() where i < segments.count - 1 {
            let facts = segment.snapshot
            let segmentEnd = segments[i + 1].baseOffset
            let overSize = configuration.retentionBytesMax.map { totalBytes > $0 } ?? false
            let newest = segment.newestTimestampMs()
            let overAge = configuration.retentionAgeMsMax.map { max in newest.map { ageMs(of: $0, nowMs: nowMs) > max } ?? false } ?? false
            guard overSize || overAge else { break }
            if let minCursor, minCursor < segmentEnd, !configuration.retentionDropsUnconsumed {
                report.keptForCursors.append(Segment.fileName(segment.baseOffset, ".log"))
                break
            }
            deleteCount = i + 1
            totalBytes -= facts.dataEnd
        }
        guard deleteCount > 0 else { return report }
        let doomed = Array(segments[0..<deleteCount])
        let newStart = segments[deleteCount].baseOffset
        state.withLock { s in
            s.segments.removeFirst(deleteCount)
            s.startOffset = newStart
        }
        try wrapStorage {
            for segment in doomed {
                sealedFiles.forget(segment.logPath)
                try StreamLog.removeSegmentFiles(directory: directory, base: segment.baseOffset, storage: storage)
                report.deletedSegments.append(Segment.fileName(segment.baseOffset, ".log"))
                report.deletedBytes += segment.snapshot.dataEnd
            }
            try storage.syncDirectory(directory)
        }
        for (name, offset) in cursorOffsets where offset < newStart {
            report.lostRanges[name] = offset..<newStart
            logger.warning("retention deleted entries a consumer had not read", metadata: [
                "cursor": "\(name)", "from": "\(offset)", "to": "\(newStart)",
            ])
        }
        report.newStartOffset = newStart
        return report
    }
}
