import Logging
import Synchronization

/// Keeps every log record, to check that no secret reaches a log.
public final class CapturedLogs: Sendable {
    public init() {}
    private let lines = Mutex<[String]>([])
    public var all: [String] { lines.withLock { $0 } }
    public func append(_ line: String) { lines.withLock { $0.append(line) } }

    public func logger() -> Logger {
        var logger = Logger(label: "test.webhook") { label in Handler(label: label, sink: self) }
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
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            sink.append("\(event.level) \(event.message) \(merged)")
        }
    }
}
