import Foundation
import Logging
import OrgSyncCore
import OrgSyncLog
import OrgSyncPluginAPI
import OrgSyncTestPostgres
import OrgSyncTestSupport
import PostgresAdapter
import PostgresNIO
import Synchronization
import Testing

/// Capture from the real PostgreSQL of `.ci/postgres.sh` (started with `wal_level = logical`)
/// into the real segment log, through the source supervisor: what reaches the stream, in which
/// order, and that a crash between an append and the slot's advance appends nothing twice.
@Suite(.serialized, .enabled(if: TestPostgresServer.isConfigured() || TestPostgresServer.inCI,
                             "PostgreSQL capture tests skipped: ORGSYNC_TEST_PG_* not set (run: source .ci/postgres.sh)"))
struct PostgresCaptureTests {
    @Test func capturesCommittedChangesInCommitOrderAndNothingTwiceAfterACrashBeforeTheSlotAdvanced() async throws {
        try await CaptureRig.with(table: """
            id int PRIMARY KEY, name text, price numeric(10,2), tags text[], doc jsonb, data bytea,
            at timestamptz, big text, flag boolean, ratio double precision, small smallint
            """) { rig in try await Self.crashBeforeAdvance(rig) }
    }

    static func crashBeforeAdvance(_ rig: CaptureRig) async throws {
        let t = rig.qualifiedTable

        // The crash: the first append reaches the log, then the stream "fails" before the source
        // could advance its slot — the supervisor stops, as it must when its stream fails.
        let failing = FailAfterAppendStream(inner: StreamLogCaptureStream(log: rig.log))
        failing.failAfterNextAppend.store(true, ordering: .relaxed)
        let first = try rig.supervisor(stream: failing)
        let firstRun = Task { try await first.run() }
        // Changes count from the slot's creation (what came before is the snapshot's job).
        try await rig.waitForARound(first)

        try await rig.execute("""
            INSERT INTO \(t) VALUES (1, 'one', 12.50, '{a,b}', '{"k": [1, true, null]}', '\\x0102', '2026-11-28 10:00:00+00',
                (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 2000) i), true, 0.25, 7)
            """)
        let firstOutcome = await firstRun.result
        #expect(throws: SourceSupervisorError.self) { try firstOutcome.get() }
        #expect(rig.log.endOffset == 1, "the append before the crash is durable")

        // More changes while the source is down: an update that leaves the TOASTed column alone,
        // a rolled-back transaction, an insert and a delete, a key change, one larger transaction.
        try await rig.execute("UPDATE \(t) SET name = 'uno' WHERE id = 1")
        try await rig.execute("BEGIN; INSERT INTO \(t) (id, name) VALUES (3, 'never'); ROLLBACK;")
        try await rig.execute("INSERT INTO \(t) (id, name) VALUES (2, 'two')")
        try await rig.execute("DELETE FROM \(t) WHERE id = 2")
        try await rig.execute("UPDATE \(t) SET id = 10 WHERE id = 1")
        try await rig.execute("INSERT INTO \(t) (id, name) SELECT i, 'n' || i FROM generate_series(100, 349) i")

        // Restart on the healthy stream: it finds its position in the stream's tail and skips
        // the change the slot sends again.
        let second = try rig.supervisor(stream: StreamLogCaptureStream(log: rig.log))
        let secondRun = Task { try await second.run() }
        defer { secondRun.cancel() }
        // 1 + update + insert + delete + (delete, upsert) of the key change + 250.
        let expected = 1 + 1 + 1 + 1 + 2 + 250
        try await rig.waitForEntries(expected)
        // The round that appended them counts what it skipped when it ends.
        let status = try await rig.waitForStatus(second, "the round's end") { $0.appendedEntries == UInt64(expected - 1) }
        #expect(status.skippedChanges >= 1, "the first insert came again from the slot and was skipped")
        #expect(status.state == .active)

        let entries = try rig.entries()
        #expect(entries.count == expected)
        // Nothing twice: every (lsn, change) once, in increasing order.
        let source = try rig.source()
        let positions = entries.map { source.position(of: $0) }
        #expect(positions.allSatisfy { $0 != nil })
        let ordered = positions.compactMap { $0 }
        #expect(zip(ordered, ordered.dropFirst()).allSatisfy { pair in
            pair.0 < pair.1 || (pair.0 == pair.1)  // a key change's two entries share a position
        })
        #expect(Set(ordered).count == expected - 1, "only the key change's two entries share a position")

        let insert = entries[0]
        #expect(insert.op == .insert && insert.key == "1" && insert.object == "\(rig.schema).items" && insert.org == rig.sourceName)
        #expect(insert.fields["name"] == .string("one"))
        #expect(insert.fields["price"] == .string("12.50"))
        #expect(insert.fields["tags"] == .string("{a,b}"))
        #expect(insert.fields["doc"] == .object(["k": .array([.int(1), .bool(true), .null])]))
        #expect(insert.fields["data"] == .string("\\x0102"))
        #expect(insert.fields["at"] == .string("2026-11-28 10:00:00+00"))
        #expect(insert.fields["flag"] == .bool(true))
        #expect(insert.fields["ratio"] == .double(0.25))
        #expect(insert.fields["small"] == .int(7))
        if case .string(let big)? = insert.fields["big"] { #expect(big.count == 64_000) } else { Issue.record("no big field") }
        #expect(insert.ts.hasSuffix("Z") && insert.ts.count == "2026-11-28T10:00:00.000000Z".count)

        let update = entries[1]
        #expect(update.op == .upsert && update.key == "1" && update.fields["name"] == .string("uno"))
        #expect(update.fields["big"] == nil, "an unchanged TOASTed value is left out, not nulled")
        #expect(entries[2].op == .insert && entries[2].key == "2")
        #expect(entries[3].op == .delete && entries[3].key == "2" && entries[3].fields.isEmpty)
        #expect(entries[4].op == .delete && entries[4].key == "1")
        #expect(entries[5].op == .upsert && entries[5].key == "10")
        #expect(entries[6...].map(\.key) == (100...349).map(String.init))
        #expect(!entries.contains { $0.key == "3" }, "a rolled-back transaction never appears")
        // One transaction, one LSN and xid; changes numbered from 0.
        let bulk = entries[6...]
        #expect(Set(bulk.map { $0.extra["lsn"] }).count == 1)
        #expect(bulk.map { $0.extra["change"] } == (0..<250).map { .int(Int64($0)) })

        // The slot was advanced past everything: a third supervisor appends nothing and skips nothing.
        secondRun.cancel()
        _ = await secondRun.result
        let third = try rig.supervisor(stream: StreamLogCaptureStream(log: rig.log))
        let thirdRun = Task { try await third.run() }
        defer { thirdRun.cancel() }
        // A column added on the source flows through: the next change describes the table anew.
        try await rig.execute("ALTER TABLE \(t) ADD COLUMN added text; INSERT INTO \(t) (id, name, added) VALUES (500, 'last', 'new column')")
        try await rig.waitForEntries(expected + 1)
        let last = try rig.entries()
        #expect(last.count == expected + 1 && last.last?.key == "500")
        #expect(last.last?.fields["added"] == .string("new column"))
        let thirdStatus = await third.status()
        #expect(thirdStatus.skippedChanges == 0, "the slot had let go of everything the stream held")
    }

    @Test func aTableWithoutAKeySuspendsTheSourceNamingItAndReplicaIdentityFullKeysByEveryColumn() async throws {
        try await CaptureRig.with(table: "a int, b text") { rig in try await Self.keyless(rig) }
    }

    static func keyless(_ rig: CaptureRig) async throws {
        let supervisor = try rig.supervisor(stream: StreamLogCaptureStream(log: rig.log))
        let run = Task { try await supervisor.run() }
        defer { run.cancel() }
        let suspended = try await rig.waitForStatus(supervisor, "suspended") { $0.state == .suspended }
        #expect(suspended.lastError?.contains("\(rig.schema).items has no primary key") == true, "\(suspended.lastError ?? "")")
        #expect(suspended.lastError?.contains("REPLICA IDENTITY FULL") == true)

        // Fixed by the operator: the probes pass, the source resumes on its own and captures.
        try await rig.execute("ALTER TABLE \(rig.qualifiedTable) REPLICA IDENTITY FULL")
        try await rig.waitForStatus(supervisor, "resumed and capturing (its first round creates the slot)", ms: CaptureRig.firstRoundMs) { $0.state == .active && $0.rounds > 0 }
        try await rig.execute("INSERT INTO \(rig.qualifiedTable) VALUES (1, 'x')")
        try await rig.execute("UPDATE \(rig.qualifiedTable) SET b = 'y' WHERE a = 1")
        try await rig.waitForEntries(3, ms: 20_000)
        let entries = try rig.entries()
        #expect(entries.map(\.op) == [.insert, .delete, .upsert])
        #expect(entries.map(\.key) == [#"["1","x"]"#, #"["1","x"]"#, #"["1","y"]"#])
    }

    /// A text primary key may be empty, or look like the JSON array several key columns make:
    /// each row gets a valid key of its own, in the snapshot and in changes (an empty one once
    /// made an entry every link refused; found by the `pgoutput` fuzz target).
    @Test func aKeyThatIsEmptyOrStartsWithABracketIsCapturedAsAValidKeyOfItsOwn() async throws {
        try await CaptureRig.with(table: "name text PRIMARY KEY, n int") { rig in
            try await rig.execute("INSERT INTO \(rig.qualifiedTable) VALUES ('', 1), ('[x', 2)")  // the initial snapshot's
            let supervisor = try rig.supervisor(stream: StreamLogCaptureStream(log: rig.log))
            let run = Task { try await supervisor.run() }
            defer { run.cancel() }
            try await rig.waitForEntries(2, ms: CaptureRig.firstRoundMs)  // the first round makes the slot
            try await rig.execute("UPDATE \(rig.qualifiedTable) SET n = 3 WHERE name = ''")
            try await rig.execute("INSERT INTO \(rig.qualifiedTable) VALUES ('x', 4)")
            try await rig.execute("DELETE FROM \(rig.qualifiedTable) WHERE name = '[x'")
            try await rig.waitForEntries(5, ms: 20_000)
            let entries = try rig.entries()  // each parsed as an entry: an empty key would throw here
            #expect(entries.map(\.key) == [#"[""]"#, #"["[x"]"#, #"[""]"#, "x", #"["[x"]"#])
            #expect(entries.map(\.op) == [.upsert, .upsert, .upsert, .insert, .delete])
            #expect(entries[0].fields["name"] == .string("") && entries[2].fields["n"] == .int(3))
        }
    }

    @Test func anInitialSnapshotCutShortResumesByKeyAndTheStreamConvergesToTheSource() async throws {
        try await CaptureRig.with(table: "id int PRIMARY KEY, name text, qty int") { rig in try await Self.snapshot(rig) }
    }

    static func snapshot(_ rig: CaptureRig) async throws {
        let t = rig.qualifiedTable
        let lines = "\(rig.schema).lines"
        try await rig.execute("""
            CREATE TABLE \(lines) (k1 text, k2 int, note text, PRIMARY KEY (k1, k2));
            INSERT INTO \(t) SELECT i, 'n' || i, i FROM generate_series(1, 7500) i;
            INSERT INTO \(lines) SELECT 'a' || (i % 7), i, 'x' FROM generate_series(1, 300) i
            """)
        // The first append of the snapshot (5 000 rows of `items` — the source's rows per append —
        // in key order) lands, then the stream fails: the snapshot is cut short.
        let failing = FailAfterAppendStream(inner: StreamLogCaptureStream(log: rig.log))
        failing.failAfterNextAppend.store(true, ordering: .relaxed)
        let first = try rig.supervisor(stream: failing, tables: [t, lines])
        let outcome = await Task { try await first.run() }.result
        #expect(throws: SourceSupervisorError.self) { try outcome.get() }
        #expect(rig.log.endOffset == 5_000)
        #expect(try rig.entries().map(\.key) == (1...5_000).map(String.init), "rows in key order (the key's, not its text's)")

        // Changes while it is down, on both sides of the cut: they are in the slot, and some of
        // them in the next snapshot too.
        try await rig.execute("""
            UPDATE \(t) SET qty = -1 WHERE id IN (5, 6000);
            DELETE FROM \(t) WHERE id IN (6, 6100);
            INSERT INTO \(t) VALUES (9000, 'new', 1);
            UPDATE \(lines) SET note = 'y' WHERE k2 = 10
            """)
        let second = try rig.supervisor(stream: StreamLogCaptureStream(log: rig.log), tables: [t, lines])
        let run = Task { try await second.run() }
        defer { run.cancel() }
        try await rig.waitForARound(second)  // the resumed snapshot is done
        try await rig.execute("INSERT INTO \(t) VALUES (9001, 'after', 2)")
        // 2 500 - 1 deleted before the resumed part was read + 1 new = 2 500 more rows of items,
        // 300 of lines, then the changes from the slot (4 statements, 6 rows; 1 insert after).
        try await rig.waitForEntries(5_000 + 2_500 + 300 + 6 + 1, ms: 20_000)
        let entries = try rig.entries()
        let snapshotRows = entries.filter { $0.extra["snapshot"] == .bool(true) }
        #expect(snapshotRows.count == 7_800)
        #expect(Set(snapshotRows.map { "\($0.object)/\($0.key)" }).count == snapshotRows.count, "no row twice in the snapshot")
        #expect(snapshotRows.allSatisfy { $0.op == .upsert })
        #expect(snapshotRows.first { $0.object.hasSuffix("lines") }?.key == #"["a0","7"]"#, "rows in key order")
        // Replayed in order, the stream holds what the source holds.
        var model: [String: [String: JSONValue]] = [:]
        for entry in entries {
            let id = "\(entry.object)/\(entry.key)"
            switch entry.op {
            case .delete: model[id] = nil
            case .insert: model[id] = entry.fields
            case .upsert: model[id, default: [:]].merge(entry.fields) { $1 }
            }
        }
        var source: [String: [String: JSONValue]] = [:]
        for try await (id, name, qty) in try await rig.db.query("SELECT id, name, qty FROM \(unescaped: t)", logger: Logger(label: "test"))
            .decode((Int64, String, Int64).self) {
            source["\(rig.schema).items/\(id)"] = ["id": .int(id), "name": .string(name), "qty": .int(qty)]
        }
        for try await (k1, k2, note) in try await rig.db.query("SELECT k1, k2, note FROM \(unescaped: lines)", logger: Logger(label: "test"))
            .decode((String, Int64, String).self) {
            source["\(rig.schema).lines/[\"\(k1)\",\"\(k2)\"]"] = ["k1": .string(k1), "k2": .int(k2), "note": .string(note)]
        }
        #expect(model.count == source.count)
        #expect(model == source, "differ: \(Set(model.keys).symmetricDifference(source.keys).prefix(5))")
        #expect(!entries.contains { $0.op == .insert && $0.key == "9000" }, "an insert the snapshot may hold is an upsert")
        #expect(entries.last?.key == "9001" && entries.last?.op == .insert, "committed after the snapshot: a plain insert")
    }

    @Test func aLinksTransactionsCarryItsOriginAndACaptureOfTheSameDatabaseSkipsThem() async throws {
        try await CaptureRig.with(table: "id int PRIMARY KEY") { rig in try await Self.noEcho(rig) }
    }

    /// B is the target of a link (from stream `ab`) and the source of a capture (into the rig's
    /// stream): what the link applies must not come back; what someone else writes in B must.
    static func noEcho(_ rig: CaptureRig) async throws {
        let ab = try StreamLog.open(dataDirectory: rig.directory, name: "ab", logger: testLogger("orgsync.log"))
        let linkName = "ab_" + rig.sourceName
        var settings = LinkTestPostgres.adapterSettings(rig.server, schema: rig.schema)
        settings["primary_key"] = "key"
        settings["replication_origin"] = "true"
        let adapter = try PostgresAdapterFactory().makeAdapter(AdapterConfiguration(
            linkName: linkName, streamName: "ab", settings: settings, dataDirectory: rig.directory))
        let link = try LinkSupervisor(
            name: linkName, source: StreamLogLinkSource(log: ab), adapter: adapter, cursorStore: InMemoryCursorStore(),
            configuration: fastLinkConfiguration(), logger: testLogger("orgsync.link"), randomSeed: 5)
        let linkRun = Task { try await link.run() }
        func entry(_ key: String) -> [UInt8] {
            Array(#"{"org":"a","object":"applied","op":"upsert","key":"\#(key)","ts":"t","fields":{"name":"from-a"}}"#.utf8)
        }
        // The link makes its table; then the capture of that table starts (no snapshot).
        _ = try await ab.append([entry("k0")])
        try await waitForStatus(link, "applied k0") { $0.cursor == 1 }
        let applied = "\(rig.schema).applied"
        let source = try rig.supervisor(stream: StreamLogCaptureStream(log: rig.log), tables: [applied], extra: ["snapshot": "never"])
        let sourceRun = Task { try await source.run() }
        try await rig.waitForARound(source)

        _ = try await ab.append([entry("k1"), entry("k2")])
        _ = try await ab.append([entry("k3")])
        try await waitForStatus(link, "applied k1...k3") { $0.cursor == 4 }
        try await rig.execute("INSERT INTO \(applied) (key, org, ts, name) VALUES ('direct', 'b', 't', 'written in b')")
        try await rig.waitForEntries(1)
        try await rig.waitForStatus(source, "the link's changes read and skipped") { $0.skippedChanges >= 3 }
        let captured = try rig.entries()
        #expect(captured.map(\.key) == ["direct"], "only B's own write comes back")
        #expect(captured.first?.fields["name"] == .string("written in b"))
        let origin = "orgsync_ab_" + rig.sourceName
        #expect(try await rig.db.scalar("SELECT count(*) FROM pg_replication_origin WHERE roname = \(origin)") == 1)

        sourceRun.cancel()
        linkRun.cancel()
        _ = await (sourceRun.result, linkRun.result)
        await ab.close()
        try? await rig.execute("SELECT pg_replication_origin_drop('\(origin)')")
    }

    @Test func aTransactionLargerThanARoundArrivesWholeOnceAndInOrder() async throws {
        try await CaptureRig.with(table: "id int PRIMARY KEY, name text") { rig in
            // A round reads 1 000 changes at most: the 100 000-row transaction is read whole
            // anyway (decoding returns whole transactions), streamed row by row, appended in chunks.
            let supervisor = try rig.supervisor(
                stream: StreamLogCaptureStream(log: rig.log), extra: ["snapshot": "never", "round_changes_max": "1000"])
            let run = Task { try await supervisor.run() }
            defer { run.cancel() }
            try await rig.waitForARound(supervisor)
            try await rig.execute("INSERT INTO \(rig.qualifiedTable) SELECT i, 'n' || i FROM generate_series(1, 100000) i")
            try await rig.waitForEntries(100_000, ms: 120_000)
            let entries = try rig.entries()
            #expect(entries.count == 100_000)
            #expect(entries.map(\.key) == (1...100_000).map(String.init))
            #expect(Set(entries.map { $0.extra["lsn"] }).count == 1, "one transaction, one commit LSN")
            #expect(entries.map { $0.extra["change"] } == (0..<100_000).map { .int(Int64($0)) })
            let status = try await rig.waitForStatus(supervisor, "the round's end") { $0.appendedEntries == 100_000 }
            #expect(status.transactions == 1)
        }
    }

    static let typedColumns = """
        amount numeric(30,3), price numeric, at timestamptz, day date, data bytea, tags int[], names text[], doc jsonb,
        flag boolean, ratio double precision, big text, note varchar(20), n smallint, l bigint
        """

    @Test func everyCommonTypeArrivesInATypedTargetTableEqualBothWays() async throws {
        try await CaptureRig.with(table: "id int PRIMARY KEY, " + Self.typedColumns) { rig in try await Self.typedRoundTrip(rig) }
    }

    /// A → stream → B, B's tables made ahead with A's column types: after snapshot rows,
    /// inserts, updates (one leaving a TOASTed value alone), a key-less delete and NULLs, B holds
    /// exactly A's rows (EXCEPT both ways), through single statements (typed columns other than
    /// numeric) and set statements (a numeric-and-text table) alike. The source's columns named
    /// `key`, `org` and `ts` round-trip: B's link names its own columns `orgsync_*`.
    static func typedRoundTrip(_ rig: CaptureRig) async throws {
        let items = rig.qualifiedTable
        let amounts = "\(rig.schema).amounts"
        let target = rig.schema + "_b"
        try await rig.execute("""
            CREATE TABLE \(amounts) (id int PRIMARY KEY, amount numeric(30,3), label text, key text, org int, ts text);
            CREATE SCHEMA \(target);
            CREATE TABLE \(target)."\(items)" (orgsync_key text PRIMARY KEY, orgsync_org text NOT NULL, orgsync_ts text NOT NULL, id int, \(typedColumns));
            CREATE TABLE \(target)."\(amounts)" (orgsync_key text PRIMARY KEY, orgsync_org text NOT NULL, orgsync_ts text NOT NULL, id int,
                amount numeric(30,3), label text, key text, org int, ts text);
            INSERT INTO \(items) VALUES (1, 12345678901234567.125, 0.1, '2026-11-28 10:00:00.123456+00', '2026-02-28', '\\x00ff10',
                '{1,NULL,3}', '{"a b","c,d","\\"q\\""}', '{"k": [1.5, null, {"x": "y"}]}', true, 1e-300, 'x', 'v', -32768, 9223372036854775807);
            INSERT INTO \(items) (id) VALUES (2);
            INSERT INTO \(amounts) SELECT i, i * 1.001, 'l' || i, 'k' || i, i * 2, 'ts ' || i FROM generate_series(1, 40) i
            """)
        var settings = LinkTestPostgres.adapterSettings(rig.server, schema: target)
        settings["primary_key"] = "key"
        settings.merge(["key_column": "orgsync_key", "org_column": "orgsync_org", "ts_column": "orgsync_ts"]) { $1 }
        let linkName = "typed_" + rig.sourceName
        let adapter = try PostgresAdapterFactory().makeAdapter(AdapterConfiguration(
            linkName: linkName, streamName: "captured", settings: settings, dataDirectory: rig.directory))
        let link = try LinkSupervisor(
            name: linkName, source: StreamLogLinkSource(log: rig.log), adapter: adapter, cursorStore: InMemoryCursorStore(),
            configuration: fastLinkConfiguration(), logger: testLogger("orgsync.link"), randomSeed: 9)
        let linkRun = Task { try await link.run() }
        let source = try rig.supervisor(stream: StreamLogCaptureStream(log: rig.log), tables: [items, amounts])
        let sourceRun = Task { try await source.run() }
        try await rig.waitForARound(source)  // the snapshot is in
        try await rig.execute("""
            INSERT INTO \(items) VALUES (3, -0.5, 1e20, '1999-12-31 23:59:59-05', '0001-01-01', '\\x', '{}', '{}', '[]', false,
                -0.0, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 2000) i), '', 0, -1);
            UPDATE \(items) SET note = 'changed', amount = amount + 1 WHERE id = 3;
            UPDATE \(items) SET tags = '{7}', doc = '{"z": null}', at = NULL WHERE id = 1;
            DELETE FROM \(items) WHERE id = 2;
            INSERT INTO \(amounts) SELECT i, i / 7.0, NULL FROM generate_series(41, 80) i;
            UPDATE \(amounts) SET amount = amount * 3 WHERE id % 2 = 0;
            UPDATE \(amounts) SET key = 'changed', org = -1, ts = NULL WHERE id % 5 = 0
            """)
        let columns = "amount, price, at, day, data, tags, names, doc, flag, ratio, big, note, n, l"
        let amountColumns = "amount, label, key, org, ts"
        let difference = """
            SELECT (SELECT count(*) FROM (SELECT id::text, \(columns) FROM \(items) EXCEPT SELECT orgsync_key, \(columns) FROM \(target)."\(items)") AS a)
                 + (SELECT count(*) FROM (SELECT orgsync_key, \(columns) FROM \(target)."\(items)" EXCEPT SELECT id::text, \(columns) FROM \(items)) AS b)
                 + (SELECT count(*) FROM (SELECT id::text, \(amountColumns) FROM \(amounts) EXCEPT SELECT orgsync_key, \(amountColumns) FROM \(target)."\(amounts)") AS c)
                 + (SELECT count(*) FROM (SELECT orgsync_key, \(amountColumns) FROM \(target)."\(amounts)" EXCEPT SELECT id::text, \(amountColumns) FROM \(amounts)) AS d)
            """
        let db = rig.db
        do {
            try await withTimeout(ms: 20_000, "the target to equal the source") {
                while try await db.scalar(PostgresQuery(unsafeSQL: difference)) != 0 { try await Task.sleep(for: .milliseconds(20)) }
            }
        } catch let error as PSQLError {
            throw CaptureRig.StatementFailed(statement: difference, server: error.serverInfo?[.message] ?? "\(error.code)")
        }
        #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(target).\"\(items)\"")) == 2)
        #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(target).\"\(amounts)\"")) == 80)
        let status = await link.status()
        #expect(status.rejectedCount == 0, "no entry was refused by a typed column: \(link.deadLetters.page(beforeOffset: nil, status: nil, limit: 3).map(\.error))")
        sourceRun.cancel()
        linkRun.cancel()
        _ = await (sourceRun.result, linkRun.result)
        try? await rig.execute("DROP SCHEMA \(target) CASCADE")
    }
}

