@testable import PostgresAdapter
import Testing

/// Which set statements run prepared, without a server: prepared on the second sighting, kept
/// by recent use within a count and a byte bound.
@Suite struct PreparedStatementCacheTests {
    typealias Cache = PreparedStatementCache<Int>

    /// What `use` answered, without the statement.
    enum Answer: Equatable {
        case run(Int)
        case prepare
        case sendUnnamed
    }

    static func answer(_ cache: inout Cache, _ text: String) -> Answer {
        switch cache.use(text) {
        case .run(let statement): .run(statement)
        case .prepare: .prepare
        case .sendUnnamed: .sendUnnamed
        }
    }

    @Test func aTextIsSentUnnamedOncePreparedTheSecondTimeAndRunAfter() {
        var cache = Cache()
        #expect(Self.answer(&cache, "A") == .sendUnnamed)
        #expect(Self.answer(&cache, "B") == .sendUnnamed)
        #expect(Self.answer(&cache, "A") == .prepare)
        #expect(cache.insert(1, for: "A").isEmpty)
        #expect(Self.answer(&cache, "A") == .run(1))
        #expect(Self.answer(&cache, "A") == .run(1))
        #expect(Self.answer(&cache, "B") == .prepare)
        #expect(cache.count == 1)
    }

    @Test func pastTheCountTheLeastRecentlyUsedIsClosed() {
        var cache = Cache()
        let max = Cache.statementsMax
        for index in 0..<max {
            _ = cache.use("s\(index)")
            #expect(Self.answer(&cache, "s\(index)") == .prepare)
            #expect(cache.insert(index, for: "s\(index)").isEmpty)
        }
        // s0 is used again, so s1 is now the least recently used.
        #expect(Self.answer(&cache, "s0") == .run(0))
        _ = cache.use("new")
        #expect(Self.answer(&cache, "new") == .prepare)
        #expect(cache.insert(max, for: "new") == [1])
        #expect(cache.count == max)
        #expect(Self.answer(&cache, "s0") == .run(0))
        #expect(Self.answer(&cache, "s1") == .sendUnnamed, "closed, so seen afresh")
    }

    @Test func pastTheByteBoundTheOldestGoEvenBelowTheCount() {
        var cache = Cache()
        let large = Cache.textBytesMax / 3 + 1
        var closed: [Int] = []
        for index in 0..<4 {
            let text = String(repeating: Character(String(index)), count: large)
            _ = cache.use(text)
            #expect(Self.answer(&cache, text) == .prepare)
            closed += cache.insert(index, for: text)
        }
        #expect(closed == [0, 1], "three would pass the bound: two are kept")
        #expect(cache.count == 2)
    }

    @Test func aTextLargerThanTheBoundIsNeverPrepared() {
        var cache = Cache()
        let huge = String(repeating: "x", count: Cache.textBytesMax + 1)
        for _ in 0..<3 { #expect(Self.answer(&cache, huge) == .sendUnnamed) }
    }

    @Test func sightingsAreBoundedOldestForgottenFirst() {
        var cache = Cache()
        for index in 0...Cache.sightingsMax { _ = cache.use("t\(index)") }
        #expect(Self.answer(&cache, "t0") == .sendUnnamed, "the oldest sighting was forgotten")
        #expect(Self.answer(&cache, "t\(Cache.sightingsMax)") == .prepare)
    }
}
