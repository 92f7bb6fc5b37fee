import Foundation
import OrgSyncCore
import OrgSyncPluginAPI
@testable import PostgresAdapter
import PostgresNIO
import Testing

@Suite struct BatchPlanTests {
    func at(_ offset: UInt64, _ op: EntryOperation, _ key: String, org: String = "acme", object: String = "Contact",
            _ fields: [String: JSONValue] = [:]) -> Entry {
        Entry(offset: Offset(offset), org: org, object: object, op: op, key: key, ts: "t\(offset)", fields: fields)
    }

    func plan(_ entries: [Entry], shapes: [String: TableShape] = [:]) throws -> BatchPlan {
        try BatchPlan.make(entries, shapes: shapes, prefix: "")
    }

    func folded(_ entries: [Entry], primaryKey: PostgresAdapterSettings.PrimaryKey = .key) throws -> [FoldedRecord] {
        try plan(entries).folded(primaryKey: primaryKey)
    }

    @Test func eachRecordFoldsToItsNetWriteWithTheLastValuesWinning() throws {
        let records = try folded([
            at(0, .upsert, "a", ["N": 1, "M": "x"]), at(1, .upsert, "b", ["N": 2]), at(2, .upsert, "a", ["N": 3]),
            at(3, .delete, "b"), at(4, .upsert, "b", ["M": "fresh"]), at(5, .insert, "c", ["N": 5]), at(6, .upsert, "c", ["M": "y"]),
            at(7, .insert, "d"), at(8, .delete, "d"), at(9, .delete, "e"), at(10, .upsert, "a", org: "globex", ["M": "z"]),
        ])
        #expect(records.map(\.key) == ["a", "b", "c", "d", "e"])
        #expect(records.map(\.write) == [.upsert, .replace, .insert, .delete, .delete])
        // "a": both upserts merged, the later N winning, org and ts from the last entry.
        #expect(records[0].values.map(\.column) == ["M", "N"])
        #expect(records[0].values.map(\.value) == [.text("z"), .int(3)])
        #expect(records[0].org == "globex" && records[0].ts == "t10" && records[0].lastOffset == 10)
        // "b": written afresh after the delete: only what came after it.
        #expect(records[1].values.map(\.column) == ["M"])
        // "c" and "d": their first entry is an insert, which needs them absent at the start.
        #expect(records.map(\.mustBeAbsentFor) == [nil, nil, 5, 7, nil])
        // By org and key, globex's "a" is a record of its own.
        #expect(try folded([at(0, .upsert, "a"), at(1, .insert, "a", org: "globex")], primaryKey: .orgKey).count == 2)
    }

    @Test func layerNHoldsTheNthEntryOfEveryRecord() throws {
        let planned = try plan([
            at(0, .upsert, "a"), at(1, .upsert, "b"), at(2, .upsert, "a", object: "Account"), at(3, .delete, "b"),
            at(4, .upsert, "c"), at(5, .upsert, "a"), at(6, .insert, "b", org: "globex"),
        ])
        // By key: Contact "a" at 0 and 5, "b" at 1, 3 and 6; the Account "a" is another record.
        #expect(planned.layers(primaryKey: .key).map { $0.map(\.offset) } == [[0, 1, 2, 4], [3, 5], [6]])
        // By org and key, globex's "b" is a record of its own.
        #expect(planned.layers(primaryKey: .orgKey).map { $0.map(\.offset) } == [[0, 1, 2, 4, 6], [3, 5]])
        #expect(try plan([]).layers(primaryKey: .key).isEmpty)
        // A layer folds to one write per row: every entry writes its own row.
        let layer = try BatchPlan.fold(planned.layers(primaryKey: .key)[1], primaryKey: .key)
        #expect(layer.map(\.lastOffset) == [3, 5] && layer.map(\.write) == [.delete, .upsert])
    }

