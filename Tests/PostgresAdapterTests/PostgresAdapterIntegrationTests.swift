import Foundation
import Logging
import OrgSyncPluginAPI
@testable import PostgresAdapter
import OrgSyncTestPostgres
import PostgresNIO
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// Against the real server of `.ci/postgres.sh` (the stop test starts a cluster of its own).
/// Serialized to keep the load on a 2-core CI machine low.
@Suite(.serialized, .enabled(if: TestPostgres.shouldRun, TestPostgres.skipMessage))
struct PostgresAdapterIntegrationTests {
    /// An open adapter and a test connection on a fresh schema, dropped afterwards.
    func withTarget(
        _ name: String, queryTimeoutMs: Int = 30_000,
        _ body: (PostgresAdapter, PostgresConnection, String) async throws -> Void
    ) async throws {
        let schema = TestPostgres.uniqueSchema(name)
        let settings = try TestPostgres.settings(schema: schema, queryTimeoutMs: queryTimeoutMs)
        let adapter = PostgresAdapter(linkName: "link-\(name)", settings: settings)
        let connection = try await TestPostgres.connect(settings)
        do {
            try await adapter.open()
            try await body(adapter, connection, schema)
        } catch {
            await adapter.close()
            await connection.dropSchema(schema)
            try? await connection.close()
            throw error
        }
        await adapter.close()
        await connection.dropSchema(schema)
        try await connection.close()
    }