/// A capture stream whose append, once armed, succeeds and then fails: the crash between an
/// append made durable and the slot's advance, at the stream's protocol.
final class FailAfterAppendStream: CaptureStream {
    let inner: any CaptureStream
    let failAfterNextAppend = Atomic<Bool>(false)

    init(inner: any CaptureStream) { self.inner = inner }

    struct PowerCut: Error, CustomStringConvertible { var description: String { "cut after a durable append" } }

    var streamName: String { inner.streamName }
    func append(_ entries: [[UInt8]]) async throws -> AppendResult {
        let result = try await inner.append(entries)
        if failAfterNextAppend.exchange(false, ordering: .relaxed) { throw PowerCut() }
        return result
    }
    func bounds() async throws -> (start: Offset, end: Offset) { try await inner.bounds() }
    func read(from offset: Offset, maxCount: Int) async throws -> [Entry] { try await inner.read(from: offset, maxCount: maxCount) }
    func loadHint(source: String) async throws -> Offset? { try await inner.loadHint(source: source) }
    func storeHint(source: String, offset: Offset) async throws { try await inner.storeHint(source: source, offset: offset) }
    func lastAppend(source: String) async throws -> [Entry]? { try await inner.lastAppend(source: source) }
}

/// A table of its own in a schema of its own on the shared server, a slot and publication of
/// their own, a segment log in a temp dir; `cleanUp` drops the slot (it would hold WAL).
final class CaptureRig: Sendable {
    let server: TestPostgresServer.Connection
    let db: PostgresConnection
    let schema: String
    let sourceName: String
    let directory: String
    let log: StreamLog

