import Synchronization

/// Recovery of the active segment after a restart (Kafka's `LogSegment.recover`): one function on
/// the segment that finds where its acknowledged data ends and cuts only what was never
/// acknowledged.
extension Segment {
    /// Scans the active segment from its last trusted index point, checking every batch
    /// (length, CRC, base offset, payload); cuts whatever follows the last valid batch, and the
    /// batches of a group commit whose last batch is missing (never acknowledged).
    func recover() throws -> RecoveryReport {
        let segment = self
        let file = try segment.file()
        let size = try file.size()
        var points = segment.readIndexFile(dataEnd: size)
        var buffer: [UInt8] = []
        while let last = points.last {
            let base = segment.baseOffset + UInt64(last.relativeOffset)
            if (try? segment.readBatch(at: Int64(last.position), limit: size, expectedBase: base, buffer: &buffer)) != nil { break }
            points.removeLast()
        }
        var tail = try scanTail(from: points, size: size)
        if tail.incompleteGroup != nil && tail.groupStartKnown == false {
            // The scan began inside a group that never finished: its first batch lies before the
            // index point. Rare (an index written ahead of data lost in a machine crash); rescan all.
            tail = try scanTail(from: [], size: size)
        }
        let position = tail.stopPosition
        var report = RecoveryReport(
            segment: Segment.fileName(segment.baseOffset, ".log"),
            scannedBytes: position - tail.startPosition, endOffset: tail.endOffset)
        // Whatever follows the data must be zeros (pre-written space); anything else is a torn
        // or corrupt tail that was never acknowledged.
        let garbageEnd = try StreamLog.lastNonZeroByte(file, from: position, to: size)
        if garbageEnd != nil, let later = try StreamLog.validBatchPosition(in: file, after: position, size: size) {
            // A valid batch after the bad one: acknowledged data is damaged. Never cut that
            // silently; refuse the stream until an operator runs `orgsync log repair`.
            let report = CorruptionReport(
                segment: Segment.fileName(segment.baseOffset, ".log"), bytePosition: position,
                firstOffset: tail.endOffset, endOffset: tail.endOffset,
                reason: "\(tail.stopReason ?? "bad batch"); a valid batch follows at byte \(later)")
            try StreamLog.writeCorruptMarker(report, directory: StreamLog.directoryOf(segment), storage: storage)
            throw LogError.corrupt(report)
        }
        let cut = tail.incompleteGroup?.position ?? position
        if garbageEnd != nil || tail.incompleteGroup != nil {
            report.truncatedAtPosition = cut
            report.truncatedBytes = (garbageEnd.map { $0 + 1 } ?? position) - cut
            if let group = tail.incompleteGroup {
                report.reason = "a group commit of \(group.batches) batches (offsets \(tail.endOffset)..<\(group.nextOffset)) lacks its last batch"
                    + (tail.stopReason.map { " (\($0))" } ?? "")
            } else {
                report.reason = tail.stopReason ?? "non-zero bytes after the last batch"
            }
            try file.truncate(to: cut)
            try file.sync()
            segment.state.withLock { $0.preallocatedEnd = cut }
        }
        try segment.writeIndexFile(sync: false)
        return report
    }

    /// What a scan of the active segment's tail found.
    struct TailScan {
        var startPosition: Int64
        /// Where the scan stopped: end of data, or the first bad batch.
        var stopPosition: Int64
        /// The offset after the last complete group.
        var endOffset: UInt64
        var stopReason: String?
        /// The valid batches after the last complete group (a group without its last batch).
        var incompleteGroup: (position: Int64, batches: Int, nextOffset: UInt64)?
        /// Whether the incomplete group's first batch is known to be where the scan saw it
        /// (false when the scan began at an index point that may lie inside the group).
        var groupStartKnown: Bool
    }

    /// Resets the segment's state to the index point `points.last` (or the start), then reads
    /// batch after batch, noting only the batches of complete groups.
    private func scanTail(from points: [IndexPoint], size: Int64) throws -> TailScan {
        let segment = self
        let start = points.last
        segment.state.withLock { s in
            s.index = points
            s.indexPointsWritten = 0
            s.lastIndexedPosition = Int64(start?.position ?? 0) - (start == nil ? 1 : 0)
            s.nextOffset = segment.baseOffset + UInt64(start?.relativeOffset ?? 0)
            s.dataEnd = Int64(start?.position ?? 0)
            s.preallocatedEnd = size
            s.firstTimestampMs = nil
            s.maxTimestampMs = nil
        }
        let startPosition = Int64(start?.position ?? 0)
        var position = startPosition
        var expected = segment.baseOffset + UInt64(start?.relativeOffset ?? 0)
        var groupEndOffset = expected
        // The batches before the last index point are not scanned again; their headers still
        // tell the entry bytes and the timestamps (the segment's age counts from its first batch).
        let prefix = segment.factsOfHeaders(upTo: position)
        segment.state.withLock { s in
            s.rawBytes = prefix.rawBytes
            s.firstTimestampMs = prefix.firstTimestampMs
            s.maxTimestampMs = prefix.newestTimestampMs
        }
        var buffer: [UInt8] = []
        var payload: [UInt8] = []
        var ranges: [Range<Int>] = []
        var stopReason: String?
        var group: [(header: RecordBatchHeader, position: Int64)] = []
        var groupStartKnown = startPosition == 0
        while position < size {
            do {
                let header = try segment.readAndDecodeBatch(
                    at: position, limit: size, expectedBase: expected, buffer: &buffer, payload: &payload, ranges: &ranges)
                if group.isEmpty && position > startPosition { groupStartKnown = true }
                group.append((header, position))
                position += Int64(header.batchLength)
                expected = header.nextOffset
                if !header.continuesGroup {
                    for batch in group { segment.noteBatch(batch.header, at: batch.position) }
                    group.removeAll(keepingCapacity: true)
                    groupEndOffset = expected
                }
            } catch BatchDecodeError.endOfData {
                break
            } catch let error as BatchDecodeError where error.isDictionaryError {
                // The batch passed its CRC, so it is not torn: it was written, and maybe
                // acknowledged, after its dictionary was durable. Cutting it could lose it.
                let report = CorruptionReport(
                    segment: Segment.fileName(segment.baseOffset, ".log"), bytePosition: position,
                    firstOffset: expected, endOffset: expected, reason: error.description)
                try StreamLog.writeCorruptMarker(report, directory: StreamLog.directoryOf(segment), storage: storage)
                throw LogError.corrupt(report)
            } catch let error as BatchDecodeError {
                stopReason = error.description
                break
            }
        }
        return TailScan(
            startPosition: startPosition, stopPosition: position, endOffset: groupEndOffset, stopReason: stopReason,
            incompleteGroup: group.first.map { ($0.position, group.count, expected) }, groupStartKnown: groupStartKnown)
    }
}
