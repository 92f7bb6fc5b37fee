import Foundation
import GRDB
import OrgSyncAdapterContract
import OrgSyncCore
import OrgSyncPluginAPI
import SQLiteAdapter
import Testing

enum SQLiteAdapterFactoryProxy {
    static let factory: any OrgAdapterFactory = SQLiteAdapterFactory()
}

@Suite("SQLite adapter")
struct SQLiteAdapterTests {
    @Test("passes the adapter contract", arguments: AdapterContract.Check.allCases)
    func contract(_ check: AdapterContract.Check) async throws {
        try await AdapterContract { try SQLiteContractTarget() }.run(check)
    }

    @Test("maps JSON types to columns as documented")
    func typeMapping() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "types", streamName: "s"))
        try await adapter.open()
        let fields: [String: JSONValue] = [
            "Text": .string("héllo \"quoted\""), "Count": .int(42), "Ratio": .double(0.5), "Flag": .bool(true),
            "Nothing": .null, "List": .array([.int(1), .string("b")]), "Map": .object(["z": .int(1), "a": .null]),
        ]
        try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
            Entry(offset: 0, org: "acme", object: "Thing", op: .insert, key: "k1", ts: "t0", fields: fields)
        ]))
        await adapter.close()
        let queue = try DatabaseQueue(path: target.databasePath)
        defer { try? queue.close() }
        let (types, row) = try queue.read { db in
            let types = try Row.fetchAll(db, sql: "PRAGMA table_info(\"Thing\")").reduce(into: [String: String]()) {
                $0[$1["name"] as String? ?? ""] = $1["type"] as String? ?? ""
            }
            return (types, try Row.fetchOne(db, sql: "SELECT * FROM Thing WHERE key = 'k1'"))
        }
        #expect(types["key"] == "TEXT")
        #expect(types["Text"] == "TEXT")
        #expect(types["Count"] == "INTEGER")
        #expect(types["Ratio"] == "REAL")
        #expect(types["Flag"] == "INTEGER")
        #expect(types["Nothing"] == "")
        #expect(types["List"] == "TEXT")
        #expect(types["Map"] == "TEXT")
        let stored = try #require(row)
        #expect(stored["org"] as String? == "acme")
        #expect(stored["ts"] as String? == "t0")
        #expect(stored["Text"] as String? == "héllo \"quoted\"")
        #expect(stored["Count"] as Int64? == 42)
        #expect(stored["Ratio"] as Double? == 0.5)
        #expect(stored["Flag"] as Int64? == 1)
        #expect((stored["Nothing"] as DatabaseValue?)?.isNull == true)
        #expect(stored["List"] as String? == "[1,\"b\"]")
        #expect(stored["Map"] as String? == "{\"a\":null,\"z\":1}")
    }

    @Test("rejects names that cannot be mapped, naming the entry", arguments: [
        ("bad name", "Field"), ("sqlite_master", "Field"), ("orgsync_offsets", "Field"), ("1Thing", "Field"),
        ("Thing", "key"), ("Thing", "has space"), ("Thing", "x\"; DROP TABLE t; --"), ("Thing", "9lives"),
    ])
    func rejectsUnsafeNames(_ object: String, _ field: String) async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "names", streamName: "s"))
        try await adapter.open()
        defer { Task { await adapter.close() } }
        let batch = EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
            Entry(offset: 7, org: "o", object: "Good", op: .upsert, key: "g", ts: "t", fields: ["A": .int(1)]),
            Entry(offset: 8, org: "o", object: object, op: .upsert, key: "k", ts: "t", fields: [field: .int(1)]),
        ])
        let error = try await #require(throws: AdapterError.self) { try await adapter.apply(batch) }
        #expect(error.kind == .rejected(offset: 8))
        #expect(try await target.rows(object: "Good").isEmpty, "nothing of the batch is committed")
        #expect(try await adapter.appliedPosition()?.offset == nil)
    }

    @Test("rejects fields that differ only by case")
    func rejectsCaseFoldedDuplicates() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "case", streamName: "s"))
        try await adapter.open()
        let error = try await #require(throws: AdapterError.self) {
            try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
                Entry(offset: 3, org: "o", object: "T", op: .upsert, key: "k", ts: "t",
                      fields: ["Name": .int(1), "name": .int(2)])
            ]))
        }
        await adapter.close()
        #expect(error.kind == .rejected(offset: 3))
    }

    @Test("a duplicate insert is rejected with SQLite's extended result code")
    func duplicateInsertCode() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "dup", streamName: "s"))
        try await adapter.open()
        let entry = Entry(offset: 0, org: "o", object: "T", op: .insert, key: "k", ts: "t", fields: ["A": .int(1)])
        var again = entry
        again.offset = 1
        let error = try await #require(throws: AdapterError.self) {
            try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry, again]))
        }
        await adapter.close()
        #expect(error.kind == .rejected(offset: 1))
        #expect(error.targetCode == "1555", "SQLITE_CONSTRAINT_PRIMARYKEY")
    }

    @Test("a write lock held by another connection is retryable")
    func busyIsRetryable() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        var configuration = target.configuration(linkName: "busy", streamName: "s")
        configuration.settings["busy_timeout_ms"] = "50"
        let adapter = try target.factory.makeAdapter(configuration)
        try await adapter.open()
        // Another connection holds the write lock, as a second writer to the same file would.
        var otherConfiguration = Configuration()
        otherConfiguration.allowsUnsafeTransactions = true
        let other = try DatabaseQueue(path: target.databasePath, configuration: otherConfiguration)
        defer { try? other.close() }
        try other.inDatabase { try $0.execute(sql: "BEGIN IMMEDIATE") }
        var error: AdapterError?
        do {
            try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
                Entry(offset: 0, org: "o", object: "T", op: .upsert, key: "k", ts: "t")
            ]))
        } catch let caught as AdapterError {
            error = caught
        }
        try other.inDatabase { try $0.execute(sql: "ROLLBACK") }
        try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
            Entry(offset: 0, org: "o", object: "T", op: .upsert, key: "k", ts: "t")
        ]))
        #expect(try await adapter.appliedPosition()?.offset == 0, "the same batch applies once the lock is gone")
        await adapter.close()
        #expect(error?.kind == .retryable)
        #expect(error?.targetCode == "5", "SQLITE_BUSY")
    }

    @Test("an unopenable file is a connection error")
    func unopenableIsConnection() async throws {
        let adapter = try SQLiteAdapterFactory().makeAdapter(AdapterConfiguration(
            linkName: "l", streamName: "s", settings: ["path": "/nonexistent-dir-\(UUID().uuidString)/db.sqlite"]))
        let error = try await #require(throws: AdapterError.self) { try await adapter.open() }
        #expect(error.kind == .connection)
        #expect(error.targetCode == "14", "SQLITE_CANTOPEN")
        #expect(error.message.contains("nonexistent-dir"))
    }

    @Test("primary_key = org_key keeps records of different orgs with the same key apart")
    func orgKey() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        var configuration = target.configuration(linkName: "tenants", streamName: "s")
        configuration.settings["primary_key"] = "org_key"
        let adapter = try target.factory.makeAdapter(configuration)
        try await adapter.open()
        try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
            Entry(offset: 0, org: "acme", object: "T", op: .insert, key: "001", ts: "t", fields: ["Name": .string("a")]),
            Entry(offset: 1, org: "globex", object: "T", op: .insert, key: "001", ts: "t", fields: ["Name": .string("g")]),
            Entry(offset: 2, org: "acme", object: "T", op: .upsert, key: "001", ts: "t", fields: ["Name": .string("a2")]),
            Entry(offset: 3, org: "globex", object: "T", op: .delete, key: "001", ts: "t"),
        ]))
        let rows = try await target.rows(object: "T")
        #expect(rows == [ContractRow(key: "001", fields: ["Name": .string("a2")])])
        await adapter.close()

        // The same database under the other setting: refused, not silently merged.
        let keyOnly = try target.factory.makeAdapter(target.configuration(linkName: "tenants", streamName: "s"))
        try await keyOnly.open()
        let error = try await #require(throws: AdapterError.self) {
            try await keyOnly.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
                Entry(offset: 4, org: "acme", object: "T", op: .upsert, key: "002", ts: "t")
            ]))
        }
        await keyOnly.close()
        #expect(error.kind == .connection)
        #expect(error.message.contains("primary key (org, key)"))
    }

    @Test("renamed own columns keep fields called key, org and ts")
    func renamedOwnColumns() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        var configuration = target.configuration(linkName: "captured", streamName: "s")
        configuration.settings.merge(["key_column": "orgsync_key", "org_column": "orgsync_org", "ts_column": "orgsync_ts", "primary_key": "org_key"]) { $1 }
        let adapter = try target.factory.makeAdapter(configuration)
        try await adapter.open()
        let fields: [String: JSONValue] = ["key": .int(7), "org": .string("theirs"), "ts": .string("2026-01-01")]
        try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
            Entry(offset: 0, org: "acme", object: "T", op: .insert, key: "k1", ts: "t0", fields: fields),
            Entry(offset: 1, org: "acme", object: "T", op: .upsert, key: "k1", ts: "t1", fields: ["org": .string("changed")]),
            Entry(offset: 2, org: "acme", object: "T", op: .insert, key: "k2", ts: "t2", fields: fields),
            Entry(offset: 3, org: "acme", object: "T", op: .delete, key: "k2", ts: "t3"),
        ]))
        // A field named like a renamed own column is still refused, naming the entry.
        let error = try await #require(throws: AdapterError.self) {
            try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
                Entry(offset: 4, org: "acme", object: "T", op: .upsert, key: "k3", ts: "t4", fields: ["ORGSYNC_TS": .string("x")])
            ]))
        }
        await adapter.close()
        #expect(error.kind == .rejected(offset: 4))
        #expect(error.message.contains("orgsync_key/orgsync_org/orgsync_ts"))
        let queue = try DatabaseQueue(path: target.databasePath)
        defer { try? queue.close() }
        let rows = try await queue.read { db in
            try Row.fetchAll(db, sql: "SELECT orgsync_key, orgsync_org, orgsync_ts, key, org, ts FROM T ORDER BY orgsync_key")
                .map { [$0[0] as String?, $0[1] as String?, $0[2] as String?, ($0[3] as Int64?).map(String.init), $0[4] as String?, $0[5] as String?] }
        }
        #expect(rows == [["k1", "acme", "t1", "7", "changed", "2026-01-01"]])
        let primaryKey = try await queue.read { db in
            try Row.fetchAll(db, sql: "SELECT name FROM pragma_table_info('T') WHERE pk > 0 ORDER BY pk").map { $0[0] as String? }
        }
        #expect(primaryKey == ["orgsync_org", "orgsync_key"])

        // Two settings naming one column (SQLite ignores case) are refused at start-up, naming the setting.
        var clash = target.configuration(linkName: "clash", streamName: "s")
        clash.settings["org_column"] = "KEY"
        let refused = #expect(throws: AdapterConfigurationError.self) { _ = try target.factory.makeAdapter(clash) }
        #expect(refused?.setting == "org_column")
        clash.settings["org_column"] = "has space"
        #expect(throws: AdapterConfigurationError.self) { _ = try target.factory.makeAdapter(clash) }
    }

    @Test("a column another writer added meanwhile is used, not added twice")
    func externalSchemaChange() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "ext", streamName: "s"))
        try await adapter.open()
        try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
            Entry(offset: 0, org: "o", object: "T", op: .upsert, key: "k", ts: "t", fields: ["A": .int(1)])
        ]))
        let other = try DatabaseQueue(path: target.databasePath)
        try await other.write { try $0.execute(sql: "ALTER TABLE T ADD COLUMN B TEXT") }
        try other.close()
        try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
            Entry(offset: 1, org: "o", object: "T", op: .upsert, key: "k", ts: "t", fields: ["B": .string("b")])
        ]))
        await adapter.close()
        #expect(try await target.rows(object: "T") == [ContractRow(key: "k", fields: ["A": .int(1), "B": .string("b")])])
    }

    @Test("entries carrying ever new sets of fields merge into one row per key as if each named only its own fields")
    func variedFieldSetsMerge() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "varied", streamName: "s"))
        try await adapter.open()
        // 600 upserts over 12 keys, each carrying its own subset of 10 fields (more subsets than
        // the adapter keeps statements), some as explicit nulls, some spelled in lower case;
        // every 7th entry a delete, every 11th an insert of a new key.
        var random = SplitMix64(seed: 15)
        var expected: [String: [String: JSONValue]] = [:]
        var entries: [Entry] = []
        let names = (0..<10).map { "F\($0)" }
        for offset in 0..<600 {
            let key = "k\(random.next() % 12)"
            if offset % 7 == 6 {
                entries.append(Entry(offset: Offset(UInt64(offset)), org: "o", object: "T", op: .delete, key: key, ts: "t"))
                expected[key] = nil
                continue
            }
            var fields: [String: JSONValue] = [:]
            for name in names where random.next() % 3 == 0 {
                let value: JSONValue = random.next() % 5 == 0 ? .null : .int(Int64(offset))
                fields[random.next() % 4 == 0 ? name.lowercased() : name] = value
            }
            if fields.isEmpty { fields["F0"] = .int(Int64(offset)) }
            let insertKey = "new\(offset)"
            let op: EntryOperation = offset % 11 == 10 ? .insert : .upsert
            let recordKey = op == .insert ? insertKey : key
            entries.append(Entry(offset: Offset(UInt64(offset)), org: "o", object: "T", op: op, key: recordKey, ts: "t", fields: fields))
            var row = expected[recordKey] ?? [:]
            for (name, value) in fields { row[name.uppercased()] = value }
            expected[recordKey] = row
        }
        for start in stride(from: 0, to: entries.count, by: 50) {
            try await adapter.apply(EntryBatch(
                stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: Array(entries[start..<(start + 50)])))
        }
        await adapter.close()
        let rows = try await target.rows(object: "T")
        #expect(rows.count == expected.count)
        for row in rows {
            let want = try #require(expected[row.key], "row \(row.key) should not be there")
            // A column is named after the spelling that first carried it.
            let got = Dictionary(uniqueKeysWithValues: row.fields.filter { $0.value != .null }.map { ($0.key.uppercased(), $0.value) })
            #expect(got == want.filter { $0.value != .null }, "row \(row.key)")
        }
    }

    @Test("a table made ahead keeps its columns' defaults on insert and its values where an upsert does not carry them")
    func tableMadeAheadKeepsDefaults() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        let made = try DatabaseQueue(path: target.databasePath)
        try await made.write {
            try $0.execute(sql: """
                CREATE TABLE T (key TEXT PRIMARY KEY NOT NULL, org TEXT NOT NULL, ts TEXT NOT NULL, A INTEGER,
                    Status TEXT DEFAULT 'new', Made TEXT DEFAULT (upper('x')), "odd name" TEXT DEFAULT 'theirs')
                """)
        }
        try made.close()
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "ahead", streamName: "s"))
        try await adapter.open()
        let identity = StreamIdentity(streamID: "test", epoch: 1)
        try await adapter.apply(EntryBatch(stream: "s", identity: identity, entries: [
            Entry(offset: 0, org: "o", object: "T", op: .insert, key: "k1", ts: "t", fields: ["A": .int(1)]),
            Entry(offset: 1, org: "o", object: "T", op: .upsert, key: "k2", ts: "t", fields: ["A": .int(2)]),
            Entry(offset: 2, org: "o", object: "T", op: .upsert, key: "k1", ts: "t", fields: ["Status": .string("done")]),
            Entry(offset: 3, org: "o", object: "T", op: .upsert, key: "k2", ts: "t", fields: ["A": .null, "Made": .string("mine")]),
        ]))
        let error = try await #require(throws: AdapterError.self) {
            try await adapter.apply(EntryBatch(stream: "s", identity: identity, entries: [
                Entry(offset: 4, org: "o", object: "T", op: .upsert, key: "k1", ts: "t", fields: ["odd name": .string("x")])
            ]))
        }
        await adapter.close()
        #expect(error.kind == .rejected(offset: 4), "a column the adapter cannot name is not written through an entry")
        #expect(try await target.rows(object: "T").sorted { $0.key < $1.key } == [
            ContractRow(key: "k1", fields: ["A": .int(1), "Status": .string("done"), "Made": .string("X"), "odd name": .string("theirs")]),
            ContractRow(key: "k2", fields: ["A": .null, "Status": .string("new"), "Made": .string("mine"), "odd name": .string("theirs")]),
        ])
    }

    @Test("a text with a NUL inside is stored whole")
    func textWithNULIsStoredWhole() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "nul", streamName: "s"))
        try await adapter.open()
        try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
            Entry(offset: 0, org: "o", object: "T", op: .upsert, key: "k", ts: "t", fields: ["A": .string("before\u{0}after"), "B": .string("")])
        ]))
        await adapter.close()
        let queue = try DatabaseQueue(path: target.databasePath)
        defer { try? queue.close() }
        // Read as bytes: GRDB's own text reading stops at a NUL.
        let stored = try queue.read { db in
            try Row.fetchOne(db, sql: "SELECT hex(A) AS a, typeof(A) AS at, hex(B) AS b, typeof(B) AS bt FROM T WHERE key = 'k'")
        }
        let row = try #require(stored)
        #expect(row["a"] as String? == "6265666F7265006166746572", "before, NUL, after")
        #expect(row["at"] as String? == "text")
        #expect(row["b"] as String? == "")
        #expect(row["bt"] as String? == "text", "an empty text is a text, not NULL")
    }

    @Test("the path setting is required")
    func pathRequired() throws {
        #expect(throws: AdapterConfigurationError.self) {
            _ = try SQLiteAdapterFactory().makeAdapter(AdapterConfiguration(linkName: "l", streamName: "s"))
        }
    }
}
