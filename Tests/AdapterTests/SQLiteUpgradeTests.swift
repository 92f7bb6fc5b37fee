import Foundation
import GRDB
import OrgSyncPluginAPI
import SQLiteAdapter
import Testing

/// A target written before targets stored stream identities, or owner epochs, opens and
/// upgrades in place.
@Suite("SQLite adapter upgrade")
struct SQLiteUpgradeTests {
    @Test("an orgsync_offsets table from before identities gains stream_id, epoch and owner_epoch, and its row reads as a position without identity")
    func upgradesThePreviousTable() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        // Exactly the table and row the previous release wrote.
        let queue = try DatabaseQueue(path: target.databasePath)
        try await queue.write { db in
            try db.execute(sql: """
                CREATE TABLE orgsync_offsets (link TEXT PRIMARY KEY NOT NULL, stream TEXT NOT NULL,
                    applied_offset INTEGER NOT NULL, updated_at TEXT NOT NULL);
                INSERT INTO orgsync_offsets VALUES ('demo', 'events', 41, '2026-11-25T00:00:00.000Z');
                """)
        }
        try queue.close()
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "demo", streamName: "events"))
        try await adapter.open()
        #expect(try await adapter.appliedPosition() == AppliedPosition(identity: nil, offset: 41))
        let identity = StreamIdentity(streamID: "upgraded", epoch: 1)
        try await adapter.apply(EntryBatch(stream: "events", identity: identity, entries: [
            Entry(offset: 42, org: "o", object: "Lead", op: .upsert, key: "k", ts: "t", fields: ["N": .int(1)])
        ]))
        #expect(try await adapter.appliedPosition() == AppliedPosition(identity: identity, offset: 42))
        await adapter.close()
        let reopened = try DatabaseQueue(path: target.databasePath)
        defer { try? reopened.close() }
        let columns = try await reopened.read { db in
            try Row.fetchAll(db, sql: "PRAGMA table_info(orgsync_offsets)").compactMap { $0["name"] as String? }
        }
        #expect(columns == ["link", "stream", "applied_offset", "updated_at", "stream_id", "epoch", "owner_epoch"])
    }

    @Test("an orgsync_offsets table of the previous release gains owner_epoch; its row reads as owner epoch 0, which any owner may follow")
    func upgradesTheTableWithoutOwnerEpochs() async throws {
        let target = try SQLiteContractTarget()
        defer { target.directory.remove() }
        let identity = StreamIdentity(streamID: "s-previous", epoch: 2)
        let queue = try DatabaseQueue(path: target.databasePath)
        try await queue.write { db in
            try db.execute(sql: """
                CREATE TABLE orgsync_offsets (link TEXT PRIMARY KEY NOT NULL, stream TEXT NOT NULL,
                    applied_offset INTEGER NOT NULL, updated_at TEXT NOT NULL, stream_id TEXT, epoch INTEGER);
                INSERT INTO orgsync_offsets VALUES ('demo', 'events', 41, '2026-11-25T00:00:00.000Z', 's-previous', 2);
                """)
        }
        try queue.close()
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "demo", streamName: "events"))
        try await adapter.open()
        #expect(try await adapter.appliedPosition() == AppliedPosition(identity: identity, offset: 41, ownerEpoch: 0))
        let entry = Entry(offset: 42, org: "o", object: "Lead", op: .upsert, key: "k", ts: "t", fields: ["N": .int(1)])
        try await adapter.apply(EntryBatch(stream: "events", identity: identity, entries: [entry], ownerEpoch: 3))
        #expect(try await adapter.appliedPosition() == AppliedPosition(identity: identity, offset: 42, ownerEpoch: 3))
        do {
            try await adapter.apply(EntryBatch(stream: "events", identity: identity, entries: [entry], ownerEpoch: 0))
            Issue.record("a batch of owner epoch 0 over owner epoch 3 was applied")
        } catch let error as AdapterError {
            #expect(error.kind == .fenced, "\(error)")
        }
        await adapter.close()
    }
}
