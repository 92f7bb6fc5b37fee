/// `GET /v1/streams`.
public struct StreamList: Codable, Sendable, Hashable {
    public var streams: [StreamInfoBody]
    public init(streams: [StreamInfoBody]) { self.streams = streams }
}

/// `GET /v1/streams/{stream}`.
public struct StreamInfoBody: Codable, Sendable, Hashable {
    public var name: String
    public var startOffset: UInt64
    public var endOffset: UInt64
    public var segments: Int
    public var storedBytes: Int64
    public var rawBytes: Int64
    public var compressionRatio: Double

    public init(
        name: String, startOffset: UInt64, endOffset: UInt64, segments: Int, storedBytes: Int64, rawBytes: Int64,
        compressionRatio: Double
    ) {
        self.name = name
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.segments = segments
        self.storedBytes = storedBytes
        self.rawBytes = rawBytes
        self.compressionRatio = compressionRatio
    }
}

/// The body of `201` after an append (`POST /v1/streams/{stream}/entries`).
public struct AppendBody: Codable, Sendable, Hashable {
    public var firstOffset: UInt64
    public var lastOffset: UInt64
    public var count: Int

    public init(firstOffset: UInt64, lastOffset: UInt64, count: Int) {
        self.firstOffset = firstOffset
        self.lastOffset = lastOffset
        self.count = count
    }
}

/// `GET /v1/whoami`: what the presented credentials may do, so the status page shows operator
/// buttons only to an admin. The token itself is never echoed.
public struct WhoAmIBody: Codable, Sendable, Hashable {
    public var authEnabled: Bool
    /// `admin`, `produce`, or `none` (auth on and no credentials presented).
    public var role: String

    public init(authEnabled: Bool, role: String) {
        self.authEnabled = authEnabled
        self.role = role
    }
}
