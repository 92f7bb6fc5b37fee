/// A route of the broker's HTTP API: its path pattern (`{name}` stands for one path segment)
/// and the methods it answers (a GET route answers HEAD too).
public struct APIRoute: Sendable, Hashable {
    public let pattern: String
    /// Upper-case method names: `GET`, `POST`.
    public let methods: [String]

    init(_ pattern: String, _ methods: [String]) {
        self.pattern = pattern
        self.methods = methods
    }

    /// The path of this route for the given values of its `{name}` segments, each
    /// percent-encoded as one segment (so a `/` in a value cannot reach another route).
    /// A segment with no value stays as written.
    public func path(_ values: [String: String] = [:]) -> String {
        pattern.split(separator: "/", omittingEmptySubsequences: false).map { segment -> String in
            guard segment.hasPrefix("{"), segment.hasSuffix("}"),
                  let value = values[String(segment.dropFirst().dropLast())] else { return String(segment) }
            return APIRoute.percentEncodedSegment(value)
        }.joined(separator: "/")
    }

    /// Whether `path` (no query) is this route's: same number of segments, each literal segment equal.
    public func matches(path: String) -> Bool {
        let pattern = self.pattern.split(separator: "/")
        let segments = path.split(separator: "/")
        guard pattern.count == segments.count else { return false }
        return zip(pattern, segments).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
    }

    /// RFC 3986 `pchar` minus `:` and `@` kept as is; every other byte as `%XX`.
    static func percentEncodedSegment(_ value: String) -> String {
        let hex = Array("0123456789ABCDEF".unicodeScalars)
        var encoded = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                encoded += "%" + String(hex[Int(byte >> 4)]) + String(hex[Int(byte & 0x0F)])
            }
        }
        return encoded
    }
}

/// Every route of the broker's HTTP API: the server registers its handlers under these
/// patterns and answers 405 with `Allow` from them, the CLI builds its request paths from them,
/// and a test checks the OpenAPI document names exactly these.
public enum APIRoutes {
    public static let statusPage = APIRoute("/", ["GET"])
    public static let statusPageScript = APIRoute("/ui/app.js", ["GET"])
    public static let statusPageStyle = APIRoute("/ui/app.css", ["GET"])
    public static let openAPIDocument = APIRoute("/openapi.yaml", ["GET"])
    public static let healthLive = APIRoute("/health/live", ["GET"])
    public static let healthReady = APIRoute("/health/ready", ["GET"])
    public static let metrics = APIRoute("/metrics", ["GET"])
    public static let whoami = APIRoute("/v1/whoami", ["GET"])
    public static let streams = APIRoute("/v1/streams", ["GET"])
    public static let stream = APIRoute("/v1/streams/{stream}", ["GET"])
    public static let entries = APIRoute("/v1/streams/{stream}/entries", ["POST"])
    public static let streamSamples = APIRoute("/v1/streams/{stream}/samples", ["GET"])
    public static let linkSamples = APIRoute("/v1/links/{link}/samples", ["GET"])
    public static let links = APIRoute("/v1/links", ["GET"])
    public static let link = APIRoute("/v1/links/{link}", ["GET"])
    public static let linkSuspend = APIRoute("/v1/links/{link}/suspend", ["POST"])
    public static let linkResume = APIRoute("/v1/links/{link}/resume", ["POST"])
    public static let linkCursor = APIRoute("/v1/links/{link}/cursor", ["POST"])
    public static let linkReset = APIRoute("/v1/links/{link}/reset", ["POST"])
    public static let linkAdopt = APIRoute("/v1/links/{link}/adopt", ["POST"])
    public static let linkSyncLog = APIRoute("/v1/links/{link}/sync-log", ["GET"])
    public static let linkDeadLetters = APIRoute("/v1/links/{link}/dead-letters", ["GET"])
    public static let linkDeadLetterRetry = APIRoute("/v1/links/{link}/dead-letters/{offset}/retry", ["POST"])
    public static let sources = APIRoute("/v1/sources", ["GET"])
    public static let source = APIRoute("/v1/sources/{source}", ["GET"])
    public static let sourceSuspend = APIRoute("/v1/sources/{source}/suspend", ["POST"])
    public static let sourceResume = APIRoute("/v1/sources/{source}/resume", ["POST"])
    public static let sourceSyncLog = APIRoute("/v1/sources/{source}/sync-log", ["GET"])
    public static let notifications = APIRoute("/v1/notifications", ["GET"])
    public static let cluster = APIRoute("/v1/cluster", ["GET"])

    public static let all: [APIRoute] = [
        statusPage, statusPageScript, statusPageStyle, openAPIDocument, healthLive, healthReady, metrics, whoami,
        streams, stream, entries, streamSamples, linkSamples, links, link, linkSuspend, linkResume, linkCursor,
        linkReset, linkAdopt, linkSyncLog, linkDeadLetters, linkDeadLetterRetry, sources, source, sourceSuspend, sourceResume, sourceSyncLog,
        notifications, cluster,
    ]

    /// The route whose pattern `path` matches, or nil when no route has this path.
    public static func route(matching path: String) -> APIRoute? {
        all.first { $0.matches(path: path) }
    }
}
