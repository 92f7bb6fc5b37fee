import Foundation
import OrgSyncCore
import OrgSyncPluginAPI
@testable import PostgresAdapter
import Testing

/// The pgoutput reader and the change mapper, without a server: messages as PostgreSQL 15 sent
/// them (captured with `pg_logical_slot_peek_binary_changes`), every prefix of them, and
/// seeded garbage.
@Suite struct ChangeCaptureTests {
    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16) ?? 0)
            index = next
        }
        return out
    }

    /// One transaction as the server sent it: begin, the relation `public.t (id int, name text)`
    /// with `id` as key, an insert (1, 'a'), an update leaving a TOASTed `name` alone, a delete
    /// by key, commit; then a heartbeat outside any transaction.
    static let begin = bytes("4200000000019264700003044f7ea060d4000002d8")
    static let relation = bytes("5200004001" + "7075626c696300" + "7400" + "64" + "0002"
        + "01" + "696400" + "00000017" + "ffffffff" + "00" + "6e616d6500" + "00000019" + "ffffffff")
    static let insert = bytes("4900004001" + "4e" + "0002" + "74" + "00000001" + "31" + "74" + "00000001" + "61")
    static let update = bytes("5500004001" + "4e" + "0002" + "74" + "00000001" + "31" + "75")
    static let delete = bytes("4400004001" + "4b" + "0002" + "74" + "00000001" + "31" + "6e")
    static let commit = bytes("4300000000000192647000000000019264a00003044f7ea060d4")
    static let heartbeat = bytes("4d000000000001926b486f726773796e6300000000026862")
    static let all = [begin, relation, insert, update, delete, commit, heartbeat]

    @Test func readsTheServersMessages() throws {
        #expect(try PgOutputMessage.parse(Self.begin) == .begin(finalLSN: 0x1926470, commitTimeMicros: 0x3044f7ea060d4, xid: 728))
        guard case .relation(let relation) = try PgOutputMessage.parse(Self.relation) else { Issue.record("not a relation"); return }
        #expect(relation.id == 16385 && relation.qualifiedName == "t" && relation.replicaIdentity == UInt8(ascii: "d"))
        #expect(relation.columns.map(\.name) == ["id", "name"] && relation.columns.map(\.isKey) == [true, false])
        #expect(relation.columns.map(\.typeOID) == [23, 25])
        #expect(try PgOutputMessage.parse(Self.insert) == .insert(relationID: 16385, new: [.text("1"), .text("a")]))
        #expect(try PgOutputMessage.parse(Self.update) == .update(relationID: 16385, old: nil, new: [.text("1"), .unchangedToast]))
        #expect(try PgOutputMessage.parse(Self.delete) == .delete(relationID: 16385, old: [.text("1"), .null]))
        #expect(try PgOutputMessage.parse(Self.commit) == .commit(commitLSN: 0x1926470, endLSN: 0x19264a0, commitTimeMicros: 0x3044f7ea060d4))
        #expect(try PgOutputMessage.parse(Self.heartbeat) == .message(transactional: false, lsn: 0x1926b48, prefix: "orgsync"))
    }

    @Test func everyCutMessageIsAnErrorAndExtraBytesToo() {
        for message in Self.all {
            for length in 0..<message.count {
                #expect(throws: PgOutputError.self) { try PgOutputMessage.parse(Array(message.prefix(length))) }
            }
            #expect(throws: PgOutputError.self) { try PgOutputMessage.parse(message + [0]) }
        }
    }

    @Test func hugeCountsAreRefusedBeforeAnythingIsAllocatedForThem() {
        // A relation announcing 65535 columns, a tuple announcing 65535 values, a value of 4 GiB.
        #expect(throws: PgOutputError.self) { try PgOutputMessage.parse(Self.bytes("5200004001" + "7000" + "7400" + "64" + "ffff")) }
        #expect(throws: PgOutputError.self) { try PgOutputMessage.parse(Self.bytes("4900004001" + "4e" + "ffff")) }
        #expect(throws: PgOutputError.self) { try PgOutputMessage.parse(Self.bytes("4900004001" + "4e" + "0001" + "74" + "ffffffff")) }
        #expect(throws: PgOutputError.self) { try PgOutputMessage.parse(Self.bytes("54" + "ffffffff" + "00")) }
    }

    @Test func seededGarbageNeverTraps() {
        var random = SplitMix64(seed: 20261128)
        for _ in 0..<20_000 {
            var message = Self.all[Int(random.next() % UInt64(Self.all.count))]
            for _ in 0..<(1 + random.next() % 4) where !message.isEmpty {
                message[Int(random.next() % UInt64(message.count))] = UInt8(truncatingIfNeeded: random.next())
            }
            _ = try? PgOutputMessage.parse(message)
        }
    }

    @Test func aTransactionBecomesEntriesWithItsPositionAndAHeartbeatOnlyMovesTheSlot() throws {
        var mapper = ChangeMapper(sourceName: "crm")
        var outputs: [ChangeMapper.Output] = []
        for message in Self.all { outputs.append(try mapper.map(try PgOutputMessage.parse(message))) }
        #expect(outputs[0] == .none && outputs[1] == .none)
        guard case .change(let first, let inserted) = outputs[2], case .change(let second, let updated) = outputs[3],
              case .change(let third, let deleted) = outputs[4]
        else { Issue.record("\(outputs)"); return }
        #expect([first, second, third] == [0, 1, 2].map { SourcePosition(commit: 0x1926470, change: $0) })
        #expect(inserted.count == 1 && inserted[0].op == .insert && inserted[0].key == "1" && inserted[0].object == "t")
        #expect(inserted[0].fields == ["id": .int(1), "name": .string("a")] && inserted[0].org == "crm")
        #expect(inserted[0].extra == ["lsn": .string("0/1926470"), "xid": .int(728), "change": .int(0)])
        #expect(inserted[0].ts == "2026-11-28T07:00:03.499220Z")
        #expect(updated[0].op == .upsert && updated[0].fields == ["id": .int(1)], "the unchanged TOASTed name is left out")
        #expect(deleted[0].op == .delete && deleted[0].fields.isEmpty)
        #expect(outputs[5] == .committed(endLSN: 0x19264a0, commitTimeMs: 1_795_849_203_499))
        #expect(outputs[6] == .outsideMessage(lsn: 0x1926b48))
        #expect(ChangeMapper.position(of: inserted[0], sourceName: "crm") == first)
        #expect(ChangeMapper.position(of: inserted[0], sourceName: "other") == nil)
        // The entry as stored reads back to the same entry and position.
        for entry in inserted + updated + deleted {
            let stored = try Entry.parse(entry.raw)
            #expect(stored.fields == entry.fields && stored.extra == entry.extra && stored.key == entry.key && stored.op == entry.op)
            #expect(stored.org == entry.org && stored.object == entry.object && stored.ts == entry.ts)
        }
        #expect(ChangeMapper.position(of: try Entry.parse(inserted[0].raw), sourceName: "crm") == first)
    }

    @Test func aTransactionOfAnOrgsyncLinkIsSkippedWholeButCounted() throws {
        var mapper = ChangeMapper(sourceName: "crm")
        _ = try mapper.map(try PgOutputMessage.parse(Self.begin))
        _ = try mapper.map(.origin(lsn: 0x1926470, name: "orgsync_b_to_a"))
        _ = try mapper.map(try PgOutputMessage.parse(Self.relation))
        #expect(try mapper.map(try PgOutputMessage.parse(Self.insert)) == .skippedChange(SourcePosition(commit: 0x1926470, change: 0)))
        #expect(try mapper.map(try PgOutputMessage.parse(Self.commit)) == .committed(endLSN: 0x19264a0, commitTimeMs: 1_795_849_203_499))
        // Another origin (PostgreSQL's own subscriptions) is captured.
        _ = try mapper.map(try PgOutputMessage.parse(Self.begin))
        _ = try mapper.map(.origin(lsn: 0x1926470, name: "pg_16390"))
        guard case .change = try mapper.map(try PgOutputMessage.parse(Self.insert)) else { Issue.record("not captured"); return }
    }

    @Test func insertsThatMayOverlapTheSnapshotAreUpserts() throws {
        var mapper = ChangeMapper(sourceName: "crm", insertsAsUpsertsThroughLSN: 0x1926470)
        _ = try mapper.map(try PgOutputMessage.parse(Self.begin))
        _ = try mapper.map(try PgOutputMessage.parse(Self.relation))
        guard case .change(_, let entries) = try mapper.map(try PgOutputMessage.parse(Self.insert)) else { Issue.record("no change"); return }
        #expect(entries[0].op == .upsert)
        mapper.insertsAsUpsertsThroughLSN = 0x1926469
        guard case .change(_, let later) = try mapper.map(try PgOutputMessage.parse(Self.insert)) else { Issue.record("no change"); return }
        #expect(later[0].op == .insert)
    }

    @Test func keysOfSeveralColumnsAreJSONArraysAndAMovedKeyIsADeleteAndAnUpsert() throws {
        var mapper = ChangeMapper(sourceName: "crm")
        let relation = PgOutputRelation(id: 9, namespace: "sales", name: "lines", replicaIdentity: UInt8(ascii: "d"), columns: [
            .init(name: "order", typeOID: 23, isKey: true), .init(name: "line", typeOID: 25, isKey: true),
            .init(name: "qty", typeOID: 1700, isKey: false),
        ])
        _ = try mapper.map(.begin(finalLSN: 5, commitTimeMicros: 0, xid: 1))
        _ = try mapper.map(.relation(relation))
        let output = try mapper.map(.update(relationID: 9, old: [.text("7"), .text("a\"b"), .null], new: [.text("7"), .null, .text("1.50")]))
        guard case .change(let position, let entries) = output else { Issue.record("\(output)"); return }
        #expect(position == SourcePosition(commit: 5, change: 0))
        #expect(entries.map(\.op) == [.delete, .upsert])
        #expect(entries.map(\.key) == [#"["7","a\"b"]"#, #"["7",null]"#])
        #expect(entries[1].object == "sales.lines" && entries[1].fields["qty"] == .string("1.50"), "numeric keeps its exact text")
        #expect(entries[0].ts == "2000-01-01T00:00:00.000000Z")
    }

    /// Found by the `pgoutput` fuzz target (Fuzz/corpus/pgoutput/regression-empty-key): a row
    /// whose one key column held the empty text became an entry with `"key":""`, which no entry
    /// may have (a link refuses it). Such a value, and one starting with `[`, is written as a
    /// one-element array: a valid key, and no other row's.
    @Test func aKeyOfOneColumnThatIsEmptyOrStartsWithABracketIsAOneElementArray() throws {
        let relation = PgOutputRelation(id: 3, namespace: "public", name: "tags", replicaIdentity: UInt8(ascii: "d"), columns: [
            .init(name: "name", typeOID: 25, isKey: true), .init(name: "n", typeOID: 23, isKey: false),
        ])
        let expected: [(value: String, key: String)] = [
            ("", #"[""]"#), ("[", #"["["]"#), (#"[""]"#, #"["[\"\"]"]"#), ("a[", "a["), ("x", "x"), (" ", " "),
        ]
        var keys: Set<String> = []
        for (value, key) in expected {
            var mapper = ChangeMapper(sourceName: "crm")
            _ = try mapper.map(.begin(finalLSN: 5, commitTimeMicros: 0, xid: 1))
            _ = try mapper.map(.relation(relation))
            guard case .change(_, let entries) = try mapper.map(.insert(relationID: 3, new: [.text(value), .text("1")])) else {
                Issue.record("no change for \(value)")
                continue
            }
            #expect(entries.map(\.key) == [key], "the key of \(value)")
            let stored = try Entry.parse(entries[0].raw)
            #expect(stored.key == key && stored.fields["name"] == .string(value))
            // The snapshot resumes after the last key it finds in the stream: it reads it back.
            #expect(try PostgresSnapshot.keyParts(key, count: 1) == [value])
            keys.insert(key)
        }
        #expect(keys.count == expected.count, "no two values share a key")
        // A stream written before the rule holds `[abc` as it is: a resumed snapshot takes it so.
        #expect(try PostgresSnapshot.keyParts("[abc", count: 1) == ["[abc"])

        // The fuzzer's input itself, framed as the target reads it: every entry it makes parses.
        let input = try #require(FileManager.default.contents(atPath: Self.corpusFile("regression-empty-key")))
        var mapper = ChangeMapper(sourceName: "fuzz")
        var at = input.startIndex
        var made = 0
        while at + 2 <= input.endIndex {
            let length = Int(input[at]) << 8 | Int(input[at + 1])
            let message = Array(input[(at + 2)..<min(input.endIndex, at + 2 + length)])
            at += 2 + length
            guard let parsed = try? PgOutputMessage.parse(message), case .change(_, let entries)? = try? mapper.map(parsed) else { continue }
            for entry in entries { #expect(throws: Never.self) { try Entry.parse(entry.raw) } }
            made += entries.count
        }
        #expect(made == 1)
    }

    static func corpusFile(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/corpus/pgoutput/\(name)").path
    }

    @Test func aTableWithoutKeyColumnsAndAChangeWithoutItsTransactionAreErrors() throws {
        var mapper = ChangeMapper(sourceName: "crm")
        #expect(throws: ChangeMappingError.self) { try mapper.map(try PgOutputMessage.parse(Self.insert)) }
        _ = try mapper.map(.begin(finalLSN: 5, commitTimeMicros: 0, xid: 1))
        #expect(throws: ChangeMappingError.self) { try mapper.map(try PgOutputMessage.parse(Self.insert)) }
        _ = try mapper.map(.relation(PgOutputRelation(id: 16385, namespace: "public", name: "t", replicaIdentity: UInt8(ascii: "n"),
                                                      columns: [.init(name: "id", typeOID: 23, isKey: false), .init(name: "name", typeOID: 25, isKey: false)])))
        #expect(throws: ChangeMappingError.noKey("t")) { try mapper.map(try PgOutputMessage.parse(Self.insert)) }
    }

    @Test func entriesAreWrittenAsJSONThatReadsBackEqual() throws {
        let relation = PgOutputRelation(id: 1, namespace: "public", name: "t\"q", replicaIdentity: UInt8(ascii: "d"), columns: [
            .init(name: "id", typeOID: 23, isKey: true), .init(name: "doc", typeOID: 3802, isKey: false),
            .init(name: "ratio", typeOID: 701, isKey: false), .init(name: "text\n\u{1}é", typeOID: 25, isKey: false),
        ])
        let values: [PgOutputValue] = [
            .text("-7"), .text(#"{"b": [1.5, -0.0, 1e300, "x\"y", null, {"a": false}], "a": 12345678901234}"#), .text("5e-324"),
            .text("line\nbreak \\ \u{7}🙂"),
        ]
        let entry = try ChangeMapper.entry(sourceName: "s\"o", relation, op: .upsert, key: "-7", values: values, ts: "t",
                                           extra: ["lsn": .string("0/1"), "change": .int(0)])
        let stored = try Entry.parse(entry.raw)
        #expect(stored.fields == entry.fields)
        #expect(stored.org == "s\"o" && stored.object == "t\"q" && stored.extra == entry.extra)
    }

    @Test func valuesByType() {
        #expect(ChangeMapper.json("t", typeOID: 16) == .bool(true))
        #expect(ChangeMapper.json("false", typeOID: 16) == .bool(false), "the snapshot's ::text of a boolean")
        #expect(ChangeMapper.json("-9223372036854775808", typeOID: 20) == .int(Int64.min))
        #expect(ChangeMapper.json("NaN", typeOID: 701) == .string("NaN"))
        #expect(ChangeMapper.json("1e+300", typeOID: 701) == .double(1e300))
        #expect(ChangeMapper.json("[1, {\"a\": null}]", typeOID: 3802) == .array([.int(1), .object(["a": .null])]))
        #expect(ChangeMapper.json("12345678901234567890.123", typeOID: 1700) == .string("12345678901234567890.123"))
        #expect(ChangeMapper.json("{1,2}", typeOID: 1007) == .string("{1,2}"))
    }

    @Test func timestampsAndLSNsReadBackExactly() {
        #expect(ChangeMapper.timestamp(postgresMicros: 0) == "2000-01-01T00:00:00.000000Z")
        #expect(ChangeMapper.timestamp(postgresMicros: -1) == "1999-12-31T23:59:59.999999Z")
        #expect(ChangeMapper.timestamp(postgresMicros: 86_400_000_000 * 59 + 1) == "2000-02-29T00:00:00.000001Z", "a leap day")
        #expect(ChangeMapper.timestamp(postgresMicros: Int64.max).isEmpty == false, "no overflow trap")
        for lsn: UInt64 in [0, 1, 0x1926470, 0xFFFF_FFFF, 0x1_0000_0000, UInt64.max] {
            #expect(ChangeMapper.lsn(ChangeMapper.lsnText(lsn)) == lsn)
        }
        #expect(ChangeMapper.lsnText(0x1_0000_00AB) == "1/AB")
        for bad in ["", "1", "1/", "/1", "1/2/3", "G/1", "123456789/1", "-1/1"] { #expect(ChangeMapper.lsn(bad) == nil) }
    }
}
