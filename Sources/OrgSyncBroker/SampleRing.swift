/// The newest `capacity` values appended, oldest first: a fixed-size ring. Appending to a full
/// ring drops the oldest value, so memory is bounded by `capacity` whatever runs for how long.
/// A value with no I/O and no clock (see ``RecentSamples`` for the store the broker keeps).
struct SampleRing<Element: Sendable>: Sendable {
    /// The most values kept (at least 1).
    let capacity: Int
    private var storage: [Element] = []
    /// Index in `storage` of the oldest value once the ring is full.
    private var oldest = 0

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        storage.reserveCapacity(self.capacity)
    }

    var count: Int { storage.count }

    mutating func append(_ value: Element) {
        if storage.count < capacity {
            storage.append(value)
        } else {
            storage[oldest] = value
            oldest = (oldest + 1) % capacity
        }
    }

    /// Every value kept, oldest first.
    var elements: [Element] { Array(storage[oldest...] + storage[..<oldest]) }

    /// The newest value, or nil while empty.
    var newest: Element? {
        guard !storage.isEmpty else { return nil }
        return storage[(oldest + storage.count - 1) % storage.count]
    }
}

/// Per-second rates from a cumulative count read at times in milliseconds (an entries counter,
/// a stream's end offset). Pure.
enum CounterRate {
    /// The count's increase per second from `previous` to `current`, or nil when time did not
    /// move forward (the first sample, or a wall clock set back). A count below the previous one
    /// means the counter restarted from zero in between (a link's supervisor or the process
    /// restarted), so the increase is the count itself, as Prometheus' `rate()` reads a reset.
    static func perSecond(from previous: (timeMs: UInt64, count: UInt64), to current: (timeMs: UInt64, count: UInt64)) -> Double? {
        guard current.timeMs > previous.timeMs else { return nil }
        let increase = current.count >= previous.count ? current.count - previous.count : current.count
        return Double(increase) * 1000 / Double(current.timeMs - previous.timeMs)
    }

    /// The rate at each sample since the one before it; nil for the first and wherever
    /// ``perSecond(from:to:)`` is.
    static func perSecond(_ samples: [(timeMs: UInt64, count: UInt64)]) -> [Double?] {
        samples.indices.map { i in i == samples.startIndex ? nil : perSecond(from: samples[i - 1], to: samples[i]) }
    }
}
