import Foundation
import Logging
import OrgSyncCore
import OrgSyncPluginAPI
@testable import PostgresAdapter
import PostgresNIO
import Testing

/// The set-based path against the entry-by-entry one, on the real server: the same seeded
/// entries (repeated records, every value type, new columns mid-batch, inserts of records that
/// exist, values that do not fit, a table made by someone else with a default and a column of a
/// type the adapter does not write) through both, driven as a link drives an adapter (on a
/// rejection: the entries before it, then on after it). Same dead letters, same tables.
@Suite(.serialized, .enabled(if: TestPostgres.shouldRun, TestPostgres.skipMessage))
struct SetBasedApplyTests {
    @Test(arguments: [
        (PostgresAdapterSettings.PrimaryKey.key, UInt64(7), PostgresAdapterSettings.BatchWrites.perEntry), (.orgKey, 11, .perRecord),
        (.orgKey, 12, .perEntry), (.key, 13, .perRecord),
    ])
    func setsAndEntryByEntryLeaveTheSameTablesAndRejectTheSameEntries(
        primaryKey: PostgresAdapterSettings.PrimaryKey, seed: UInt64, writes: PostgresAdapterSettings.BatchWrites
    ) async throws {
        let entries = Self.entries(count: 1_500, seed: seed)
        let sets = try await run(entries, grouping: .sets, primaryKey: primaryKey, writes: writes)
        let single = try await run(entries, grouping: .entryByEntry, primaryKey: primaryKey, writes: .perEntry)
        #expect(sets.tables == single.tables)
        #expect(sets.rejected == single.rejected)
        if writes == .perEntry {
            // As the link runs it: small layers as single statements.
            let standard = try await run(
                entries, grouping: .sets, primaryKey: primaryKey, writes: writes, singlyMax: PostgresAdapter.layerRowsSentSinglyMax)
            #expect(standard.tables == single.tables && standard.rejected == single.rejected)
            #expect(standard.counts.sets > 0 && standard.counts.sets < sets.counts.sets)
        }
        #expect(sets.tables.count == 3)
        #expect(sets.tables.values.allSatisfy { $0.count > 10 }, "every table holds rows")
        // The workload has both kinds of rejection, and the set path did its work in sets.
        #expect(sets.rejected.contains { $0.code == "23505" })
        #expect(sets.rejected.contains { $0.code == nil })
        #expect(sets.counts.sets > 50)
        #expect(sets.counts.singles < entries.count / 4)
        #expect(single.counts.sets == 0)
        // No set statement failed on the server (a failing one sends its batch entry by entry).
        #expect(sets.counts.fallbacks == 0, "\(sets.counts)")
        // The statements' texts repeat, so most sets ran prepared, each prepared once per shape.
        #expect(sets.counts.preparedRuns > sets.counts.sets / 2, "\(sets.counts)")
        #expect(sets.counts.prepared < sets.counts.preparedRuns / 4, "\(sets.counts)")
        print("set-based apply (\(writes.rawValue)), seed \(seed): \(sets.counts), entry by entry: \(single.counts), \(sets.rejected.count) rejected")
    }

    /// `per_entry` keeps every entry's own row change (what row-level triggers, and the fault
    /// harness's audit, see); `per_record` folds them, so it shows fewer.
    @Test(arguments: [PostgresAdapterSettings.PrimaryKey.key, .orgKey])
    func perEntrySetsMakeTheSameRowChangesAsEntryByEntry(primaryKey: PostgresAdapterSettings.PrimaryKey) async throws {
        let entries = Self.entries(count: 1_200, seed: 21)
        let single = try await run(entries, grouping: .entryByEntry, primaryKey: primaryKey, writes: .perEntry, audited: true)
        let perEntry = try await run(entries, grouping: .sets, primaryKey: primaryKey, writes: .perEntry, audited: true)
        let perRecord = try await run(entries, grouping: .sets, primaryKey: primaryKey, writes: .perRecord, audited: true)
        #expect(single.effects.values.reduce(0, +) > entries.count / 2, "the audit trigger fired")
        #expect(perEntry.effects == single.effects)
        #expect(perEntry.tables == single.tables && perRecord.tables == single.tables)
        #expect(perRecord.effects.values.reduce(0, +) < single.effects.values.reduce(0, +))
        #expect(perEntry.counts.sets > 20)
    }

