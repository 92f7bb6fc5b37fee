import ArgumentParser
import Foundation
import OrgSyncAPI

/// `orgsync cluster`: the members of a running cluster member's cluster, and where its links run.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Show a cluster's live members and, per link and capture source, the member that runs it and its owner epoch.",
        discussion: "Ask any member. Exit 1 if a leased link or source has no owner now (between a member's loss and the next one's round).")
    @OptionGroup var broker: BrokerOptions

    func run() async throws {
        var allOwned = true
        try await reportingFailures("cluster") {
            let cluster = try await broker.client().get(APIRoutes.cluster.path(), as: ClusterBody.self)
            allOwned = cluster.links.allSatisfy { $0.owner != nil } && cluster.sources.allSatisfy { $0.owner != nil }
            if broker.json {
                printLine(String(decoding: (try? APIJSON.encoder().encode(cluster)) ?? Data(), as: UTF8.self))
                return
            }
            printLine("member \(cluster.node); live members: \(cluster.members.joined(separator: ", ")); lease \(cluster.leaseMs) ms")
            let header = ["LINK", "PLACEMENT", "OWNER", "OWNER EPOCH"]
            let rows = cluster.links.map { link in
                [link.link, link.placement, link.owner ?? "(none now)", link.ownerEpoch.map(String.init) ?? "-"]
            }
            printLine(tableLines([header] + rows).joined(separator: "\n"))
            if !cluster.sources.isEmpty {
                let sourceRows = cluster.sources.map { source in
                    [source.source, source.placement, source.owner ?? "(none now)", source.ownerEpoch.map(String.init) ?? "-"]
                }
                printLine(tableLines([["SOURCE", "PLACEMENT", "OWNER", "OWNER EPOCH"]] + sourceRows).joined(separator: "\n"))
            }
        }
        if !allOwned { throw ExitCodes.problemFound }
    }
}