    @Test func layersKeepEachRecordsEntriesInOrderAndLoseNone() throws {
        var random = SplitMix64(seed: 5)
        let entries = (0..<400).map { offset in
            at(UInt64(offset), [.upsert, .insert, .delete][Int(random.next() % 3)], "k\(random.next() % 30)",
               org: ["acme", "globex"][Int(random.next() % 2)], object: ["Contact", "Account"][Int(random.next() % 2)])
        }
        let planned = try plan(entries)
        for primaryKey in [PostgresAdapterSettings.PrimaryKey.key, .orgKey] {
            let layers = planned.layers(primaryKey: primaryKey)
            #expect(layers.flatMap { $0 }.map(\.offset).sorted() == planned.rows.map(\.offset))
            func record(_ row: PlannedRow) -> String { "\(row.table)/\(primaryKey == .orgKey ? row.org : "")/\(row.key)" }
            var lastLayerOf: [String: (layer: Int, offset: Offset)] = [:]
            for (index, layer) in layers.enumerated() {
                #expect(Set(layer.map(record)).count == layer.count, "no record twice in layer \(index)")
                #expect(layer.map(\.offset) == layer.map(\.offset).sorted())
                for row in layer {
                    if let before = lastLayerOf[record(row)] {
                        #expect(before.layer == index - 1 && before.offset < row.offset, "\(record(row)) in order, layer after layer")
                    } else {
                        #expect(index == 0)
                    }
                    lastLayerOf[record(row)] = (index, row.offset)
                }
            }
        }
    }

    @Test func batchWritesIsPerEntryUnlessSetOtherwise() throws {
        func settings(_ extra: [String: String]) throws -> PostgresAdapterSettings {
            try PostgresAdapterSettings(
                AdapterConfiguration(linkName: "l", streamName: "s", settings: ["user": "u", "database": "d"].merging(extra) { $1 }), environment: [:])
        }
        #expect(try settings([:]).batchWrites == .perEntry)
        #expect(try settings(["batch_writes": "per_record"]).batchWrites == .perRecord)
        #expect(throws: AdapterConfigurationError.self) { try settings(["batch_writes": "sometimes"]) }
        #expect(try settings([:]).preparedStatements)
        #expect(try !settings(["prepared_statements": "false"]).preparedStatements)
        #expect(try settings(["prepared_statements": "false"]).description.contains("prepared_statements=false"))
        #expect(throws: AdapterConfigurationError.self) { try settings(["prepared_statements": "no"]) }
    }

    @Test func renamedOwnColumnsLetFieldsCalledKeyOrgAndTsThrough() throws {
        func settings(_ extra: [String: String]) throws -> PostgresAdapterSettings {
            try PostgresAdapterSettings(
                AdapterConfiguration(linkName: "l", streamName: "s", settings: ["user": "u", "database": "d"].merging(extra) { $1 }), environment: [:])
        }
        let renamed = try settings(["key_column": "orgsync_key", "org_column": "orgsync_org", "ts_column": "orgsync_ts"]).ownColumns
        #expect(renamed == BookkeepingColumns(key: "orgsync_key", org: "orgsync_org", ts: "orgsync_ts"))
        #expect(try settings([:]).ownColumns == .standard)
        let duplicate = #expect(throws: AdapterConfigurationError.self) { try settings(["ts_column": "key"]) }
        #expect(duplicate?.setting == "ts_column")
        #expect(throws: AdapterConfigurationError.self) { try settings(["org_column": String(repeating: "o", count: 64)]) }

        // The source's own key/org/ts columns are fields; the renamed ones are refused as fields.
        let entry = at(0, .upsert, "a", ["key": 7, "org": "theirs", "ts": "2026-01-01"])
        #expect(throws: AdapterError.self) { try BatchPlan.make([entry], shapes: [:], prefix: "") }
        let planned = try BatchPlan.make([entry], shapes: [:], prefix: "", own: renamed)
        #expect(planned.shapes["Contact"]?.columns.keys.sorted() == ["key", "org", "orgsync_key", "orgsync_org", "orgsync_ts", "ts"])
        let clash = at(1, .upsert, "b", ["orgsync_ts": "x"])
        #expect(throws: AdapterError.self) { try BatchPlan.make([clash], shapes: [:], prefix: "", own: renamed) }
        // A table made ahead without the renamed columns is refused, naming them.
        let missing = #expect(throws: AdapterError.self) {
            try BatchPlan.make([entry], shapes: ["Contact": TableShape.ownColumnsOnly(.standard)], prefix: "", own: renamed)
        }
        #expect("\(missing.map { String(describing: $0) } ?? "")".contains("orgsync_key, orgsync_org, orgsync_ts"))

