import OrgSyncLog
import OrgSyncPluginAPI

/// A link's view of a stream of the segment log: reads parse the stored JSON back into
/// entries; the tail wait is the log's own wake-on-append.
public struct StreamLogLinkSource: LinkEntrySource {
    public let log: StreamLog

    public init(log: StreamLog) { self.log = log }

    public var streamName: String { log.name }

    public func lineage() async -> StreamLineage { log.lineage }

    public func read(from offset: Offset, maxCount: Int) async throws -> [Entry] {
        let records = try log.read(from: offset.rawValue, maxEntries: maxCount)
        return try records.map { record in
            do {
                return try Entry.parse(record.payload, offset: Offset(record.offset))
            } catch {
                // Entries are validated before they are appended; one that no longer parses
                // means the log is not what was written. Stop rather than skip it.
                throw StoredEntryError(stream: log.name, offset: record.offset, problem: "\(error)")
            }
        }
    }

    public func endOffset() async -> Offset { Offset(log.endOffset) }

    public func waitForEntries(after offset: Offset) async throws {
        try await log.waitForEntries(after: offset.rawValue)
    }
}

/// An entry in the log is not a valid entry.
public struct StoredEntryError: Error, Sendable, CustomStringConvertible {
    public var stream: String
    public var offset: UInt64
    public var problem: String

    public init(stream: String, offset: UInt64, problem: String) {
        self.stream = stream
        self.offset = offset
        self.problem = problem
    }

    public var description: String { "stream \(stream): stored entry \(offset) is not a valid entry: \(problem)" }
}

/// Link cursors kept in the stream's crash-safe cursor files (`streams/<s>/cursors/<link>.cursor`).
/// A cursor can never be stored past the stream's end. Each store writes and fsyncs on this
/// store's own ``BlockingFileQueue`` (make one store per link: their fsyncs then run side by
/// side, none of them on the cooperative pool).
public struct StreamLogCursorStore: LinkCursorStore {
    public let log: StreamLog
    private let files: BlockingFileQueue

    public init(log: StreamLog) {
        self.log = log
        files = BlockingFileQueue(label: "orgsync.cursor-store.\(log.name)")
    }

    public func load(link: String) async throws -> Offset? {
        try log.cursors.load(link).map { Offset(rawValue: $0) }
    }

    public func store(link: String, offset: Offset) async throws {
        let log = log
        try await files.run { try log.storeCursor(link, offset: offset.rawValue) }
    }
}
