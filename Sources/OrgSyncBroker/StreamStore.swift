import Logging
import OrgSyncCore
import OrgSyncLog

/// A stream as the broker uses it: idempotent appends, what its links read and where they keep
/// their cursors, its figures and its retention. The segment log (``StreamLog``) implements it;
/// it is the seam a replicated store plugs into (``Broker/init(configuration:dataDirectory:metrics:logger:registry:environment:openStream:)``).
///
/// Every method is safe to call concurrently. Errors are the store's own (``LogError`` for the
/// segment log); the HTTP server maps them to answers.
public protocol StreamStore: AnyObject, Sendable {
    var name: String { get }
    /// Appends `entries` (each one validated JSON entry) durably before returning, or — with an
    /// idempotency key already in the stream's window — answers the first append's offsets and
    /// appends nothing.
    func append(_ entries: [[UInt8]], idempotencyKey: String?) async throws -> AppendOutcome
    /// Where a link reads this stream.
    func linkSource() -> any LinkEntrySource
    /// Where a link of this stream keeps its cursor.
    func linkCursorStore() -> any LinkCursorStore
    /// What a capture source appends to and reads its position back from.
    func captureStream(source: String) -> any CaptureStream
    /// The stream's bounds and size (a store kept elsewhere asks its server).
    func currentInfo() async throws -> StreamInfo
    /// Drops what the stream's retention limits no longer keep.
    func applyRetention() async throws -> RetentionReport
    /// Answers the queued appends once they are durable, then refuses new ones.
    func close() async
}

extension StreamLog: StreamStore {
    public func currentInfo() async throws -> StreamInfo { info() }
    public func linkSource() -> any LinkEntrySource { StreamLogLinkSource(log: self) }
    public func linkCursorStore() -> any LinkCursorStore { StreamLogCursorStore(log: self) }
    public func captureStream(source: String) -> any CaptureStream { StreamLogCaptureStream(log: self) }
}

extension Broker {
    /// Opens the segment log of `stream` under `dataDirectory` (recovering its tail, logging
    /// what recovery cut): the broker's default ``StreamStore``.
    ///
    /// - Throws: ``LogError`` naming the stream (locked by another process, corrupt, I/O).
    public static func openSegmentLog(
        _ stream: BrokerConfiguration.Stream, configuration: BrokerConfiguration, dataDirectory: String,
        logger: Logger, observer: (any LogObserver)?
    ) throws -> any StreamStore {
        let log = try StreamLog.open(
            dataDirectory: dataDirectory, name: stream.name,
            configuration: configuration.logConfiguration(for: stream), logger: logger, observer: observer)
        if log.recovery.truncatedAtPosition != nil {
            logger.warning("recovered stream with a cut tail", metadata: ["stream": "\(stream.name)", "recovery": "\(log.recovery)"])
        }
        return log
    }
}
