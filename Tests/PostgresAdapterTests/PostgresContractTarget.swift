// The generic adapter contract (branch `adapters`, Tests/OrgSyncAdapterContract) run against
// the PostgreSQL adapter. Compiled when the package gives this target the contract module
// and defines ORGSYNC_ADAPTER_CONTRACT (see the lead's merge of both branches).
#if ORGSYNC_ADAPTER_CONTRACT
import Foundation
import Logging
import OrgSyncAdapterContract
import OrgSyncPluginAPI
import PostgresAdapter
import OrgSyncTestPostgres
import PostgresNIO
import Testing

/// One database of its own per check, on the `.ci/postgres.sh` server; "dead" is that database
/// dropped with its connections terminated (the server itself stays up for the other tests).
struct PostgresContractTarget: AdapterContractTarget {
    let settings: PostgresAdapterSettings
    let admin: PostgresAdapterSettings
    let factory: any OrgAdapterFactory = PostgresAdapterFactory()

    static func make() async throws -> PostgresContractTarget {
        let admin = try TestPostgres.settings(schema: "public")
        var settings = admin
        settings.database = "orgsync_contract_\(UInt32.random(in: 0...UInt32.max))"
        let connection = try await TestPostgres.connect(admin)
        do {
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \"\(settings.database)\""), logger: Logger(label: "test"))
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
        return PostgresContractTarget(settings: settings, admin: admin)
    }

    func configuration(linkName: String, streamName: String) -> AdapterConfiguration {
        var values = [
            "host": settings.host, "port": String(settings.port), "user": settings.user, "database": settings.database,
            "connect_timeout_ms": "2000", "query_timeout_ms": "10000",
        ]
        if let password = settings.password { values["password"] = password }
        return AdapterConfiguration(linkName: linkName, streamName: streamName, settings: values)
    }

    func rows(object: String) async throws -> [ContractRow] {
        let connection = try await TestPostgres.connect(settings)
        var rows: [ContractRow] = []
        do {
            let exists = try await connection.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = \(object)")
            if exists == 1 {
                let sequence = try await connection.query(
                    PostgresQuery(unsafeSQL: "SELECT to_jsonb(t)::text FROM \"public\".\"\(object.replacingOccurrences(of: "\"", with: "\"\""))\" t"),
                    logger: Logger(label: "test"))
                for try await json in sequence.decode(String.self) {
                    var fields = try JSONDecoder().decode([String: JSONValue].self, from: Data(json.utf8))
                    let key = fields.removeValue(forKey: "key")?.stringValue ?? ""
                    fields.removeValue(forKey: "org")
                    fields.removeValue(forKey: "ts")
                    rows.append(ContractRow(key: key, fields: fields.filter { $0.value != .null }))
                }
            }
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
        return rows
    }

    func makeDead() async throws {
        let connection = try await TestPostgres.connect(admin)
        do {
            try await connection.query(PostgresQuery(unsafeSQL: "DROP DATABASE \"\(settings.database)\" WITH (FORCE)"), logger: Logger(label: "test"))
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
    }

    func tearDown() async {
        guard let connection = try? await TestPostgres.connect(admin) else { return }
        _ = try? await connection.query(
            PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \"\(settings.database)\" WITH (FORCE)"), logger: Logger(label: "test"))
        try? await connection.close()
    }
}

@Suite(.enabled(if: TestPostgres.shouldRun, TestPostgres.skipMessage))
struct PostgresAdapterContractTests {
    @Test(arguments: AdapterContract.Check.allCases)
    func contract(_ check: AdapterContract.Check) async throws {
        try await AdapterContract { try await PostgresContractTarget.make() }.run(check)
    }
}
#endif
