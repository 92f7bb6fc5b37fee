import ArgumentParser
import Foundation
import Logging
import OrgSyncCore

/// `orgsync plugins …`: the adapters this broker can load.
struct PluginsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract: "Show the adapters this broker can load.",
        subcommands: [List.self],
        defaultSubcommand: List.self
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List builtin adapters and the plugins found in the plugins directory.",
            discussion: """
                Each subdirectory of the plugins directory is one plugin with a plugin.json manifest \
                (see plugins/PROTOCOL.md). Plugins that cannot be loaded are listed with the reason; \
                the command then exits with status 1.
                """
        )

        @Option(name: .customLong("plugins-dir"), help: "Directory of out-of-process plugins, one subdirectory each.")
        var pluginsDirectory: String?

        @Flag(help: "Print JSON instead of a table.")
        var json = false

        func run() async throws {
            let registry = PluginRegistry(
                builtins: BuiltinAdapters.factories, sources: BuiltinAdapters.sources, pluginsDirectory: pluginsDirectory,
                logger: Logger(label: "orgsync.plugins"))
            if json {
                print(try Self.renderJSON(registry))
            } else {
                print(Self.renderTable(registry), terminator: "")
                if !registry.problems.isEmpty {
                    let report = registry.problems.map { "invalid \($0)\n" }.joined()
                    FileHandle.standardError.write(Data(("\n" + report).utf8))
                }
            }
            if !registry.problems.isEmpty { throw ExitCode(1) }
        }

        static func renderTable(_ registry: PluginRegistry) -> String {
            let header = ["NAME", "VERSION", "PROTOCOL", "ORIGIN"]
            let rows = registry.listings.map {
                [$0.name, $0.version, $0.protocolVersion.map(String.init) ?? "in-process", $0.origin.description]
            }
            let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
            return ([header] + rows).map { row in
                row.indices.map { column in
                    column == row.count - 1 ? row[column] : row[column].padding(toLength: widths[column], withPad: " ", startingAt: 0)
                }.joined(separator: "  ") + "\n"
            }.joined()
        }

        struct Listing: Encodable {
            var adapters: [Adapter]
            var problems: [Problem]
        }

        struct Adapter: Encodable {
            var name: String
            var version: String
            /// `builtin` or `external`.
            var origin: String
            /// The plugin's directory, for an external plugin.
            var directory: String?
            var protocolVersion: Int?
            var description: String?
        }

        struct Problem: Encodable {
            var directory: String
            var code: String
            var field: String?
            var message: String
        }

        static func renderJSON(_ registry: PluginRegistry) throws -> String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let listing = Listing(
                adapters: registry.listings.map { listing in
                    var directory: String?
                    if case .external(let path) = listing.origin { directory = path }
                    return Adapter(
                        name: listing.name, version: listing.version, origin: directory == nil ? "builtin" : "external",
                        directory: directory, protocolVersion: listing.protocolVersion, description: listing.description)
                },
                problems: registry.problems.map {
                    Problem(directory: $0.directory, code: $0.code.rawValue, field: $0.field, message: $0.message)
                })
            return String(decoding: try encoder.encode(listing), as: UTF8.self)
        }
    }
}
