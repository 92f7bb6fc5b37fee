import ArgumentParser
import Foundation
import OrgSyncAPI

/// `orgsync sources`: the capture sources of a running broker.
struct SourcesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sources",
        abstract: "Show, pause and resume the capture sources of a running broker.",
        subcommands: [List.self, Suspend.self, Resume.self],
        defaultSubcommand: List.self
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show every source (or one): state, position in its database, WAL held back, last error.",
            discussion: "Exit 1 if a source is not active.")
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "Only this source.") var source: String?

        func run() async throws {
            var allActive = true
            try await reportingFailures("sources") {
                let client = try broker.client()
                let sources: [SourceStatusBody]
                if let source {
                    sources = [try await client.get(APIRoutes.source.path(["source": source]), as: SourceStatusBody.self)]
                } else {
                    sources = try await client.get(APIRoutes.sources.path(), as: SourceList.self).sources
                }
                allActive = sources.allSatisfy { $0.state == "active" && $0.running }
                if broker.json {
                    printLine(String(decoding: (try? APIJSON.encoder().encode(sources)) ?? Data(), as: UTF8.self))
                    return
                }
                let header = ["SOURCE", "STREAM", "STATE", "POSITION", "LAG", "LAG TIME", "APPENDED", "LAST ERROR"]
                let rows = sources.map { source -> [String] in
                    let state: String = source.running ? source.state : "stopped"
                    let position: String = source.positionLsn.map { "\($0)#\(source.positionChange ?? 0)" } ?? "-"
                    let lagBytes: String = source.lagBytes.map(Self.bytes) ?? "-"
                    let lagTime: String = source.lagMs.map { "\($0) ms" } ?? "-"
                    return [source.name, source.stream, state, position, lagBytes, lagTime, String(source.appendedEntries), source.lastError ?? ""]
                }
                printLine(tableLines([header] + rows).joined(separator: "\n"))
            }
            if !allActive { throw ExitCodes.problemFound }
        }

        static func bytes(_ count: UInt64) -> String {
            if count < 1 << 10 { return "\(count) B" }
            if count < 1 << 20 { return "\(count >> 10) KiB" }
            if count < 1 << 30 { return "\(count >> 20) MiB" }
            return "\(count >> 30) GiB"
        }
    }

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pause a source: nothing is read, its slot keeps the position; remembered across restarts. Needs an admin token.")
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "The source.") var source: String

        func run() async throws {
            try await reportingFailures("sources suspend") {
                let data = try await broker.client().send("POST", APIRoutes.sourceSuspend.path(["source": source]))
                let status = try broker.client().decode(data, as: SourceStatusBody.self)
                printLine(broker.json ? String(decoding: data, as: UTF8.self) : "\(source): \(status.state)")
            }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Resume a source: it verifies its database with K probes first, unless --force. Needs an admin token.")
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "The source.") var source: String
        @Flag(help: "Resume at once, without verifying the database.") var force = false

        func run() async throws {
            try await reportingFailures("sources resume") {
                let data = try await broker.client().send("POST", APIRoutes.sourceResume.path(["source": source]) + "?force=\(force)")
                let status = try broker.client().decode(data, as: SourceStatusBody.self)
                printLine(broker.json ? String(decoding: data, as: UTF8.self) : "\(source): \(status.state)")
            }
        }
    }
}
