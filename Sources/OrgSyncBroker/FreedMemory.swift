#if canImport(Glibc)
import Glibc
#endif

/// Giving freed heap memory back to the system. glibc keeps pages a process freed for its own
/// next allocations; after a burst (large request bodies, links catching up a backlog) the
/// broker would stay at its peak size. `malloc_trim` returns them.
public enum FreedMemory {
    /// Returns free heap pages to the system (every arena). Costs about a millisecond on an
    /// idle heap; call it when a burst is over, not per request.
    public static func giveBack() {
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
    }

    /// Most malloc arenas. glibc gives a thread that meets a locked arena one of its own, up to
    /// eight per core, and each keeps what is freed in it for its own reuse: ten links at a
    /// steady pace (a GRDB queue each, the flusher, the cooperative pool) held ~6 MiB in each of
    /// a dozen arenas, and grew by ~13 MiB per 10 minutes for 30 minutes (to 137 MiB); limited to
    /// two they stayed at 64-74 MiB for 8. Four (two per core here): catch-up of 10 links at 98 %
    /// of the unlimited rate in the same run (two: ~92 %, within the machine's noise).
    public static let mallocArenasMax: Int32 = 4

    /// Limits the malloc arenas to ``mallocArenasMax``; called first thing by a process that runs
    /// a broker (arenas already made stay). `MALLOC_ARENA_MAX` in the environment wins.
    public static func limitArenas() {
        #if os(Linux)
        guard getenv("MALLOC_ARENA_MAX") == nil else { return }
        _ = glibcMallopt(mallocOptionArenaMax, mallocArenasMax)
        #endif
    }
}

/// When to give freed memory back while links apply: once per quiet spell, after the total
/// applied count has not moved for `quietTicksBeforeTrim` observations in a row; and while they
/// keep working, every `busyTicksBetweenTrims` observations (many threads each free into their
/// own malloc arena, which glibc keeps: ten links at a steady pace grew the broker by ~4 MiB a
/// minute with a flat live heap). A value with no I/O and no clock; ``LinkService`` observes it
/// once a metrics interval.
struct IdleTrimDecision {
    let quietTicksBeforeTrim: Int
    let busyTicksBetweenTrims: Int
    private var lastAppliedTotal: UInt64?
    private var quietTicks = 0
    private var busyTicks = 0
    private var trimmedSinceLastWork = true

    init(quietTicksBeforeTrim: Int, busyTicksBetweenTrims: Int) {
        self.quietTicksBeforeTrim = max(1, quietTicksBeforeTrim)
        self.busyTicksBetweenTrims = max(1, busyTicksBetweenTrims)
    }

    /// True when memory should be given back now.
    mutating func observe(appliedTotal: UInt64) -> Bool {
        defer { lastAppliedTotal = appliedTotal }
        guard let last = lastAppliedTotal else { return false }  // the first look: nothing done yet
        if appliedTotal != last {
            quietTicks = 0
            trimmedSinceLastWork = false
            busyTicks += 1
            guard busyTicks >= busyTicksBetweenTrims else { return false }
            busyTicks = 0
            return true
        }
        busyTicks = 0
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

/// glibc's `mallopt` and its `M_ARENA_MAX` (malloc.h: -8).
@_silgen_name("mallopt")
private func glibcMallopt(_ option: Int32, _ value: Int32) -> Int32
private let mallocOptionArenaMax: Int32 = -8
#endif
