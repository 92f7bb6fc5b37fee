import Logging
import Synchronization

/// Keeps every log record of the loggers it makes: to count transitions logged, or to check
/// that no secret reaches a log.
public final class CapturedLogs: Sendable {
    public struct Record: Sendable {
        public var level: Logger.Level
        public var message: String
        /// The record's metadata merged over the logger's.
        public var metadata: Logger.Metadata
        /// Its `event` metadata, if any (the supervisor's transitions carry one).
        public var event: String? { metadata["event"].map { "\($0)" } }
    }

    private let records = Mutex<[Record]>([])

    public init() {}

    public var all: [Record] { records.withLock { $0 } }
    /// Each record as one line: level, message, metadata.
    public var lines: [String] { all.map { "\($0.level) \($0.message) \($0.metadata)" } }

    public func logger(label: String = "test") -> Logger {
        var logger = Logger(label: label) { label in Handler(label: label, sink: self) }
        logger.logLevel = .trace
        return logger
    }

    struct Handler: LogHandler {
        let label: String
        let sink: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let record = Record(level: event.level, message: "\(event.message)", metadata: metadata.merging(event.metadata ?? [:]) { $1 })
            sink.records.withLock { $0.append(record) }
        }
    }
}