    var qualifiedTable: String { "\(schema).items" }

    init(table columns: String) async throws {
        server = try TestPostgresServer.connection()
        let suffix = UInt32.random(in: 0...UInt32.max)
        schema = "cap_\(suffix)"
        sourceName = "cap_\(suffix)"
        directory = try makeTemporaryDirectory("orgsync-capture")
        log = try StreamLog.open(dataDirectory: directory, name: "captured", logger: testLogger("orgsync.log"))
        db = try await TestPostgresServer.connect(server)
        do {
            try await execute("CREATE SCHEMA \(schema); CREATE TABLE \(schema).items (\(columns))")
        } catch {
            try? await db.close()
            throw error
        }
    }

    /// Runs statements separated by `;` one by one on the rig's connection (none of the tests'
    /// statements has a `;` inside a literal).
    func execute(_ sql: String) async throws {
        for statement in sql.split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
            do {
                _ = try await db.query(PostgresQuery(unsafeSQL: String(statement)), logger: Logger(label: "test")).collect()
            } catch let error as PSQLError {
                throw StatementFailed(statement: String(statement.prefix(200)), server: error.serverInfo?[.message] ?? "\(error.code)")
            }
        }
    }

    func supervisor(stream: any CaptureStream, tables: [String]? = nil, extra: [String: String] = [:]) throws -> SourceSupervisor {
        try SourceSupervisor(
            name: sourceName, source: try source(tables: tables, extra: extra), stream: stream, configuration: fastLinkConfiguration(),
            logger: testLogger("orgsync.source"), randomSeed: 11)
    }

    /// The rig's `postgres` source (not connected until used).
    func source(tables: [String]? = nil, extra: [String: String] = [:]) throws -> any ChangeSource {
        var settings = [
            "host": server.host, "port": String(server.port), "user": server.user, "database": server.database,
            "tables": (tables ?? [qualifiedTable]).joined(separator: ","), "poll_ms": "20", "connect_timeout_ms": "2000",
        ].merging(extra) { $1 }
        if let password = server.password { settings["password"] = password }
        return try PostgresSourceFactory().makeSource(AdapterConfiguration(
            linkName: sourceName, streamName: "captured", settings: settings, dataDirectory: directory))
    }

    /// How long a source's first round may take, ms: it creates the slot, and PostgreSQL creates
    /// a logical slot only once every transaction open on the server when it was asked has ended.
    /// The suites beside this one hold transactions on the same server for seconds (a table
    /// locked 4 s on purpose, batches of thousands of rows): in CI's parallel pass, creating a
    /// slot took 9 s of a 10 s wait.
    static let firstRoundMs: UInt64 = 60_000

    /// Waits until `supervisor` has finished a capture round: its slot exists.
    func waitForARound(_ supervisor: SourceSupervisor) async throws {
        try await waitForStatus(supervisor, "a capture round", ms: Self.firstRoundMs) { $0.rounds > 0 }
    }

    /// Asks for the status (every 5 ms) until `predicate` holds, within `ms`.
    @discardableResult
    func waitForStatus(
        _ supervisor: SourceSupervisor, _ what: String, ms: UInt64 = 10_000, where predicate: @escaping @Sendable (SourceStatus) -> Bool
    ) async throws -> SourceStatus {
        try await waitForReading("source \(supervisor.name): \(what)", ms: ms, read: { await supervisor.status() }, where: predicate)
    }

    func waitForEntries(_ count: Int, ms: UInt64 = 10_000) async throws {
        let log = log
        try await withTimeout(ms: ms, "\(count) captured entries (have \(log.endOffset))") {
            try await log.waitForEntries(after: UInt64(count - 1))
        }
    }

    /// Every entry of the rig's stream, in order (read page by page: a read stops at 4 MiB).
    func entries() throws -> [Entry] {
        var entries: [Entry] = []
        while UInt64(entries.count) < log.endOffset {
            let page = try log.read(from: UInt64(entries.count), maxEntries: 10_000)
            guard !page.isEmpty else { break }
            entries += try page.map { try Entry.parse($0.payload, offset: Offset($0.offset)) }
        }
        return entries
    }

    struct StatementFailed: Error, CustomStringConvertible {
        var statement: String
        var server: String
        var description: String { "\(server) in: \(statement)" }
    }

    /// Runs `body` on a new rig, then drops what it made, whether `body` threw or not.
    static func with(table columns: String, _ body: (CaptureRig) async throws -> Void) async throws {
        let rig = try await CaptureRig(table: columns)
        let outcome = await Result(catching: { try await body(rig) })
        await rig.cleanUp()
        try outcome.get()
    }

    func cleanUp() async {
        let slot = "orgsync_" + sourceName
        // The supervisors' connections may still be closing: a slot in use cannot be dropped yet.
        for _ in 0..<50 {
            try? await execute("SELECT pg_drop_replication_slot('\(slot)') FROM pg_replication_slots WHERE slot_name = '\(slot)'")
            if (try? await db.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = \(slot)")) == 0 { break }
            try? await Task.sleep(for: .milliseconds(100))
        }
        try? await execute("DROP PUBLICATION IF EXISTS \(slot); DROP SCHEMA \(schema) CASCADE")
        try? await db.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
