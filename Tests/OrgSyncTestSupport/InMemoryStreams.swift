import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import Synchronization

/// An entry like the shared workload's, for offset `offset`.
/// The raw JSON is written by hand: encoding it with `JSONEncoder` would dominate a simulation.
public func sampleEntry(offset: Offset, org: String = "acme", object: String = "Contact") -> Entry {
    let key = "k\(offset.rawValue % 97)"
    let ts = "2026-11-25T12:00:00.000Z"
    let raw = #"{"fields":{"n":\#(offset.rawValue)},"key":"\#(key)","object":"\#(object)","op":"upsert","org":"\#(org)","ts":"\#(ts)"}"#
    return Entry(offset: offset, org: org, object: object, op: .upsert, key: key, ts: ts,
                 fields: ["n": .int(Int64(offset.rawValue))], raw: Array(raw.utf8))
}

/// A stream held in memory; appends wake the links waiting on it.
public final class InMemoryEntrySource: LinkEntrySource {
    public let streamName: String
    private let entries = Observed<[Entry]>([])
    private let identity: Mutex<StreamLineage>

    public init(streamName: String = "events", lineage: StreamLineage = .random()) {
        self.streamName = streamName
        self.identity = Mutex(lineage)
    }

    public func lineage() async -> StreamLineage { identity.withLock { $0 } }

    /// Cuts the stream back to `offset` and begins a new epoch there, as `orgsync log repair` does.
    public func cut(to offset: Offset) {
        entries.update { $0.removeLast(max(0, $0.count - Int(offset.rawValue))) }
        identity.withLock { $0.beginEpoch(at: offset.rawValue) }
    }

    /// Appends `count` sample entries; returns the offsets they got.
    @discardableResult
    public func append(count: Int) -> Range<Offset> {
        entries.update { entries in
            let first = entries.count
            for index in first..<(first + count) { entries.append(sampleEntry(offset: Offset(UInt64(index)))) }
            return Offset(UInt64(first))..<Offset(UInt64(first + count))
        }
    }

    /// How many of the next ``read(from:maxCount:)`` calls throw ``LinkStoreUnavailable``, as a
    /// cluster's stream does while a nats-server restarts.
    public let unavailableReadCount = Mutex(0)

    public func read(from offset: Offset, maxCount: Int) async throws -> [Entry] {
        if unavailableReadCount.takeOne() { throw LinkStoreUnavailable("timed out waiting for a reply (scripted)") }
        let all = entries.value
        guard offset.rawValue < UInt64(all.count) else { return [] }
        let start = Int(offset.rawValue)
        return Array(all[start..<min(all.count, start + maxCount)])
    }

    public func endOffset() async -> Offset { Offset(UInt64(entries.value.count)) }

    /// How many of the next ``checkedEndOffset()`` calls throw ``LinkStoreUnavailable``, as a
    /// cluster's stream does while NATS elects its leader.
    public let unavailableEndCount = Mutex(0)

    public func checkedEndOffset() async throws -> Offset {
        if unavailableEndCount.takeOne() { throw LinkStoreUnavailable("no responders (scripted)") }
        return await endOffset()
    }

    public func waitForEntries(after offset: Offset) async throws {
        _ = try await entries.wait { UInt64($0.count) > offset.rawValue }
    }
}

/// A stream whose entries appear at scheduled times of a clock: a producer without a task, for
/// single-task simulations. ``drained`` turns true when a link waits past the last entry.
public final class ScheduledEntrySource: LinkEntrySource {
    public let streamName: String
    private let entries: [Entry]
    /// Non-decreasing: entry i becomes visible at `appendAtMs[i]`.
    private let appendAtMs: [UInt64]
    private let clock: any LinkClock
    public let drained = Observed(false)
    private let identity = StreamLineage.random()

    public func lineage() async -> StreamLineage { identity }

    public init(streamName: String = "events", appendAtMs: [UInt64], clock: any LinkClock) {
        self.streamName = streamName
        self.appendAtMs = appendAtMs.sorted()
        self.entries = ScheduledEntrySource.sampleEntries(count: appendAtMs.count)
        self.clock = clock
    }

    public var totalCount: Int { entries.count }

    /// Sample entries are the same in every run: build them once (simulations make thousands).
    private static let cache = Mutex<[Entry]>([])

    static func sampleEntries(count: Int) -> [Entry] {
        cache.withLock { cached in
            while cached.count < count { cached.append(sampleEntry(offset: Offset(UInt64(cached.count)))) }
            return Array(cached[0..<count])
        }
    }

    private func visibleCount() -> Int {
        let now = clock.nowMs()
        var low = 0, high = appendAtMs.count
        while low < high {
            let middle = (low + high) / 2
            if appendAtMs[middle] <= now { low = middle + 1 } else { high = middle }
        }
        return low
    }

    public func read(from offset: Offset, maxCount: Int) async throws -> [Entry] {
        let visible = visibleCount()
        guard offset.rawValue < UInt64(visible) else { return [] }
        let start = Int(offset.rawValue)
        return Array(entries[start..<min(visible, start + maxCount)])
    }

    public func endOffset() async -> Offset { Offset(UInt64(visibleCount())) }

    public func waitForEntries(after offset: Offset) async throws {
        while true {
            let visible = visibleCount()
            if UInt64(visible) > offset.rawValue { return }
            guard visible < appendAtMs.count else {
                drained.update { $0 = true }
                _ = try await drained.wait { _ in false }  // until cancelled
                throw CancellationError()
            }
            try await clock.sleep(untilMs: appendAtMs[visible])
        }
    }
}

/// Cursors in memory. Records any store that would move a cursor backwards (a bug).
public final class InMemoryCursorStore: LinkCursorStore {
    public let cursors = Observed<[String: Offset]>([:])
    public let backwardStoreCount = Observed(0)

    public init(initial: [String: Offset] = [:]) { cursors.update { $0 = initial } }

    public func load(link: String) async throws -> Offset? { cursors.value[link] }

    public func store(link: String, offset: Offset) async throws {
        let backwards = cursors.update { cursors -> Bool in
            defer { cursors[link] = offset }
            return (cursors[link] ?? 0) > offset
        }
        if backwards { backwardStoreCount.update { $0 += 1 } }
    }

    /// Waits until `link`'s cursor reaches `offset`.
    public func waitForCursor(link: String, atLeast offset: Offset) async throws {
        _ = try await cursors.wait { ($0[link] ?? 0) >= offset }
    }
}

extension Mutex where Value == Int {
    /// Counts one down if it is above zero; whether it did (a scripted failure is due).
    func takeOne() -> Bool {
        withLock { count in
            guard count > 0 else { return false }
            count -= 1
            return true
        }
    }
}
