import Foundation
import GRDB
import OrgSyncAdapterContract
import OrgSyncPluginAPI

/// A fresh temporary directory, removed by ``remove()``.
struct TemporaryDirectory: Sendable {
    let path: String

    init(_ label: String = "orgsync-test") throws {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Reads back what an adapter wrote into a SQLite file with the table-per-object mapping.
enum SQLiteReadBack {
    /// Rows of table `object`, key plus every other column but org/ts, as JSON values
    /// (TEXT → string, INTEGER → int, REAL → double, NULL → null).
    static func rows(path: String, object: String) throws -> [ContractRow] {
        var configuration = Configuration()
        configuration.readonly = true
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        defer { try? queue.close() }
        return try queue.read { db in
            guard try db.tableExists(object) else { return [] }
            return try Row.fetchAll(db, sql: "SELECT * FROM \"\(object)\"").map { row in
                var fields: [String: JSONValue] = [:]
                var key = ""
                for (column, value) in row {
                    switch column {
                    case "key": key = String.fromDatabaseValue(value) ?? ""
                    case "org", "ts": continue
                    default: fields[column] = json(value)
                    }
                }
                return ContractRow(key: key, fields: fields)
            }
        }
    }

    static func json(_ value: DatabaseValue) -> JSONValue {
        switch value.storage {
        case .null: .null
        case .int64(let number): .int(number)
        case .double(let number): .double(number)
        case .string(let text): .string(text)
        case .blob(let data): .string(data.base64EncodedString())
        }
    }

    /// Kills a file-based target: its directory becomes a regular file, so the database can
    /// neither be found nor created again.
    static func makeDirectoryDead(_ directory: String) throws {
        try FileManager.default.removeItem(atPath: directory)
        guard FileManager.default.createFile(atPath: directory, contents: Data("not a directory".utf8)) else {
            throw CocoaError(.fileWriteUnknown)
        }
    }
}

/// A fresh SQLite file in a temp directory, written by the in-process `sqlite` adapter.
struct SQLiteContractTarget: AdapterContractTarget {
    let directory: TemporaryDirectory
    let targetDirectory: String
    var factory: any OrgAdapterFactory { SQLiteAdapterFactoryProxy.factory }

    init() throws {
        directory = try TemporaryDirectory("orgsync-sqlite-contract")
        targetDirectory = directory.path + "/target"
        try FileManager.default.createDirectory(atPath: targetDirectory, withIntermediateDirectories: true)
    }

    var databasePath: String { targetDirectory + "/org.sqlite" }

    func configuration(linkName: String, streamName: String) -> AdapterConfiguration {
        AdapterConfiguration(
            linkName: linkName, streamName: streamName, settings: ["path": "target/org.sqlite"],
            dataDirectory: directory.path)
    }

    func rows(object: String) async throws -> [ContractRow] {
        try SQLiteReadBack.rows(path: databasePath, object: object)
    }

    func makeDead() async throws {
        try SQLiteReadBack.makeDirectoryDead(targetDirectory)
    }

    func tearDown() async {
        directory.remove()
    }
}
