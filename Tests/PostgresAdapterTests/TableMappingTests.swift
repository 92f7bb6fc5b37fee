import OrgSyncPluginAPI
@testable import PostgresAdapter
import Testing

@Suite struct TableMappingTests {
    @Test func quotingDoublesEveryQuoteEvenWithACombiningMark() {
        #expect(TableMapping.quoted("Contact") == "\"Contact\"")
        #expect(TableMapping.quoted("a\"b") == "\"a\"\"b\"")
        // U+0301 after the quote makes one Character; the quote must still be doubled.
        #expect(TableMapping.quoted("a\"\u{301}; DROP") == "\"a\"\"\u{301}; DROP\"")
    }

    @Test func namesThatCannotMapSafelyAreRefused() {
        #expect(TableMapping.identifierProblem("") != nil)
        #expect(TableMapping.identifierProblem(String(repeating: "é", count: 32)) != nil, "64 bytes")
        #expect(TableMapping.identifierProblem(String(repeating: "x", count: 63)) == nil)
        #expect(TableMapping.identifierProblem("a\u{0}b") != nil)
        #expect(TableMapping.identifierProblem("line\nbreak") != nil)
        #expect(TableMapping.columnProblem("key", own: .standard) != nil)
        #expect(TableMapping.columnProblem("Key", own: .standard) == nil, "quoted identifiers are case-sensitive")
        #expect((try? TableMapping.tableName(object: "ORGSYNC_offsets", prefix: "").get()) == nil)
        #expect((try? TableMapping.tableName(object: "Contact", prefix: "sf_").get()) == "sf_Contact")
    }

    @Test func valuesFitOnlyColumnsOfTheirKind() {
        #expect(BoundValue.fit(.string("x"), into: .text) == .text("x"))
        #expect(BoundValue.fit(.string("1"), into: .int) == nil)
        #expect(BoundValue.fit(.int(3), into: .double) == .double(3))
        #expect(BoundValue.fit(.double(4.0), into: .int) == .int(4))
        #expect(BoundValue.fit(.double(4.5), into: .int) == nil)
        #expect(BoundValue.fit(.double(9.3e18), into: .int) == nil, "outside Int64")
        #expect(BoundValue.fit(.bool(true), into: .text) == nil)
        #expect(BoundValue.fit(.null, into: .bool) == .null)
        #expect(BoundValue.fit(.object(["b": 1, "a": "x"]), into: .json) == .json("{\"a\":\"x\",\"b\":1}"))
        // A string goes into a type made ahead through that type's input; nothing else does.
        #expect(BoundValue.fit(.string("2026-01-01"), into: .other("timestamp")) == .typedText("2026-01-01", type: "timestamp"))
        #expect(BoundValue.fit(.int(1), into: .other("timestamp")) == nil)
        #expect(BoundValue.fit(.string("12345678901234567890.125"), into: .numeric) == .typedText("12345678901234567890.125", type: "numeric"))
        #expect(BoundValue.fit(.int(7), into: .numeric) == .typedText("7", type: "numeric"))
        #expect(BoundValue.fit(.double(.infinity), into: .numeric) == nil)
        #expect(ColumnKind(udtName: "numeric") == .numeric)
        #expect(ColumnKind(firstValue: .null) == nil)
        #expect(ColumnKind(udtName: "int4") == .int)
        #expect(ColumnKind(udtName: "timestamptz") == .other("timestamptz"))
    }

    @Test func sqlStatesAreClassifiedByWhatTheLinkMustDo() {
        typealias C = PostgresErrorClassifier
        #expect(C.kind(sqlState: "57P01", phase: .entry(7)) == .connection)
        #expect(C.kind(sqlState: "08006", phase: .entry(7)) == .connection)
        #expect(C.kind(sqlState: "28P01", phase: .session) == .connection)
        #expect(C.kind(sqlState: "40001", phase: .entry(7)) == .retryable)
        #expect(C.kind(sqlState: "40P01", phase: .session) == .retryable)
        #expect(C.kind(sqlState: "23505", phase: .entry(7)) == .rejected(offset: 7))
        #expect(C.kind(sqlState: "22P02", phase: .entry(7)) == .rejected(offset: 7))
        #expect(C.kind(sqlState: "42804", phase: .schema(7)) == .rejected(offset: 7))
        #expect(C.kind(sqlState: "42701", phase: .schema(7)) == .retryable, "a concurrent ADD COLUMN")
        #expect(C.kind(sqlState: "42P01", phase: .entry(7)) == .retryable, "table dropped under the cache")
        #expect(C.kind(sqlState: "42501", phase: .entry(7)) == .connection, "no privilege is not the entry's fault")
        #expect(C.kind(sqlState: "23505", phase: .session) == .connection)
    }

    @Test func settingsReadPasswordFromEnvironmentAndNeverPrintIt() throws {
        let configuration = AdapterConfiguration(
            linkName: "l", streamName: "s",
            settings: ["user": "u", "database": "d", "password": "inline", "password_env": "PGPW", "port": "6543"])
        let settings = try PostgresAdapterSettings(configuration, environment: ["PGPW": "s3cret"])
        #expect(settings.password == "s3cret")
        #expect(settings.port == 6543)
        #expect(settings.primaryKey == .key)
        var orgKey = configuration
        orgKey.settings["primary_key"] = "org_key"
        #expect(try PostgresAdapterSettings(orgKey, environment: ["PGPW": "x"]).primaryKey == .orgKey)
        orgKey.settings["primary_key"] = "id"
        #expect(throws: AdapterConfigurationError.self) { try PostgresAdapterSettings(orgKey, environment: ["PGPW": "x"]) }
        #expect(!settings.description.contains("s3cret"))
        #expect(throws: AdapterConfigurationError.self) {
            try PostgresAdapterSettings(configuration, environment: [:])
        }
        let missingUser = AdapterConfiguration(linkName: "l", streamName: "s", settings: ["database": "d"])
        #expect(throws: AdapterConfigurationError(setting: "user", problem: "is required")) {
            try PostgresAdapterFactory().makeAdapter(missingUser)
        }
        #expect(PostgresAdapterFactory().name == "postgres")
    }
}
