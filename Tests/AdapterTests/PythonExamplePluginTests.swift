import Foundation
import Logging
import OrgSyncAdapterContract
import OrgSyncCore
import OrgSyncPluginAPI
import Testing

/// The example plugin of `plugins/examples/python-sqlite`, loaded through the registry and run
/// out of process: it must pass the same contract as the built-in SQLite adapter.
@Suite("Python example plugin (out of process)", .enabled(if: PythonPlugin.python3Available, "python3 is not on PATH: the Python example plugin cannot run here"))
struct PythonExamplePluginTests {
    @Test("passes the adapter contract", arguments: AdapterContract.Check.allCases)
    func contract(_ check: AdapterContract.Check) async throws {
        try await AdapterContract { try PythonSQLiteContractTarget() }.run(check)
    }

    @Test("is found and listed by the registry from its manifest")
    func listed() throws {
        let registry = PluginRegistry(builtins: [], pluginsDirectory: PythonPlugin.examplesDirectory, logger: PythonPlugin.logger)
        #expect(registry.problems.isEmpty, "\(registry.problems)")
        let listing = try #require(registry.listings.first { $0.name == "python-sqlite" })
        #expect(listing.protocolVersion == 3)
        #expect(listing.origin == .external(directory: PythonPlugin.examplesDirectory + "/python-sqlite"))
    }

    @Test("gets entries exactly as produced, even pretty-printed over several lines")
    func multiLineRawEntry() async throws {
        let target = try PythonSQLiteContractTarget()
        defer { target.directory.remove() }
        let produced = "{\n  \"org\": \"o\",\r\n  \"object\": \"Note\",\n  \"op\": \"upsert\",\n  \"key\": \"n1\",\n  \"ts\": \"t\",\n  \"fields\": {\"Body\": \"line1\\nline2 \\\"quoted\\\"\", \"Extra\": {\"a\": [1, 2]}},\n  \"trace\": \"kept\"\n}"
        let entry = try Entry.parse(Array(produced.utf8), offset: 0)
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: "raw", streamName: "s"))
        try await adapter.open()
        try await adapter.apply(EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry]))
        await adapter.close()
        let rows = try await target.rows(object: "Note")
        #expect(rows == [ContractRow(key: "n1", fields: ["Body": .string("line1\nline2 \"quoted\""), "Extra": .string("{\"a\":[1,2]}")])])
    }

    @Test("writes the same rows as the built-in adapter for the same batch", arguments: ["key", "org_key"])
    func sameRowsAsBuiltin(primaryKey: String) async throws {
        let python = try PythonSQLiteContractTarget()
        let builtin = try SQLiteContractTarget()
        defer {
            python.directory.remove()
            builtin.directory.remove()
        }
        let fields: [String: JSONValue] = [
            "Text": .string("ünïcode"), "Count": .int(-3), "Ratio": .double(2.25), "Flag": .bool(false),
            "Nothing": .null, "Tags": .array([.string("a"), .int(2)]),
        ]
        let batch = EntryBatch(stream: "s", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [
            Entry(offset: 0, org: "acme", object: "Thing", op: .insert, key: "k1", ts: "t0", fields: fields),
            Entry(offset: 1, org: "acme", object: "Thing", op: .upsert, key: "k2", ts: "t1", fields: ["Count": .int(7)]),
            Entry(offset: 2, org: "acme", object: "Thing", op: .upsert, key: "k1", ts: "t2", fields: ["Text": .string("again")]),
            Entry(offset: 3, org: "globex", object: "Thing", op: .upsert, key: "k1", ts: "t3", fields: ["Count": .int(99)]),
            Entry(offset: 4, org: "globex", object: "Thing", op: .upsert, key: "k3", ts: "t4", fields: ["Count": .int(1)]),
            Entry(offset: 5, org: "globex", object: "Thing", op: .delete, key: "k3", ts: "t5"),
        ])
        for target in [python as any AdapterContractTarget, builtin] {
            var configuration = target.configuration(linkName: "same", streamName: "s")
            configuration.settings["primary_key"] = primaryKey
            let adapter = try target.factory.makeAdapter(configuration)
            try await adapter.open()
            try await adapter.apply(batch)
            await adapter.close()
        }
        let fromPython = Set(try await python.rows(object: "Thing"))
        let fromBuiltin = Set(try await builtin.rows(object: "Thing"))
        #expect(fromPython.count == (primaryKey == "key" ? 2 : 3))
        #expect(fromPython == fromBuiltin)
    }
}

enum PythonPlugin {
    static let python3Available: Bool = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/python3") }
    }()

    /// `plugins/examples` of this package, found from this file's path.
    static let examplesDirectory: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("plugins/examples").path
    }()

    static let logger = Logger(label: "orgsync.test.python-plugin")

    static let registry = PluginRegistry(builtins: [], pluginsDirectory: examplesDirectory, logger: logger)
}

/// A SQLite file written by the Python example plugin through ``ProcessAdapter``.
struct PythonSQLiteContractTarget: AdapterContractTarget {
    let file: SQLiteContractTarget
    let factory: any OrgAdapterFactory

    init() throws {
        file = try SQLiteContractTarget()
        factory = try PythonPlugin.registry.factory(named: "python-sqlite")
    }

    var directory: TemporaryDirectory { file.directory }

    func configuration(linkName: String, streamName: String) -> AdapterConfiguration {
        file.configuration(linkName: linkName, streamName: streamName)
    }

    func rows(object: String) async throws -> [ContractRow] { try await file.rows(object: object) }
    func makeDead() async throws { try await file.makeDead() }
    func tearDown() async { await file.tearDown() }
}