        let target = SetStatement.Target(schema: "s", primaryKey: .orgKey, own: renamed)
        let single = SetStatement.single(try #require(planned.rows.first), target: target).sql
        #expect(single.hasPrefix("INSERT INTO \"s\".\"Contact\" (\"orgsync_key\", \"orgsync_org\", \"orgsync_ts\", \"key\", \"org\", \"ts\")"))
        #expect(single.contains("ON CONFLICT (\"orgsync_org\", \"orgsync_key\")"))
        let set = try #require(
            SetStatement.batch(try planned.folded(primaryKey: .orgKey), shapes: planned.shapes, target: target).main?.sql)
        #expect(set.contains("t.\"orgsync_key\" = x.k AND t.\"orgsync_org\" = x.o"))
        #expect(!set.contains("t.\"key\" = x.k"))
    }

    @Test func anInsertOfARecordTheBatchHasJustWrittenIsRejectedAtOnce() throws {
        for entries in [
            [at(0, .upsert, "a"), at(1, .upsert, "b"), at(2, .insert, "a")],
            [at(0, .insert, "x"), at(1, .insert, "a"), at(2, .insert, "a")],
            [at(0, .delete, "a"), at(1, .upsert, "a"), at(2, .insert, "a")],
        ] {
            let error = #expect(throws: AdapterError.self) { try folded(entries) }
            #expect(error?.kind == .rejected(offset: 2))
            #expect(error?.targetCode == "23505")
        }
        // After a delete, an insert is fine.
        #expect(try folded([at(0, .upsert, "a"), at(1, .delete, "a"), at(2, .insert, "a")]).map(\.write) == [.replace])
    }

    @Test func schemaChangesFollowTheEntriesInOrderWithTheFirstNonNullValuesType() throws {
        let planned = try plan([
            at(0, .upsert, "a", ["N": .null, "Name": "x"]),
            at(1, .upsert, "b", ["N": 2.5]),
            at(2, .upsert, "c", ["N": 7, "Name": .null]),
            at(3, .delete, "x", object: "Never"),
        ])
        #expect(planned.schemaChanges == [
            .init(offset: 0, table: "Contact", createsTable: true, newColumns: [.init(name: "Name", kind: .text)]),
            .init(offset: 1, table: "Contact", createsTable: false, newColumns: [.init(name: "N", kind: .double)]),
        ])
        #expect(planned.shapes["Contact"]?.columns["N"] == .double)
        // The null of offset 0 has no column to go to; the int of offset 2 is widened.
        #expect(planned.rows.map(\.values.count) == [1, 1, 2])
        #expect(planned.rows[2].values.first { $0.column == "N" }?.value == .double(7))
        // A delete from a table that was never made writes nothing.
        #expect(planned.rows.map(\.offset) == [0, 1, 2])
    }

    @Test func theFirstEntryThatCannotApplyIsRejectedBeforeAnythingIsSent() throws {
        let shapes = ["Contact": TableShape.ownColumnsOnly(.standard).adding("N", .int)]
        for (entries, offset) in [
            ([at(0, .upsert, "a", ["N": 1]), at(1, .upsert, "b", ["N": "one"]), at(2, .upsert, "c", ["key": 1])], 1),
            ([at(0, .upsert, "a", ["org": 1]), at(1, .upsert, "b", ["N": "one"])], 0),
            ([at(0, .upsert, "a"), at(1, .upsert, "b", object: "orgsync_x")], 1),
            ([at(0, .upsert, "a", ["M": 1]), at(1, .upsert, "b", ["M": "text"])], 1),
        ] as [([Entry], UInt64)] {
            let error = #expect(throws: AdapterError.self) { try plan(entries, shapes: shapes) }
            #expect(error?.kind == .rejected(offset: Offset(offset)))
        }
        // A table made by someone else without the adapter's columns.
        #expect(throws: AdapterError.self) { try plan([at(4, .upsert, "a")], shapes: ["Contact": TableShape(columns: ["id": .int])]) }
    }

    @Test func rowsWithAColumnTheAdapterDoesNotWriteOrAGapOverADefaultGoAlone() throws {
        var legacy = TableShape.ownColumnsOnly(.standard).adding("Seen", .other("timestamptz")).adding("Flag", .text).adding("N", .int)
        legacy.defaulted = ["Flag"]
        let planned = try plan(
            [
                at(0, .insert, "a", object: "Legacy", ["Flag": "set", "N": 1]),
                at(1, .insert, "b", object: "Legacy", ["N": 2]),  // leaves Flag to its default
                at(2, .insert, "c", object: "Legacy", ["Flag": "x"]),
                at(3, .upsert, "d", object: "Legacy", ["Seen": .null]),
                at(4, .upsert, "e", object: "Legacy", ["N": 5]),
                at(5, .delete, "f", object: "Legacy"),
            ], shapes: ["Legacy": legacy])
        let statements = SetStatement.batch(
            try planned.folded(primaryKey: .key), shapes: planned.shapes, target: .init(schema: "s", primaryKey: .key, own: .standard))
        #expect(statements.alone.map(\.offset) == [1, 3])
        #expect(statements.checks == [[0, 1, 2]])
        let sql = try #require(statements.main?.sql)
        #expect(sql.contains("DELETE FROM \"s\".\"Legacy\""))
        #expect(sql.contains("INSERT INTO \"s\".\"Legacy\""))
        #expect(sql.contains("UPDATE \"s\".\"Legacy\""))
        #expect(sql.contains("WHERE EXISTS"))
        #expect(statements.replacements == nil)
        // Upsert rows carrying only N: their INSERT leaves Flag out, so it gets its default.
        #expect(SetStatement.splitOffDefaultGaps(planned.rows.filter { $0.offset == 4 }, defaulted: ["Flag"]).alone.isEmpty)
    }

    @Test func recordsWrittenAfreshAreDeletedFirstAndInsertedByASecondStatement() throws {
        let planned = try plan(
            [at(0, .delete, "a"), at(1, .upsert, "a", ["N": 1]), at(2, .upsert, "b", ["N": 2])],
            shapes: ["Contact": TableShape.ownColumnsOnly(.standard).adding("N", .int)])
        let statements = SetStatement.batch(
            try planned.folded(primaryKey: .key), shapes: planned.shapes, target: .init(schema: "s", primaryKey: .key, own: .standard))
        let main = try #require(statements.main?.sql)
        #expect(main.contains("DELETE FROM") && main.contains("UPDATE"))
        let second = try #require(statements.replacements?.sql)
        #expect(second.contains("INSERT INTO \"s\".\"Contact\"") && !second.contains("DELETE"))
    }

    /// The text must repeat for the statement to run prepared: it follows the tables written and
    /// their columns, not the batch's fields, kinds of write, order or size.
    @Test func theTextDependsOnlyOnTheTablesWrittenAndTheirColumns() throws {
        let shapes = [
            "Contact": TableShape.ownColumnsOnly(.standard).adding("N", .int).adding("Name", .text),
            "Account": TableShape.ownColumnsOnly(.standard).adding("Tags", .json),
        ]
        let target = SetStatement.Target(schema: "s", primaryKey: .orgKey, own: .standard)
        func statements(_ entries: [Entry], shapes: [String: TableShape] = shapes) throws -> SetStatement.Batch {
            let planned = try plan(entries, shapes: shapes)
            return SetStatement.batch(try planned.folded(primaryKey: .orgKey), shapes: planned.shapes, target: target)
        }
        let first = try statements([
            at(0, .upsert, "a", ["N": 1]), at(1, .insert, "b", object: "Account", ["Tags": .array([.string("x")])]), at(2, .insert, "c", ["Name": "x"]),
        ])
        let second = try statements([
            at(5, .upsert, "z", object: "Account"), at(6, .delete, "c"), at(7, .upsert, "d", ["Name": "y"]),
            at(8, .upsert, "e", ["N": 2, "Name": "z"]), at(9, .upsert, "f", org: "globex", ["N": 3]),
        ])
        let firstSQL = try #require(first.main?.sql)
        #expect(firstSQL == second.main?.sql)
        #expect(first.main?.parameters != second.main?.parameters)
        // Every column is named, the ones a row does not carry included.
        #expect(firstSQL.contains("\"Name\" = CASE WHEN") && firstSQL.contains("\"N\" = CASE WHEN"))
        // Another set of tables, or a new column, is another text.
        #expect(try statements([at(0, .upsert, "a", ["N": 1]), at(1, .upsert, "b", ["N": 2])]).main?.sql != firstSQL)
        var grown = shapes
        grown["Contact"]?.columns["Extra"] = .text
        #expect(try statements([at(0, .upsert, "a", ["N": 1]), at(1, .insert, "b", object: "Account")], shapes: grown).main?.sql != firstSQL)
    }

    /// A column the server fills is named only by the sets whose rows carry it; one of a type
    /// the adapter does not write never (its rows go alone).
    @Test func columnsTheServerFillsOrOfOtherTypesAreNamedOnlyWhenCarried() throws {
        var legacy = TableShape.ownColumnsOnly(.standard).adding("Flag", .text).adding("N", .int).adding("Seen", .other("timestamptz"))
        legacy.defaulted = ["Flag"]
        let target = SetStatement.Target(schema: "s", primaryKey: .key, own: .standard)
        func sql(_ entries: [Entry]) throws -> String {
            let planned = try plan(entries, shapes: ["Legacy": legacy])
            return try #require(SetStatement.batch(try planned.folded(primaryKey: .key), shapes: planned.shapes, target: target).main?.sql)
        }
        let without = try sql([at(0, .upsert, "a", object: "Legacy", ["N": 1]), at(1, .upsert, "b", object: "Legacy", ["N": 2])])
        #expect(!without.contains("\"Flag\"") && !without.contains("\"Seen\"") && without.contains("\"N\""))
        let with = try sql([at(0, .upsert, "a", object: "Legacy", ["Flag": "x"]), at(1, .upsert, "b", object: "Legacy", ["Flag": "y"])])
        #expect(with.contains("\"Flag\" = CASE WHEN") && with.contains("\"N\" = CASE WHEN") && !with.contains("\"Seen\""))
    }

    @Test func theFirstReportedExistingRecordIsTheEarliestInsertAndNonsenseIsIgnored() throws {
        let planned = try plan([
            at(0, .insert, "a"), at(1, .insert, "b", object: "Account"), at(2, .insert, "c"), at(3, .insert, "d", object: "Account"),
        ])
        let statements = SetStatement.batch(
            try planned.folded(primaryKey: .key), shapes: planned.shapes, target: .init(schema: "s", primaryKey: .key, own: .standard))
        #expect(statements.checks == [[1, 3], [0, 2]], "one group per table, in name order: Account, Contact")
        #expect(statements.firstExisting([(1, 1), (0, 1)]) == 2)
        #expect(statements.firstExisting([(2, 0), (0, 5), (-1, 0)]) == nil)
        #expect(statements.firstExisting([]) == nil)
    }

    @Test func theJSONDocumentEscapesWhatJSONRequires() throws {
        let nasty = "q\"b\\s/\n\r\t\u{1}\u{1F}é😀\u{7F}"
        var writer = JSONDocumentWriter()
        writer.beginArray()
        writer.beginObject()
        writer.member(nasty, string: nasty)
        writer.member("raw", raw: "[1,{\"x\":null}]")
        writer.memberName("nested")
        writer.beginObject()
        writer.endObject()
        writer.endObject()
        writer.beginObject()
        writer.endObject()
        writer.endArray()
        let parsed = try JSONSerialization.jsonObject(with: Data(writer.text.utf8)) as? [[String: Any]]
        #expect(parsed?.count == 2)
        #expect(parsed?.first?[nasty] as? String == nasty)
        #expect((parsed?.first?["raw"] as? [Any])?.count == 2)
    }

    @Test func doublesAreWrittenSoThatFloat8InputReadsThemBackExactly() {
        for value in [0.1, 1e300, -Double.leastNonzeroMagnitude, 1.0 / 3.0, 123_456_789.0, 2.5e-10] {
            let text = SetStatement.doubleText(value)
            #expect(Double(text) == value, "\(text)")
        }
        #expect(SetStatement.doubleText(.infinity) == "Infinity")
        #expect(SetStatement.doubleText(-.infinity) == "-Infinity")
        #expect(SetStatement.doubleText(.nan) == "NaN")
    }
}

extension TableShape {
    func adding(_ column: String, _ kind: ColumnKind) -> TableShape {
        var shape = self
        shape.columns[column] = kind
        return shape
    }
}
