#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import OrgSyncLog
import OrgSyncPluginAPI
import Synchronization

/// The status of a rejected entry in the sync log and the dead letters.
public enum EntryStatus: String, Sendable, Hashable, Codable {
    /// The target rejected it; it was not applied.
    case failed
    /// A later retry applied it.
    case resolved
}

/// One line of a link's sync log: a connection event, or an entry the target rejected.
public struct SyncLogRecord: Sendable, Hashable, Codable {
    /// Increases by one per record of a link, across restarts; pages are cut by it.
    public var sequence: UInt64
    /// Wall-clock time, milliseconds since 1970 (for people), and link-clock time (for ordering
    /// with status).
    public var timeMs: UInt64
    public var linkClockMs: UInt64
    public var event: SyncLogEvent
    /// The link's state after the event.
    public var state: LinkState
    public var reason: String
    /// For entry events: the entry, its status and the target's own error code.
    public var offset: Offset?
    public var status: EntryStatus?
    public var targetCode: String?

    public init(
        sequence: UInt64, timeMs: UInt64, linkClockMs: UInt64, event: SyncLogEvent, state: LinkState,
        reason: String, offset: Offset? = nil, status: EntryStatus? = nil, targetCode: String? = nil
    ) {
        self.sequence = sequence
        self.timeMs = timeMs
        self.linkClockMs = linkClockMs
        self.event = event
        self.state = state
        self.reason = reason
        self.offset = offset
        self.status = status
        self.targetCode = targetCode
    }
}

/// A link's sync log: what happened to the link, for an operator, newest first.
///
/// Persisted as checksummed JSON lines in `<directory>/<link>.synclog.jsonl` (it survives a
/// restart; a torn or corrupt line is skipped on open), or kept in memory. Bounded: at most
/// `recordsMax` records are kept, the oldest dropped first; the file is compacted when it holds
/// twice that many lines, so its size stays bounded too.
public final class SyncLog: Sendable {
    /// What readers see: only records whose line was written (and fsynced, unless told not to)
    /// or whose write failed and was reported.
    private struct Shown {
        var records: [SyncLogRecord]  // oldest first
        var nextSequence: UInt64
    }

    /// The file and what only appending needs. Appends hold this lock through their write and
    /// fsync; readers never take it, so a reader never waits for the disk.
    private struct Writer {
        var file: ChecksummedLinesFile?
        var fileLineCount: Int
        var nextSequence: UInt64
    }

    public let recordsMax: Int
    /// Lines skipped when the file was opened (torn tail, bad checksum, unparsable).
    public let damagedLineCount: Int
    private let shown: Mutex<Shown>
    private let writer: Mutex<Writer>

    /// Opens (or creates) the sync log of `link` in `directory`, which must exist, through
    /// `storage` (the segment log's; POSIX files unless a test gives another).
    public static func open(
        directory: String, link: String, recordsMax: Int, fsync: Bool = true, storage: any LogStorage = PosixStorage()
    ) throws(RecordFileError) -> SyncLog {
        try validateLinkFileName(link)
        let path = directory + "/" + link + ".synclog.jsonl"
        let (payloads, damaged) = try ChecksummedLinesFile.read(path: path, storage: storage)
        let decoder = JSONDecoder()
        var records = payloads.compactMap { try? decoder.decode(SyncLogRecord.self, from: Data($0)) }
        let unparsable = payloads.count - records.count
        if records.count > recordsMax { records.removeFirst(records.count - recordsMax) }
        let file = try ChecksummedLinesFile(path: path, storage: storage, fsyncEachAppend: fsync)
        if damaged + unparsable > 0 || payloads.count > recordsMax {
            // Rewrite so that new lines never follow a torn one and the file stays bounded.
            try file.rewrite(records.map(encode))
        }
        return SyncLog(records: records, file: file, damagedLineCount: damaged + unparsable, recordsMax: recordsMax)
    }

