import Synchronization
import OrgSyncCore
import OrgSyncPluginAPI

/// One reading of a link, taken by ``LinkService`` every metrics interval (1 s).
public struct LinkSample: Sendable, Hashable {
    /// Milliseconds since 1970 (UTC), as the sync log's times.
    public var timeMs: UInt64
    public var state: LinkState
    public var heldDown: Bool
    public var lag: UInt64
    public var cursor: UInt64
    /// Entries applied since the link's supervisor started (cumulative).
    public var appliedCount: UInt64
}

/// One reading of a stream: its end offset, which grows by one per appended entry.
public struct StreamSample: Sendable, Hashable {
    public var timeMs: UInt64
    public var endOffset: UInt64
}

/// The broker's recent readings of every link and stream, for the status page's charts
/// (`GET /v1/links/{link}/samples`, `GET /v1/streams/{stream}/samples`): in memory only, one
/// ``SampleRing`` of at most ``samplesMax`` readings per link and per stream, so its size is
/// fixed by the configuration (links + streams) and never by traffic or requests. A restart
/// starts empty.
public final class RecentSamples: Sendable {
    /// Readings kept per link and per stream: 15 minutes at one reading a second.
    public static let samplesMax = 900
    /// The longest window a request may ask for: 15 minutes (``samplesMax`` readings at the
    /// 1-second metrics interval).
    public static let windowMsMax: UInt64 = 900_000

    private struct Rings {
        var links: [String: SampleRing<LinkSample>] = [:]
        var streams: [String: SampleRing<StreamSample>] = [:]
    }

    private let rings: Mutex<Rings>

    /// Rings for exactly these links and streams: readings of any other name are ignored, so
    /// the memory held is fixed here.
    init(links: [String], streams: [String]) {
        var rings = Rings()
        for name in links { rings.links[name] = SampleRing(capacity: Self.samplesMax) }
        for name in streams { rings.streams[name] = SampleRing(capacity: Self.samplesMax) }
        self.rings = Mutex(rings)
    }

    /// Records one reading of each link and stream taken at `timeMs`.
    func record(links: [LinkStatus], streamEnds: [String: UInt64], timeMs: UInt64) {
        rings.withLock { rings in
            for status in links {
                rings.links[status.link]?.append(LinkSample(
                    timeMs: timeMs, state: status.state, heldDown: status.heldDown, lag: status.lagCount,
                    cursor: status.cursor.rawValue, appliedCount: status.appliedCount))
            }
            for (name, end) in streamEnds {
                rings.streams[name]?.append(StreamSample(timeMs: timeMs, endOffset: end))
            }
        }
    }

    /// The link's readings of the last `windowMs` before `nowMs`, oldest first, each with the
    /// applied entries per second since the reading before it (the one just outside the window
    /// too, so the first rate shown is not lost). Nil for a link this store has no ring for.
    public func link(_ name: String, windowMs: UInt64, nowMs: UInt64) -> [(sample: LinkSample, appliedPerSecond: Double?)]? {
        guard let samples = rings.withLock({ $0.links[name]?.elements }) else { return nil }
        let rates = CounterRate.perSecond(samples.map { ($0.timeMs, $0.appliedCount) })
        return Self.window(Array(zip(samples, rates)), windowMs: windowMs, nowMs: nowMs) { $0.0.timeMs }
            .map { (sample: $0.0, appliedPerSecond: $0.1) }
    }

    /// The stream's readings of the last `windowMs` before `nowMs`, oldest first, each with the
    /// entries appended per second since the reading before it. Nil for an unknown stream.
    public func stream(_ name: String, windowMs: UInt64, nowMs: UInt64) -> [(sample: StreamSample, appendedPerSecond: Double?)]? {
        guard let samples = rings.withLock({ $0.streams[name]?.elements }) else { return nil }
        let rates = CounterRate.perSecond(samples.map { ($0.timeMs, $0.endOffset) })
        return Self.window(Array(zip(samples, rates)), windowMs: windowMs, nowMs: nowMs) { $0.0.timeMs }
            .map { (sample: $0.0, appendedPerSecond: $0.1) }
    }

    /// The values whose time is at most `windowMs` before `nowMs` (later ones too: a wall clock
    /// set back must not hide the newest readings).
    static func window<T>(_ values: [T], windowMs: UInt64, nowMs: UInt64, time: (T) -> UInt64) -> [T] {
        let startMs = nowMs >= windowMs ? nowMs - windowMs : 0
        return values.filter { time($0) >= startMs }
    }
}
