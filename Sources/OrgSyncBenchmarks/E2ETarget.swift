import ArgumentParser
import Foundation
import OrgSyncPluginAPI
import PostgresAdapter
import SQLiteAdapter
import Synchronization

/// Where `e2e` applies: a fresh SQLite file or a fresh PostgreSQL schema for every measurement
/// (throughput, recovery, capacity, each pace), both with `primary_key: org_key`. The schemas
/// are dropped by ``cleanUp()``; the SQLite files go with the scratch directory.
final class E2ETarget: Sendable {
    enum Name: String, ExpressibleByArgument, CaseIterable, Sendable {
        case sqlite, postgres
    }

    let name: Name
    private let postgres: PostgresAdapterSettings?
    /// Unique per benchmark run, so two runs on one server never share a schema.
    private let runTag: String
    private let schemas = Mutex<[String]>([])

    /// Throws when `postgres` is asked for and the server's variables are not set.
    init(_ name: Name) throws {
        self.name = name
        runTag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        if name == .postgres {
            guard let settings = PostgresBenchmarkServer.settings() else {
                throw ValidationErrorText("e2e --target postgres: \(PostgresBenchmarkServer.missingMessage)")
            }
            postgres = settings
        } else {
            postgres = nil
        }
    }

    /// How the report names the target.
    var label: String { "\(name.rawValue), `primary_key: org_key`" }

    /// A new adapter on an empty target for the measurement `phase` (a short name: letters,
    /// digits, `_`); SQLite's file goes in `directory`.
    func makeAdapter(phase: String, directory: String) throws -> any OrgAdapter {
        switch name {
        case .sqlite:
            return try SQLiteAdapterFactory().makeAdapter(AdapterConfiguration(
                linkName: "e2e", streamName: "bench", settings: ["path": directory + "/target.sqlite", "primary_key": "org_key"],
                dataDirectory: directory))
        case .postgres:
            guard var settings = postgres else { throw ValidationErrorText("e2e: no PostgreSQL settings") }
            settings.schema = "bench_e2e_\(runTag)_\(phase)"
            schemas.withLock { $0.append(settings.schema) }
            return PostgresAdapter(linkName: "e2e", settings: settings)
        }
    }

    /// Drops every schema this run made (PostgreSQL); nothing to do for SQLite.
    func cleanUp() async throws {
        guard let postgres else { return }
        let made = schemas.withLock { list in
            defer { list = [] }
            return list
        }
        try await PostgresBenchmarkServer.dropSchemas(made, settings: postgres)
    }
}