    @Test func insertUpsertDeleteMapToRowsAndTypedColumns() async throws {
        try await withTarget("mapping") { adapter, db, schema in
            try await adapter.apply(batch([
                entry(0, .insert, "k1", ["Name": "Ada", "Employees": 12, "Revenue": 2.5, "Active": true, "Tags": .array(["a", 1])]),
                entry(1, .upsert, "k1", ["Name": "Grace"]),
                entry(2, .upsert, "k2", ["Name": "Temp", "Nothing": .null]),
                entry(3, .delete, "k2"),
                entry(4, .insert, "k3", ["Name": "Linus", "Revenue": 7]),
                entry(5, .delete, "never-there", object: "NoSuchObject"),
            ]))
            #expect(try await db.count(schema: schema, table: "Contact") == 2)
            let rows = try await db.query(
                PostgresQuery(unsafeSQL: """
                    SELECT "key", "org", "Name", "Employees", "Revenue", "Active", "Tags"::text
                    FROM "\(schema)"."Contact" ORDER BY "key"
                    """), logger: Logger(label: "test"))
            var seen: [String] = []
            for try await (key, org, name, employees, revenue, active, tags)
                in rows.decode((String, String, String, Int64?, Double?, Bool?, String?).self)
            {
                seen.append("\(key)|\(org)|\(name)|\(employees.map(String.init) ?? "-")|\(revenue.map { "\($0)" } ?? "-")|\(active.map(String.init) ?? "-")|\(tags ?? "-")")
            }
            // The upsert changed Name only; the int into a DOUBLE PRECISION column was widened.
            #expect(seen == ["k1|acme|Grace|12|2.5|true|[\"a\", 1]", "k3|acme|Linus|-|7.0|-|-"])
            var types: [String: String] = [:]
            let columns = try await db.query(
                PostgresQuery(unsafeSQL: """
                    SELECT column_name::text, data_type::text FROM information_schema.columns
                    WHERE table_schema = '\(schema)' AND table_name = 'Contact'
                    """), logger: Logger(label: "test"))
            for try await (name, type) in columns.decode((String, String).self) { types[name] = type }
            #expect(types == [
                "key": "text", "org": "text", "ts": "text", "Name": "text", "Employees": "bigint",
                "Revenue": "double precision", "Active": "boolean", "Tags": "jsonb",
            ])
            #expect(types["Nothing"] == nil, "a null value creates no column")
            #expect(try await db.scalar(PostgresQuery(unsafeSQL: "SELECT count(*) FROM pg_tables WHERE schemaname = '\(schema)' AND tablename = 'NoSuchObject'")) == 0)
            #expect(try await adapter.appliedPosition()?.offset == 5)
        }
    }

    @Test func entriesApplyInOffsetOrderWithinAndAcrossBatches() async throws {
        try await withTarget("order") { adapter, db, schema in
            try await adapter.apply(batch((0..<50).map { entry($0, .upsert, "hot", ["Seq": .int(Int64($0))]) }))
            try await adapter.apply(batch([entry(50, .delete, "hot"), entry(51, .insert, "hot", ["Seq": 51])]))
            try await adapter.apply(batch((52..<60).map { entry($0, .upsert, "hot", ["Seq": .int(Int64($0))]) }))
            #expect(try await db.scalar("SELECT \"Seq\" FROM \"\(unescaped: schema)\".\"Contact\" WHERE \"key\" = 'hot'") == 59)
            #expect(try await db.count(schema: schema, table: "Contact") == 1)
            #expect(try await adapter.appliedPosition()?.offset == 59)
        }
    }

    /// A batch finds its rows by key even where the planner would rather scan the table: 10 000
    /// rows, analyzed, is a size at which the default cost model chose a sequential scan and a
    /// hash join for the set statement's UPDATE and DELETE (batches then slowed down as tables
    /// grew). The server's own counters for the table say how its rows were found.
    @Test func setStatementsFindRowsByKeyNotByScanningTheTable() async throws {
        try await withTarget("byKey") { adapter, db, schema in
            let rowCount: UInt64 = 10_000
            var offset: UInt64 = 0
            while offset < rowCount {
                let end = min(rowCount, offset + 500)
                try await adapter.apply(batch((offset..<end).map {
                    entry($0, .insert, "k\($0)", ["Email": .string("someone\($0)@example.com"), "Title": .string("Title of \($0)")])
                }))
                offset = end
            }
            // The adapter's session reports its counters when it is idle, some seconds later at
            // most. Creating the table counts one scan (its key's index is built by reading it).
            let before = try await db.tableCounters(schema: schema, table: "Contact") { $0.inserted >= Int64(rowCount) }
            #expect(before.inserted >= Int64(rowCount), "the server reported the inserts within the bound")
            _ = try await db.query(PostgresQuery(unsafeSQL: "ANALYZE \"\(schema)\".\"Contact\""), logger: Logger(label: "test"))

            let upserts = (0..<UInt64(300)).map { entry(rowCount + $0, .upsert, "k\($0 * 7)", ["Title": .string("changed")]) }
            let deletes = (0..<UInt64(20)).map { entry(rowCount + 300 + $0, .delete, "k\(5_000 + $0)") }
            try await adapter.apply(batch(upserts + deletes))
            let after = try await db.tableCounters(schema: schema, table: "Contact") { $0.updated >= 300 && $0.deleted >= 20 }
            #expect(after.updated >= 300 && after.deleted >= 20, "the server reported the updates and deletes within the bound")
            #expect(after.sequentialScans == before.sequentialScans, "the batch scanned the table \(after.sequentialScans - before.sequentialScans) times")
            // Read after the counters: these count queries scan the table themselves.
            #expect(try await db.scalar("SELECT count(*) FROM \"\(unescaped: schema)\".\"Contact\" WHERE \"Title\" = 'changed'") == 300)
            #expect(try await db.count(schema: schema, table: "Contact") == Int64(rowCount) - 20)
        }
    }

    /// A set statement runs prepared with one plan kept for every run, made when its table may
    /// still be small. Made for 20 rows, the server's plan read the table's whole index and
    /// hashed it; the same plan then read every row of the grown table for each batch. The
    /// adapter's session leaves the planner only joins that find each record by its key.
    @Test func aPreparedSetStatementFindsRowsByKeyAfterItsTableGrew() async throws {
        try await withTarget("grown") { adapter, db, schema in
            func upserts(_ offsets: Range<UInt64>, keys: Range<UInt64>) -> [Entry] {
                zip(offsets, keys).map { entry($0, .upsert, "k\($1)", ["Title": .string("t\($0)")]) }
            }
            try await adapter.apply(batch(upserts(0..<20, keys: 0..<20)))
            try await adapter.apply(batch(upserts(20..<40, keys: 0..<20)))
            #expect(await adapter.statementCounts.preparedRuns == 1, "the second batch of the shape ran prepared")
            // Grown behind the adapter's back: no DDL, no ANALYZE, nothing that makes the server plan again.
            _ = try await db.query(
                PostgresQuery(unsafeSQL: """
                    INSERT INTO "\(schema)"."Contact" ("key", "org", "ts", "Title")
                    SELECT 'g' || n, 'acme', 't', 'grown' FROM generate_series(1, 20000) AS n
                    """), logger: Logger(label: "test"))
            // Absolute counts: the adapter's session reports its counters some seconds late at most,
            // so the first two batches' must all be in before the third's are told apart.
            let before = try await db.tableCounters(schema: schema, table: "Contact") { $0.inserted >= 20_020 && $0.updated >= 20 }
            #expect(before.inserted >= 20_020 && before.updated >= 20, "the server reported the inserts and updates within the bound")
            try await adapter.apply(batch(upserts(40..<60, keys: 0..<20)))
            #expect(await adapter.statementCounts.preparedRuns == 2)
            let after = try await db.tableCounters(schema: schema, table: "Contact") { $0.updated >= 40 }
            #expect(after.updated >= 40, "the server reported the updates within the bound")
            #expect(after.sequentialScans == before.sequentialScans)
            #expect(after.indexFetched - before.indexFetched < 1_000, "rows read through the index: \(after.indexFetched - before.indexFetched)")
            #expect(try await db.scalar("SELECT count(*) FROM \"\(unescaped: schema)\".\"Contact\" WHERE \"Title\" = 't59'") == 1)
        }
    }

    @Test func reapplyingAnAppliedBatchAddsNothing() async throws {
        try await withTarget("idempotent") { adapter, db, schema in
            let first = batch((0..<10).map { entry($0, .insert, "k\($0)", ["N": .int(Int64($0))]) })
            try await adapter.apply(first)
            // The same inserts again would violate the primary key if they were not skipped.
            try await adapter.apply(first)
            let overlapping = batch((5..<15).map { entry($0, .insert, "k\($0)", ["N": .int(Int64($0) * 100)]) })
            try await adapter.apply(overlapping)
            #expect(try await db.count(schema: schema, table: "Contact") == 15)
            #expect(try await db.scalar("SELECT \"N\" FROM \"\(unescaped: schema)\".\"Contact\" WHERE \"key\" = 'k7'") == 7)
            #expect(try await db.scalar("SELECT \"N\" FROM \"\(unescaped: schema)\".\"Contact\" WHERE \"key\" = 'k12'") == 1200)
            #expect(try await adapter.appliedPosition()?.offset == 14)
        }
    }

    @Test func rejectedEntryNamesItsOffsetAndNothingOfTheBatchIsCommitted() async throws {
        try await withTarget("rejected") { adapter, db, schema in
            try await adapter.apply(batch([entry(0, .insert, "base", ["N": 1])]))
            // A duplicate key: the server's SQLSTATE comes back as the target code.
            let duplicate = await adapterError {
                try await adapter.apply(batch([
                    entry(1, .insert, "a", ["N": 2]), entry(2, .upsert, "b", ["New": "column"]), entry(3, .insert, "base"),
                ]))
            }
            #expect(duplicate?.kind == .rejected(offset: 3))
            #expect(duplicate?.targetCode == "23505")
            #expect(try await db.count(schema: schema, table: "Contact") == 1)
            #expect(try await adapter.appliedPosition()?.offset == 0)
            // The column added for offset 2 was rolled back too, and the adapter knows it:
            // re-applying the prefix (what the link does) recreates it.
            #expect(try await db.scalar("SELECT count(*) FROM information_schema.columns WHERE table_schema = \(schema) AND column_name = 'New'") == 0)
            try await adapter.apply(batch([entry(1, .insert, "a", ["N": 2]), entry(2, .upsert, "b", ["New": "column"])]))
            #expect(try await db.count(schema: schema, table: "Contact") == 3)

            // A value that does not fit its column is rejected by the adapter itself.
            let mismatch = await adapterError { try await adapter.apply(batch([entry(4, .upsert, "c", ["N": "not a number"])])) }
            #expect(mismatch?.kind == .rejected(offset: 4))
            // A name that cannot be mapped safely, and one orgsync keeps for itself.
            let tooLong = await adapterError {
                try await adapter.apply(batch([entry(5, .upsert, "d", object: String(repeating: "x", count: 64), ["N": 1])]))
            }
            #expect(tooLong?.kind == .rejected(offset: 5))
            let reserved = await adapterError {
                try await adapter.apply(batch([entry(5, .upsert, "d", object: "orgsync_offsets", ["N": 1])]))
            }
            #expect(reserved?.kind == .rejected(offset: 5))
            // A table someone else made without the adapter's own columns.
            try await db.query(PostgresQuery(unsafeSQL: "CREATE TABLE \"\(schema)\".\"Legacy\" (id INT)"), logger: Logger(label: "test"))
            let legacy = await adapterError { try await adapter.apply(batch([entry(5, .upsert, "l", object: "Legacy", ["N": 1])])) }
            #expect(legacy?.kind == .rejected(offset: 5))
            #expect(legacy?.message.contains("key, org, ts") == true)
            // A quote in a name is data, not SQL.
            try await adapter.apply(batch([entry(5, .upsert, "q", object: "We\"ird; DROP TABLE x", ["Sp\"ace d": "ok"])]))
            #expect(try await db.count(schema: schema, table: "We\"\"ird; DROP TABLE x") == 1)
            #expect(try await adapter.appliedPosition()?.offset == 5)
        }
    }

    @Test func probeAndOpenAgainstNothingListeningThrowConnection() async throws {
        var settings = try TestPostgres.settings(schema: "public")
        settings.port = try unusedLoopbackPort()
        let adapter = PostgresAdapter(linkName: "dead", settings: settings)
        let probe = await adapterError { try await adapter.probe() }
        #expect(probe?.kind == .connection)
        let open = await adapterError { try await adapter.open() }
        #expect(open?.kind == .connection)
        await adapter.close()
    }

    @Test func aServerThatAcceptsAndSaysNothingFailsWithinConnectTimeout() async throws {
        // A socket that listens and never accepts: the kernel completes the TCP handshake, the
        // startup message goes unanswered.
        let listener = try SilentListener()
        defer { listener.close() }
        var settings = try TestPostgres.settings(schema: "public")
        settings.port = listener.port
        settings.connectTimeoutMs = 300
        settings.tls = PostgresTLSSettings(mode: .disable)
        let adapter = PostgresAdapter(linkName: "silent", settings: settings)
        let started = ContinuousClock.now
        let probe = await adapterError { try await adapter.probe() }
        #expect(probe?.kind == .connection)
        #expect(probe?.message.contains("connect_timeout_ms=300") == true)
        #expect(ContinuousClock.now - started < .seconds(10), "bounded by connect_timeout_ms, not by the server")
        await adapter.close()
    }

    @Test func wrongPasswordIsAConnectionFailureWithoutThePassword() async throws {
        var settings = try TestPostgres.settings(schema: "public")
        settings.password = "not-the-password-\(UInt32.random(in: 0...UInt32.max))"
        let adapter = PostgresAdapter(linkName: "auth", settings: settings)
        let error = await adapterError { try await adapter.probe() }
        #expect(error?.kind == .connection)
        #expect(error?.targetCode == "28P01")
        #expect(error.map { !$0.description.contains(settings.password ?? "") } == true)
        await adapter.close()
    }

    /// A role that may only read and write rows opens and applies to the tables it has; what
    /// would need DDL it may not run suspends the link (connection) instead of dead-lettering.
    @Test func aRoleWithoutCreatePrivilegeOpensAndApplies() async throws {
        try await withTarget("writer") { owner, db, schema in
            try await owner.apply(batch([entry(0, .upsert, "a", ["N": 1])]))
            let role = "orgsync_writer_\(UInt32.random(in: 0...UInt32.max))"
            let password = "pw\(UInt32.random(in: 0...UInt32.max))"
            for statement in [
                "CREATE ROLE \(role) LOGIN PASSWORD '\(password)'",
                "GRANT USAGE ON SCHEMA \"\(schema)\" TO \(role)",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"\(schema)\" TO \(role)",
            ] {
                try await db.query(PostgresQuery(unsafeSQL: statement), logger: Logger(label: "test"))
            }
            var settings = try TestPostgres.settings(schema: schema)
            settings.user = role
            settings.password = password
            let writer = PostgresAdapter(linkName: "writer", settings: settings)
            do {
                try await writer.open()
                try await writer.apply(batch([entry(1, .upsert, "b", ["N": 2])]))
                let denied = await adapterError { try await writer.apply(batch([entry(2, .upsert, "c", ["NewField": "x"])])) }
                #expect(denied?.kind == .connection)
                #expect(denied?.targetCode == "42501")
                #expect(try await writer.appliedPosition()?.offset == 1)
            } catch {
                Issue.record("writer role: \(error)")
            }
            await writer.close()
            #expect(try await db.count(schema: schema, table: "Contact") == 2)
            for statement in ["DROP OWNED BY \(role)", "DROP ROLE \(role)"] {
                _ = try? await db.query(PostgresQuery(unsafeSQL: statement), logger: Logger(label: "test"))
            }
        }
    }

    @Test func anOffsetsTableOfThePreviousReleaseIsUpgradedInPlace() async throws {
        let schema = TestPostgres.uniqueSchema("upgrade")
        let settings = try TestPostgres.settings(schema: schema)
        let db = try await TestPostgres.connect(settings)
        // Exactly the table and row the previous release wrote.
        for statement in [
            "CREATE SCHEMA \(schema)",
            "CREATE TABLE \(schema).orgsync_offsets (link TEXT PRIMARY KEY, applied_offset BIGINT, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            "INSERT INTO \(schema).orgsync_offsets (link, applied_offset) VALUES ('demo', 41)",
        ] {
            _ = try await db.query(PostgresQuery(unsafeSQL: statement), logger: Logger(label: "test"))
        }
        let adapter = PostgresAdapter(linkName: "demo", settings: settings)
        try await adapter.open()
        #expect(try await adapter.appliedPosition() == AppliedPosition(identity: nil, offset: 41))
        let identity = StreamIdentity(streamID: "upgraded", epoch: 1)
        try await adapter.apply(EntryBatch(stream: "events", identity: identity, entries: [entry(42, .upsert, "a", ["N": 1])]))
        #expect(try await adapter.appliedPosition() == AppliedPosition(identity: identity, offset: 42))
        await adapter.close()
        let columns = try await db.scalar(PostgresQuery(unsafeSQL: """
            SELECT count(*) FROM information_schema.columns
            WHERE table_schema = '\(schema)' AND table_name = 'orgsync_offsets' AND column_name IN ('stream_id', 'epoch', 'owner_epoch')
            """))
        #expect(columns == 3)
        await db.dropSchema(schema)
        try? await db.close()
    }

    /// Two brokers' first batches of a link, when neither finds a row yet: the later one must
    /// wait for the first to commit and then see its owner epoch, not apply and overwrite it.
    /// Another connection plays the new owner, holding its uncommitted row while the old owner's
    /// batch arrives.
    @Test func aFirstBatchWaitsForAnUncommittedFirstPositionAndIsFencedByIt() async throws {
        let schema = TestPostgres.uniqueSchema("firstrace")
        let settings = try TestPostgres.settings(schema: schema)
        let oldOwner = PostgresAdapter(linkName: "firstrace", settings: settings)
        try await oldOwner.open()  // creates the schema and orgsync_offsets
        let newOwner = try await TestPostgres.connect(settings)
        let logger = Logger(label: "test")
        try await newOwner.query("BEGIN", logger: logger)
        try await newOwner.query(PostgresQuery(unsafeSQL: """
            INSERT INTO "\(schema)".orgsync_offsets (link, applied_offset, stream_id, epoch, owner_epoch) VALUES ('firstrace', 0, 'test', 1, 9)
            """), logger: logger)
        let old = EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1),
                             entries: [entry(0, .upsert, "from-old-owner", ["N": 1])], ownerEpoch: 3)
        let applying = Task { await adapterError { try await oldOwner.apply(old) } }
        do {
            let waiting = try await newOwner.linkWaitingForALock("firstrace")
            #expect(waiting == 1, "the old owner's batch never waited for the new owner's uncommitted row")
            try await newOwner.query("COMMIT", logger: logger)
            let error = await applying.value
            #expect(error?.kind == .fenced, "\(String(describing: error))")
            #expect(try await oldOwner.appliedPosition() == AppliedPosition(identity: StreamIdentity(streamID: "test", epoch: 1), offset: 0, ownerEpoch: 9))
            let tables = try await newOwner.scalar(PostgresQuery(unsafeSQL: "SELECT count(*) FROM pg_tables WHERE schemaname = '\(schema)' AND tablename = 'Contact'"))
            #expect(tables == 0, "nothing of the fenced batch is committed")
        } catch {
            applying.cancel()
            await oldOwner.close()
            throw error
        }
        await oldOwner.close()
        await newOwner.dropSchema(schema)
        try? await newOwner.close()
    }

    @Test func appliedOffsetSurvivesReopen() async throws {
        let schema = TestPostgres.uniqueSchema("reopen")
        let settings = try TestPostgres.settings(schema: schema)
        let first = PostgresAdapter(linkName: "reopen", settings: settings)
        try await first.open()
        #expect(try await first.appliedPosition()?.offset == nil)
        try await first.apply(batch([entry(40, .upsert, "a", ["N": 1]), entry(41, .upsert, "b", ["N": 2])]))
        await first.close()
        let second = PostgresAdapter(linkName: "reopen", settings: settings)
        try await second.open()
        #expect(try await second.appliedPosition()?.offset == 41)
        // Another link in the same target keeps its own offset.
        let other = PostgresAdapter(linkName: "other", settings: settings)
        #expect(try await other.appliedPosition()?.offset == nil)
        await second.close()
        await other.close()
        let db = try await TestPostgres.connect(settings)
        await db.dropSchema(schema)
        try await db.close()
    }

    /// Only the batch that waits on a lock meets the 300 ms deadline: the setup and the batch
    /// after it run through an adapter with the default deadline (on a loaded machine, creating
    /// a table can take longer than 300 ms, and that is not what this test is about).
    @Test func aBatchThatOutlivesQueryTimeoutIsAConnectionFailure() async throws {
        try await withTarget("timeout") { adapter, db, schema in
            try await adapter.apply(batch([entry(0, .upsert, "a", ["N": 1])]))
            let short = PostgresAdapter(
                linkName: "link-timeout-short", settings: try TestPostgres.settings(schema: schema, queryTimeoutMs: 300))
            try await short.open()
            try await db.query("BEGIN", logger: Logger(label: "test"))
            try await db.query(PostgresQuery(unsafeSQL: "LOCK TABLE \"\(schema)\".\"Contact\" IN ACCESS EXCLUSIVE MODE"), logger: Logger(label: "test"))
            let started = ContinuousClock.now
            let error = await adapterError { try await short.apply(batch([entry(1, .upsert, "b", ["N": 2])])) }
            #expect(error?.kind == .connection)
            #expect(error?.message.contains("query_timeout_ms=300") == true, "the deadline, not another failure: \(String(describing: error))")
            #expect(ContinuousClock.now - started >= .milliseconds(300))
            try await db.query("ROLLBACK", logger: Logger(label: "test"))
            await short.close()
            // The abandoned batch's backend still holds what it locked until it notices its
            // client is gone; wait (bounded) for it to go before the next batch.
            let deadline = ContinuousClock.now + .seconds(10)
            while try await db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orgsync:link-timeout-short'") ?? 0 > 0,
                  ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            try await adapter.apply(batch([entry(1, .upsert, "b", ["N": 2])]))
            #expect(try await db.count(schema: schema, table: "Contact") == 2)
        }
    }

    /// The server goes down (immediate shutdown) while a batch is half written: the adapter
    /// reports a connection failure, and after a restart nothing of that batch is there.
    /// On a cluster of its own, so that the shared server stays up for the tests beside it.
    @Test func serverStoppedMidBatchLeavesNoPartialBatch() async throws {
        _ = try TestPostgres.settings(schema: "public")  // in CI without a server: fail here
        let cluster = try await TestPostgres.startPrivateCluster(schema: TestPostgres.uniqueSchema("midbatch"))
        do {
            try await stopMidBatch(cluster)
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    private func stopMidBatch(_ cluster: TestPostgres.PrivateCluster) async throws {
        let settings = cluster.settings
        let schema = settings.schema
        let adapter = PostgresAdapter(linkName: "midbatch", settings: settings)
        try await adapter.open()
        try await adapter.apply(batch([entry(0, .upsert, "k500", ["N": 0])]))
        // Hold the row k500 so the next batch stops there, with k0..k499 written but not committed.
        let locker = try await TestPostgres.connect(settings)
        try await locker.query("BEGIN", logger: Logger(label: "test"))
        try await locker.query(PostgresQuery(unsafeSQL: "SELECT 1 FROM \"\(schema)\".\"Contact\" WHERE \"key\" = 'k500' FOR UPDATE"), logger: Logger(label: "test"))
        let big = batch((0..<1000).map { entry(UInt64($0) + 1, .upsert, "k\($0)", ["N": .int(Int64($0))]) })
        let applying = Task { await adapterError { try await adapter.apply(big) } }
        do {
            // Wait (bounded) until the adapter's backend waits for our lock: it is mid-batch.
            let waiting = try await locker.linkWaitingForALock("midbatch")
            #expect(waiting == 1, "the batch never reached the locked row")
            #expect(try await cluster.pgCtl(["stop", "-m", "immediate"]) == 0)
            let error = await applying.value
            #expect(error?.kind == .connection)
            let probe = await adapterError { try await adapter.probe() }
            #expect(probe?.kind == .connection, "probe against a stopped server")
        } catch {
            applying.cancel()
            await adapter.close()
            throw error
        }
        try? await locker.close()
        #expect(try await cluster.pgCtl(["start"]) == 0)
        // After the restart: reconnect, and only what was committed before the crash is there.
        try await adapter.probe()
        #expect(try await adapter.appliedPosition()?.offset == 0)
        let db = try await TestPostgres.connect(settings)
        #expect(try await db.count(schema: schema, table: "Contact") == 1)
        // The link re-sends the batch and it applies whole.
        try await adapter.apply(big)
        #expect(try await db.count(schema: schema, table: "Contact") == 1000)
        #expect(try await adapter.appliedPosition()?.offset == 1000)
        await adapter.close()
        try await db.close()
    }

    @Test func withOrgKeyTheSameKeyInTwoOrgsIsTwoRecords() async throws {
        let schema = TestPostgres.uniqueSchema("orgkey")
        var settings = try TestPostgres.settings(schema: schema)
        settings.primaryKey = .orgKey
        let adapter = PostgresAdapter(linkName: "orgkey", settings: settings)
        let db = try await TestPostgres.connect(settings)
        try await adapter.open()
        func at(_ offset: UInt64, _ org: String, _ op: EntryOperation, _ fields: [String: JSONValue] = [:]) -> Entry {
            Entry(offset: Offset(offset), org: org, object: "Contact", op: op, key: "same", ts: "t\(offset)", fields: fields)
        }
        try await adapter.apply(batch([
            at(0, "acme", .insert, ["N": 1]), at(1, "globex", .insert, ["N": 2]), at(2, "acme", .upsert, ["N": 3]),
        ]))
        #expect(try await db.scalar("SELECT \"N\" FROM \"\(unescaped: schema)\".\"Contact\" WHERE \"org\" = 'acme'") == 3)
        #expect(try await db.scalar("SELECT \"N\" FROM \"\(unescaped: schema)\".\"Contact\" WHERE \"org\" = 'globex'") == 2)
        try await adapter.apply(batch([at(3, "globex", .delete)]))
        #expect(try await db.count(schema: schema, table: "Contact") == 1)
        let duplicate = await adapterError { try await adapter.apply(batch([at(4, "acme", .insert, ["N": 4])])) }
        #expect(duplicate?.kind == .rejected(offset: 4))
        await adapter.close()
        await db.dropSchema(schema)
        try await db.close()
    }
}

/// A TCP socket on 127.0.0.1 that listens and never accepts; closed exactly once by `close()`.
final class SilentListener: Sendable {
    let port: Int
    private let fd: Mutex<Int32>

    init() throws {
        let socket = try loopbackSocket(listening: true)
        self.port = socket.port
        self.fd = Mutex(socket.fd)
    }

    func close() {
        let fd = self.fd.withLock { fd -> Int32 in
            defer { fd = -1 }
            return fd
        }
        if fd >= 0 { Glibc.close(fd) }
    }
}

@Suite struct PostgresIntegrationEnvironmentTests {
    /// In CI a missing server is a failure, not a skip.
    @Test(.enabled(if: TestPostgres.inCI)) func ciProvidesAServer() {
        #expect(TestPostgres.isConfigured, "CI is set but ORGSYNC_TEST_PG_* are not: .ci/run must source .ci/postgres.sh")
    }
}

