import ArgumentParser

@main
struct OrgSync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orgsync",
        abstract: "A durable broker that keeps databases (orgs) in sync across unreliable links.",
        subcommands: [PluginsCommand.self]
    )
}
