/// Which set statements go as named prepared statements on the current connection, decided
/// apart from sending them. Pure: the adapter asks ``use(_:)`` for every set statement's text
/// and does what it answers.
///
/// An unnamed statement is parsed and planned on every batch: for the workload's one statement
/// per batch (six tables, ~11 KB of SQL) that was 4–7 ms of a ~17 ms batch on the server
/// (`log_min_duration_statement`, 2026-11-29). A named one is parsed once and, after the
/// server's first few runs, runs a generic plan. ``SetStatement`` makes the text depend only on
/// the tables a batch writes and their columns, so it repeats from batch to batch. A text is
/// prepared the second time it is seen (one seen once may never come again, and preparing costs
/// a round trip and the server's memory); the least recently used one is closed past
/// ``statementsMax`` or ``textBytesMax``.
struct PreparedStatementCache<Statement> {
    /// Prepared statements kept per connection.
    static var statementsMax: Int { 16 }
    /// Their SQL texts together, in UTF-8 bytes (the server keeps the text and its plan).
    static var textBytesMax: Int { 4 << 20 }
    /// Texts remembered as seen once, waiting for a second sighting.
    static var sightingsMax: Int { 64 }

    enum Decision {
        /// Run the prepared statement.
        case run(Statement)
        /// Seen before: prepare it, ``insert(_:for:)`` it, close the ones it returns, run it.
        case prepare
        /// Seen for the first time: send it unnamed.
        case sendUnnamed
    }

    private var statements: [String: (statement: Statement, lastUse: UInt64)] = [:]
    private var textBytes = 0
    private var sightings: [String: UInt64] = [:]
    private var clock: UInt64 = 0

    var count: Int { statements.count }

    mutating func use(_ text: String) -> Decision {
        clock &+= 1
        if let kept = statements[text] {
            statements[text] = (kept.statement, clock)
            return .run(kept.statement)
        }
        if sightings.removeValue(forKey: text) != nil, text.utf8.count <= Self.textBytesMax { return .prepare }
        sightings[text] = clock
        if sightings.count > Self.sightingsMax, let oldest = sightings.min(by: { $0.value < $1.value }) {
            sightings.removeValue(forKey: oldest.key)
        }
        return .sendUnnamed
    }

    /// Keeps `statement` (just prepared) for `text`; returns those it pushed out, to be closed.
    mutating func insert(_ statement: Statement, for text: String) -> [Statement] {
        clock &+= 1
        if let replaced = statements.updateValue((statement, clock), forKey: text) {
            return [replaced.statement]
        }
        textBytes += text.utf8.count
        var evicted: [Statement] = []
        while statements.count > Self.statementsMax || textBytes > Self.textBytesMax,
            let oldest = statements.min(by: { $0.value.lastUse < $1.value.lastUse })
        {
            statements.removeValue(forKey: oldest.key)
            textBytes -= oldest.key.utf8.count
            evicted.append(oldest.value.statement)
        }
        return evicted
    }
}
