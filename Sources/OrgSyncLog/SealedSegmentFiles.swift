import Synchronization

/// At most `capacity` values by key; inserting past it evicts the least recently used one.
/// Pure: it never opens or closes anything, it returns what it evicts so that the caller drops
/// it outside any lock.
///
/// Eviction scans the entries for the oldest use: O(capacity) on a miss, O(1) on a hit. The
/// capacity is small (tens to a few thousand), and a miss already costs an open(2).
struct LeastRecentlyUsed<Key: Hashable, Value> {
    let capacity: Int
    private var entries: [Key: (value: Value, lastUse: UInt64)] = [:]
    private var uses: UInt64 = 0

    init(capacity: Int) {
        precondition(capacity >= 1, "a cache holds at least one value")
        self.capacity = capacity
    }

    var count: Int { entries.count }

    /// The value for `key`, marked as just used.
    mutating func value(for key: Key) -> Value? {
        guard let entry = entries[key] else { return nil }
        uses += 1
        entries[key] = (entry.value, uses)
        return entry.value
    }

    /// Holds `value` for `key` (replacing any value it had) and returns the values that no
    /// longer fit: at most one, the least recently used, or the replaced one.
    mutating func insert(_ value: Value, for key: Key) -> [Value] {
        uses += 1
        var evicted: [Value] = []
        if let old = entries.updateValue((value, uses), forKey: key) { evicted.append(old.value) }
        while entries.count > capacity, let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            evicted.append(oldest.value.value)
            entries.removeValue(forKey: oldest.key)
        }
        return evicted
    }

    mutating func remove(_ key: Key) -> Value? { entries.removeValue(forKey: key)?.value }
}

/// The open files of one stream's sealed segments, at most `LogConfiguration.openSealedSegmentsMax`
/// of them: a stream of thousands of segments holds a bounded number of descriptors, and a
/// sealed segment is opened only when it is read.
///
/// Evicting a file drops the cache's reference only: a reader that took the file keeps a valid
/// descriptor until it drops it (``LogFile`` closes on deinit), so no reader ever reads a
/// descriptor number that was closed and reused.
final class SealedSegmentFiles: Sendable {
    private let storage: any LogStorage
    private let files: Mutex<LeastRecentlyUsed<String, any LogFile>>

    init(storage: any LogStorage, capacity: Int) {
        self.storage = storage
        self.files = Mutex(LeastRecentlyUsed(capacity: capacity))
    }

    /// Files open now (for tests).
    var openCount: Int { files.withLock { $0.count } }

    /// The open file of the sealed segment at `path`, opened if it is not in the cache.
    func file(_ path: String) throws -> any LogFile {
        if let file = files.withLock({ $0.value(for: path) }) { return file }
        // Opened outside the lock; two readers missing at once both open, and one file is dropped.
        let opened = try storage.openFile(path, create: false)
        let evicted = files.withLock { $0.insert(opened, for: path) }
        _ = evicted  // closed here, outside the lock, once no reader holds them
        return opened
    }

    /// Drops the file of a segment that is deleted (retention, repair), so that its space is freed.
    func forget(_ path: String) {
        let dropped = files.withLock { $0.remove(path) }
        _ = dropped
    }
}
