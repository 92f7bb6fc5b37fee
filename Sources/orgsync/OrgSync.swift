import ArgumentParser

@main
struct OrgSync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orgsync",
        abstract: "A durable broker that keeps databases (orgs) in sync across unreliable links.",
        discussion: """
            Exit codes: 0 success; 1 the command ran and found a problem (e.g. `log verify` found \
            corruption, `produce` rejected a line); 2 bad usage or configuration; 3 the data \
            directory or stream could not be opened (locked, corrupt, I/O error).
            """,
        subcommands: [
            ServeCommand.self, ProduceCommand.self, StatusCommand.self, LinksCommand.self, CursorCommand.self,
            SourcesCommand.self, ClusterCommand.self, LogCommand.self, PluginsCommand.self,
        ]
    )

    /// ArgumentParser's own entry point, except that usage errors exit 2 as documented (its
    /// default is 64, EX_USAGE): an unknown option, a missing argument, a `ValidationError`.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            printError(fullMessage(for: error))
            exit(withError: ExitCodes.usage)
        }
    }
}

/// Options shared by every command that works on a data directory.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "Directory holding the broker's state (streams, cursors).")
    var dataDir: String = "data/state"

    @Option(name: .long, help: "Stream name (letters, digits, '.', '_', '-').")
    var stream: String = "events"

    var absoluteDataDir: String {
        if dataDir.hasPrefix("/") { return dataDir }
        return currentDirectory() + "/" + dataDir
    }
}

/// Exit codes, as documented in `orgsync --help`.
enum ExitCodes {
    static let problemFound = ExitCode(1)
    static let usage = ExitCode(2)
    static let cannotOpen = ExitCode(3)
}
