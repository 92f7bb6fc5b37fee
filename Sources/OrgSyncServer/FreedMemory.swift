/// Giving freed heap memory back to the system. glibc keeps pages a process freed for its own
/// next allocations; after a burst (large request bodies, links catching up a backlog) the
/// broker would stay at its peak size. `malloc_trim` returns them.
enum FreedMemory {
    /// Returns free heap pages to the system (every arena). Costs about a millisecond on an
    /// idle heap; call it when a burst is over, not per request.
    static func giveBack() {
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
    }
}

/// When links have worked and then stood still long enough, give freed memory back: once per
/// quiet spell, after the total applied count has not moved for `quietTicksBeforeTrim`
/// observations in a row. A value with no I/O and no clock; ``LinkService`` observes it once a
/// metrics interval.
struct IdleTrimDecision {
    let quietTicksBeforeTrim: Int
    private var lastAppliedTotal: UInt64?
    private var quietTicks = 0
    private var trimmedSinceLastWork = true

    init(quietTicksBeforeTrim: Int) {
        self.quietTicksBeforeTrim = max(1, quietTicksBeforeTrim)
    }

    /// True when memory should be given back now.
    mutating func observe(appliedTotal: UInt64) -> Bool {
        defer { lastAppliedTotal = appliedTotal }
        guard let last = lastAppliedTotal else { return false }  // the first look: nothing done yet
        if appliedTotal != last {
            quietTicks = 0
            trimmedSinceLastWork = false
            return false
        }
        quietTicks += 1
        guard !trimmedSinceLastWork, quietTicks >= quietTicksBeforeTrim else { return false }
        trimmedSinceLastWork = true
        return true
    }
}

#if os(Linux)
/// glibc's `malloc_trim` (not exported by Swift's Glibc module): returns free heap pages to the
/// system. Always present in glibc, which is what Linux builds of Swift use.
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
#endif