    @Test func aServerRefusalInsideASetStatementNamesTheOneEntry() async throws {
        try await withCheckedContacts("setrefusal") { adapter, db, schema in
            try await adapter.apply(batch([entry(0, .upsert, "a", ["Code": "abc"])]))
            try await Self.limitCodeLength(schema: schema, on: db)
            let refused = await adapterError {
                try await adapter.apply(batch((1...6).map { entry($0, .upsert, "k\($0)", ["Code": $0 == 4 ? "toolong" : "ok"]) }))
            }
            #expect(refused?.kind == .rejected(offset: 4))
            #expect(refused?.targetCode == "23514")
            #expect(await adapter.statementCounts.fallbacks == 1)
            #expect(try await db.count(schema: schema, table: "Contact") == 1)
            // What the link does next: the entries before it go through as a set.
            try await adapter.apply(batch((1...3).map { entry($0, .upsert, "k\($0)", ["Code": "ok"]) }))
            #expect(try await db.count(schema: schema, table: "Contact") == 4)
            #expect(try await adapter.appliedPosition()?.offset == 3)
        }
    }

    /// The same refusal when the set statement runs prepared: postgres-nio reports errors of
    /// prepared statements as another type, which must still read as a data error of the batch.
    @Test func aServerRefusalInsideAPreparedSetStatementNamesTheOneEntry() async throws {
        try await withCheckedContacts("setrefusalprep") { adapter, db, schema in
            // Two batches of one shape: the second runs the statement prepared.
            try await adapter.apply(batch((0...2).map { entry($0, .upsert, "a\($0)", ["Code": "abc"]) }))
            try await adapter.apply(batch((3...5).map { entry($0, .upsert, "b\($0)", ["Code": "abc"]) }))
            #expect(await adapter.statementCounts.preparedRuns == 1)
            try await Self.limitCodeLength(schema: schema, on: db)
            let refused = await adapterError {
                try await adapter.apply(batch((6...11).map { entry($0, .upsert, "k\($0)", ["Code": $0 == 9 ? "toolong" : "ok"]) }))
            }
            #expect(refused?.kind == .rejected(offset: 9))
            #expect(refused?.targetCode == "23514")
            #expect(await adapter.statementCounts.preparedRuns == 2, "the refused set ran prepared")
            #expect(await adapter.statementCounts.fallbacks == 1)
            #expect(try await db.count(schema: schema, table: "Contact") == 6)
            // The statement is still prepared after the rollback, and a new column makes a new one.
            try await adapter.apply(batch((6...8).map { entry($0, .upsert, "k\($0)", ["Code": "ok"]) }))
            #expect(await adapter.statementCounts.preparedRuns == 3)
            try await adapter.apply(batch((9...10).map { entry($0, .upsert, "k\($0)", ["Code": "ok", "Other": "x"]) }))
            #expect(await adapter.statementCounts.preparedRuns == 3, "a new shape is sent unnamed first")
            #expect(try await db.count(schema: schema, table: "Contact") == 11)
            #expect(try await adapter.appliedPosition()?.offset == 10)
        }
    }

    /// For a connection pooler that cannot keep them: the same sets, none prepared.
    @Test func withoutPreparedStatementsEverySetGoesUnnamed() async throws {
        try await withCheckedContacts("unprepared", preparedStatements: false) { adapter, db, schema in
            for first in stride(from: UInt64(0), to: 12, by: 3) {
                try await adapter.apply(batch((first..<first + 3).map { entry($0, .upsert, "k\($0 % 5)", ["Code": "abc"]) }))
            }
            let counts = await adapter.statementCounts
            #expect(counts.sets == 4 && counts.preparedRuns == 0 && counts.prepared == 0, "\(counts)")
            #expect(try await db.count(schema: schema, table: "Contact") == 5)
        }
    }

    /// An adapter that sends every layer it can as a set, on a schema of its own, and a
    /// connection of the test's; both closed and the schema dropped after `body`.
    func withCheckedContacts(
        _ name: String, preparedStatements: Bool = true, _ body: (PostgresAdapter, PostgresConnection, String) async throws -> Void
    ) async throws {
        let schema = TestPostgres.uniqueSchema(name)
        var settings = try TestPostgres.settings(schema: schema)
        settings.preparedStatements = preparedStatements
        let adapter = PostgresAdapter(linkName: name, settings: settings, grouping: .sets, layerRowsSentSinglyMax: 1)
        let db = try await TestPostgres.connect(settings)
        do {
            try await adapter.open()
            try await body(adapter, db, schema)
        } catch {
            Issue.record(error)
        }
        await adapter.close()
        await db.dropSchema(schema)
        try await db.close()
    }

