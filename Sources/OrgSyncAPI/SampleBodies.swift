/// `GET /v1/links/{link}/samples`: the link's readings of the last `window_ms`, oldest first,
/// one per second, kept in memory (at most `samples_max`; none from before a restart).
public struct LinkSamplesBody: Codable, Sendable, Hashable {
    public var link: String
    public var stream: String
    /// The window asked for (or the longest, 15 minutes).
    public var windowMs: UInt64
    /// The most readings the broker keeps per link.
    public var samplesMax: Int
    public var samples: [LinkSampleBody]

    public init(link: String, stream: String, windowMs: UInt64, samplesMax: Int, samples: [LinkSampleBody]) {
        self.link = link
        self.stream = stream
        self.windowMs = windowMs
        self.samplesMax = samplesMax
        self.samples = samples
    }
}

public struct LinkSampleBody: Codable, Sendable, Hashable {
    /// Milliseconds since 1970 (UTC).
    public var timeMs: UInt64
    /// `active`, `suspended`, `verifying`, `paused` or `diverged`.
    public var state: String
    public var heldDown: Bool
    public var lag: UInt64
    public var cursor: UInt64
    /// Entries applied since the link's supervisor started (cumulative).
    public var appliedEntries: UInt64
    /// Applied entries per second since the reading before; absent for the first reading.
    public var appliedPerSecond: Double?

    public init(timeMs: UInt64, state: String, heldDown: Bool, lag: UInt64, cursor: UInt64, appliedEntries: UInt64,
                appliedPerSecond: Double?) {
        self.timeMs = timeMs
        self.state = state
        self.heldDown = heldDown
        self.lag = lag
        self.cursor = cursor
        self.appliedEntries = appliedEntries
        self.appliedPerSecond = appliedPerSecond
    }
}

/// `GET /v1/streams/{stream}/samples`: the stream's readings of the last `window_ms`, oldest first.
public struct StreamSamplesBody: Codable, Sendable, Hashable {
    public var stream: String
    public var windowMs: UInt64
    public var samplesMax: Int
    public var samples: [StreamSampleBody]

    public init(stream: String, windowMs: UInt64, samplesMax: Int, samples: [StreamSampleBody]) {
        self.stream = stream
        self.windowMs = windowMs
        self.samplesMax = samplesMax
        self.samples = samples
    }
}

public struct StreamSampleBody: Codable, Sendable, Hashable {
    public var timeMs: UInt64
    public var endOffset: UInt64
    /// Entries appended per second since the reading before; absent for the first reading.
    public var appendedPerSecond: Double?

    public init(timeMs: UInt64, endOffset: UInt64, appendedPerSecond: Double?) {
        self.timeMs = timeMs
        self.endOffset = endOffset
        self.appendedPerSecond = appendedPerSecond
    }
}