    /// A sync log that lives in memory only (simulations, tests, `--ephemeral` links).
    public static func inMemory(recordsMax: Int) -> SyncLog {
        SyncLog(records: [], file: nil, damagedLineCount: 0, recordsMax: recordsMax)
    }

    private init(records: [SyncLogRecord], file: sending ChecksummedLinesFile?, damagedLineCount: Int, recordsMax: Int) {
        self.recordsMax = max(1, recordsMax)
        self.damagedLineCount = damagedLineCount
        let next = (records.last?.sequence ?? 0) + 1
        self.shown = Mutex(Shown(records: records, nextSequence: next))
        self.writer = Mutex(Writer(file: file, fileLineCount: records.count, nextSequence: next))
    }

    /// Appends a record; the sequence is assigned here. Readers see it once its line is written
    /// (and fsynced): what anyone saw survives a crash. The record is shown even if writing the
    /// file fails (the error is thrown so the caller can report it).
    @discardableResult
    public func append(
        event: SyncLogEvent, state linkState: LinkState, reason: String, timeMs: UInt64, linkClockMs: UInt64,
        offset: Offset? = nil, status: EntryStatus? = nil, targetCode: String? = nil
    ) throws(RecordFileError) -> SyncLogRecord {
        let result: Result<SyncLogRecord, RecordFileError> = writer.withLock { writer in
            let record = SyncLogRecord(
                sequence: writer.nextSequence, timeMs: timeMs, linkClockMs: linkClockMs, event: event, state: linkState,
                reason: reason, offset: offset, status: status, targetCode: targetCode)
            writer.nextSequence += 1
            var failure: RecordFileError?
            if let file = writer.file {
                do throws(RecordFileError) {
                    if writer.fileLineCount >= 2 * recordsMax {
                        // Records are shown in sequence order under this lock: the shown ones
                        // and this one are the newest, in order.
                        let kept = shown.withLock { $0.records.suffix(recordsMax - 1) } + [record]
                        try file.rewrite(kept.map(Self.encode))
                        writer.fileLineCount = kept.count
                    } else {
                        try file.append(Self.encode(record))
                        writer.fileLineCount += 1
                    }
                } catch {
                    failure = error
                }
            }
            shown.withLock { shown in
                shown.records.append(record)
                if shown.records.count > recordsMax { shown.records.removeFirst(shown.records.count - recordsMax) }
                shown.nextSequence = record.sequence + 1
            }
            return failure.map { .failure($0) } ?? .success(record)
        }
        return try result.get()
    }

    /// Up to `limit` records, newest first, older than `beforeSequence` when given (the
    /// sequence of the last record of the previous page).
    public func page(beforeSequence: UInt64? = nil, limit: Int = 100) -> [SyncLogRecord] {
        shown.withLock { state in
            var page: [SyncLogRecord] = []
            for record in state.records.reversed() where page.count < max(0, limit) {
                if let beforeSequence, record.sequence >= beforeSequence { continue }
                page.append(record)
            }
            return page
        }
    }

    /// Every record kept with a sequence above `sequence`, oldest first (what a reader that has
    /// seen everything up to `sequence` has not seen yet).
    /// Readers poll it and usually have seen all but a few, so it looks from the newest back.
    public func records(afterSequence sequence: UInt64) -> [SyncLogRecord] {
        shown.withLock { state in
            let start = state.records.lastIndex(where: { $0.sequence <= sequence }).map { $0 + 1 } ?? state.records.startIndex
            return Array(state.records[start...])
        }
    }

    /// The sequence of the newest record, or 0 when there is none yet.
    public var latestSequence: UInt64 { shown.withLock { $0.nextSequence - 1 } }

    public var count: Int { shown.withLock { $0.records.count } }

    static func encode(_ record: SyncLogRecord) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // A record of strings and integers always encodes; an empty payload would be skipped on read.
        return Array((try? encoder.encode(record)) ?? Data())
    }
}