    /// A constraint the adapter cannot know of: the server refuses a row of a set.
    static func limitCodeLength(schema: String, on db: PostgresConnection) async throws {
        try await db.query(
            PostgresQuery(unsafeSQL: "ALTER TABLE \"\(schema)\".\"Contact\" ADD CONSTRAINT short CHECK (length(\"Code\") <= 3)"),
            logger: Logger(label: "test"))
    }

    // MARK: - Rig

    struct Outcome {
        /// Per table: its rows as JSON text, ordered by org and key.
        var tables: [String: [String]] = [:]
        var rejected: [Rejection] = []
        var counts = PostgresAdapter.StatementCounts()
        /// With `audited`: each row change the tables' triggers saw, `op table org key ts`, counted.
        var effects: [String: Int] = [:]
    }

    struct Rejection: Hashable {
        var offset: Offset
        var code: String?
    }

    func run(
        _ entries: [Entry], grouping: PostgresAdapter.StatementGrouping, primaryKey: PostgresAdapterSettings.PrimaryKey,
        writes: PostgresAdapterSettings.BatchWrites, audited: Bool = false, singlyMax: Int = 1
    ) async throws -> Outcome {
        let schema = TestPostgres.uniqueSchema("sets")
        var settings = try TestPostgres.settings(schema: schema)
        settings.primaryKey = primaryKey
        settings.batchWrites = writes
        let adapter = PostgresAdapter(linkName: "sets", settings: settings, grouping: grouping, layerRowsSentSinglyMax: singlyMax)
        let db = try await TestPostgres.connect(settings)
        var outcome = Outcome()
        do {
            try await adapter.open()
            let pk = primaryKey == .key ? "\"key\"" : "\"org\", \"key\""
            // Made ahead: a default on the column and one on its domain, a type the adapter does
            // not write, and `json` (not the `jsonb` the adapter makes).
            try await db.query(
                PostgresQuery(unsafeSQL: "CREATE DOMAIN \"\(schema)\".mood AS TEXT DEFAULT 'calm'"), logger: Logger(label: "test"))
            try await db.query(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE TABLE "\(schema)"."Legacy" ("key" TEXT NOT NULL, "org" TEXT NOT NULL, "ts" TEXT NOT NULL,
                            "Flag" TEXT DEFAULT 'unset', "Seen" TIMESTAMPTZ, "N" BIGINT, "Doc" JSON, "Mood" "\(schema)".mood,
                            PRIMARY KEY (\(pk)))
                        """), logger: Logger(label: "test"))
            if audited { try await installAudit(schema: schema, primaryKey: pk, on: db) }
            outcome.rejected = try await drive(adapter, entries, batchSize: 100)
            if audited {
                let result = try await db.query(
                    PostgresQuery(unsafeSQL: "SELECT op || ' ' || tbl || ' ' || org || ' ' || key || ' ' || ts FROM \"\(schema)\".effects"),
                    logger: Logger(label: "test"))
                for try await effect in result.decode(String.self) { outcome.effects[effect, default: 0] += 1 }
            }
            outcome.counts = await adapter.statementCounts
            for table in ["Contact", "Account", "Legacy"] {
                var rows: [String] = []
                let result = try await db.query(
                    PostgresQuery(unsafeSQL: "SELECT to_jsonb(t)::text FROM \"\(schema)\".\"\(table)\" t ORDER BY t.\"org\", t.\"key\""),
                    logger: Logger(label: "test"))
                for try await text in result.decode(String.self) { rows.append(text) }
                outcome.tables[table] = rows
            }
        } catch {
            await adapter.close()
            await db.dropSchema(schema)
            try? await db.close()
            throw error
        }
        await adapter.close()
        await db.dropSchema(schema)
        try await db.close()
        return outcome
    }

    /// The tables made beforehand (the adapter adds their columns), each with a row-level
    /// trigger that records every change it makes in `effects`.
    func installAudit(schema: String, primaryKey pk: String, on db: PostgresConnection) async throws {
        var sql = [
            "CREATE TABLE \"\(schema)\".effects (op TEXT, tbl TEXT, org TEXT, key TEXT, ts TEXT)",
            """
            CREATE FUNCTION "\(schema)".record_effect() RETURNS trigger LANGUAGE plpgsql AS $fn$
            BEGIN
              IF TG_OP = 'DELETE' THEN
                INSERT INTO "\(schema)".effects VALUES (TG_OP, TG_TABLE_NAME, OLD.org, OLD.key, OLD.ts);
              ELSE
                INSERT INTO "\(schema)".effects VALUES (TG_OP, TG_TABLE_NAME, NEW.org, NEW.key, NEW.ts);
              END IF;
              RETURN NULL;
            END $fn$
            """,
        ]
        for table in ["Contact", "Account"] {
            sql.append("CREATE TABLE \"\(schema)\".\"\(table)\" (\"key\" TEXT NOT NULL, \"org\" TEXT NOT NULL, \"ts\" TEXT NOT NULL, PRIMARY KEY (\(pk)))")
        }
        for table in ["Contact", "Account", "Legacy"] {
            sql.append(
                "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON \"\(schema)\".\"\(table)\" FOR EACH ROW EXECUTE FUNCTION \"\(schema)\".record_effect()")
        }
        for statement in sql { try await db.query(PostgresQuery(unsafeSQL: statement), logger: Logger(label: "test")) }
    }

    /// As ``LinkSupervisor`` does: a batch; on a rejection the entries before it, the rejected
    /// entry dead-lettered, and on from the entry after it.
    func drive(_ adapter: PostgresAdapter, _ entries: [Entry], batchSize: Int) async throws -> [Rejection] {
        var rejected: [Rejection] = []
        var start = 0
        while start < entries.count {
            var pending = Array(entries[start..<min(start + batchSize, entries.count)])
            var next = start + pending.count
            while !pending.isEmpty {
                do {
                    try await adapter.apply(batch(pending))
                    pending = []
                } catch let error as AdapterError {
                    guard case .rejected(let offset) = error.kind, let index = pending.firstIndex(where: { $0.offset == offset }) else {
                        throw error
                    }
                    if let last = rejected.last, last.offset > offset { rejected.removeLast() }
                    rejected.append(Rejection(offset: offset, code: error.targetCode))
                    next = start + index + 1
                    pending = Array(pending[..<index])
                }
            }
            start = next
        }
        return rejected
    }

    /// Entries over few records (so they repeat within a batch), every value type, and a few
    /// that cannot apply.
    static func entries(count: Int, seed: UInt64) -> [Entry] {
        var random = SplitMix64(seed: seed)
        let texts: [JSONValue] = ["plain", "q\"u'o`te", "back\\slash", "line\nbreak\ttab", "é😀", "", "{\"not\": \"json\"}"]
        func value(_ field: String) -> JSONValue {
            switch field {
            case "Name", "Note": return random.nextUnit() < 0.1 ? .null : texts[Int(random.next() % UInt64(texts.count))]
            case "N": return random.nextUnit() < 0.5 ? .int(Int64(bitPattern: random.next()) >> 8) : .double(Double(random.next() % 1000))
            case "Score": return random.nextUnit() < 0.5 ? .int(Int64(random.next() % 100)) : .double(random.nextUnit() * 1e6 - 5e5)
            case "Active": return random.nextUnit() < 0.2 ? .null : .bool(random.next() % 2 == 0)
            case "Tags": return random.nextUnit() < 0.3 ? .null : .array([.string("a"), .int(1), .object(["n": .double(0.5)])])
            case "Flag": return .string("flag\(random.next() % 5)")
            case "Seen": return .null
            case "Doc": return random.nextUnit() < 0.3 ? .null : .object(["n": .int(Int64(random.next() % 9)), "s": .string("x y")])
            case "Mood": return .string("mood\(random.next() % 3)")
            default: return .int(Int64(random.next() % 10))
            }
        }
        let objects = ["Contact", "Contact", "Account", "Legacy"]
        let fields = ["Name", "Note", "N", "Score", "Active", "Tags", "Flag", "Seen", "Doc", "Mood"]
        let legacyOnly: Set<String> = ["Flag", "Seen", "Doc", "Mood"]
        return (0..<count).map { index in
            let object = objects[Int(random.next() % UInt64(objects.count))]
            let roll = random.nextUnit()
            let op: EntryOperation = roll < 0.7 ? .upsert : roll < 0.85 ? .insert : .delete
            var carried: [String: JSONValue] = [:]
            if op != .delete {
                for field in fields where random.nextUnit() < 0.45 {
                    guard object == "Legacy" || !legacyOnly.contains(field) else { continue }
                    carried[field] = value(field)
                }
                // New columns mid-run, and now and then a value that cannot fit.
                if random.nextUnit() < 0.03 { carried["Extra\(random.next() % 4)"] = .string("x") }
                if random.nextUnit() < 0.01 { carried["N"] = .string("not a number") }
                if object == "Legacy", random.nextUnit() < 0.02 { carried["Seen"] = .string("2026-11-27") }
            }
            return Entry(
                offset: Offset(UInt64(index)), org: random.next() % 3 == 0 ? "globex" : "acme", object: object, op: op,
                key: "k\(random.next() % 40)", ts: "t\(index)", fields: carried)
        }
    }
}
