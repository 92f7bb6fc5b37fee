import Hummingbird
import OrgSyncAPI
import OrgSyncBroker

/// `GET /v1/cluster`: the members alive now and where every link and source runs (404 outside a cluster;
/// 503 when the cluster's buckets cannot be read).
func addClusterRoutes(to routes: RouteGroups, broker: Broker) {
    routes.produce.get(APIRoutes.cluster) { _, _ -> Response in
        guard let cluster = broker.configuration.cluster else {
            throw APIError.notFound("this broker is not a member of a cluster (its configuration has no cluster: section)")
        }
        let view: LeaseView
        if let ownership = broker.links.ownership {
            do {
                view = try await ownership.view()
            } catch {
                var unavailable = APIError(.serviceUnavailable, code: "cluster_unavailable", "the cluster's leases cannot be read now: \(error)")
                unavailable.headers[.retryAfter] = "1"
                throw unavailable
            }
        } else {
            view = LeaseView(members: [cluster.node], holders: [:])  // no leased links: no leases kept
        }
        return jsonResponse(ClusterBody(
            node: cluster.node, leaseMs: cluster.leaseMs, members: view.members,
            links: broker.configuration.links.map { link in
                let placed = Placement(node: link.node, holder: view.holders[link.name])
                return ClusterLinkBody(link: link.name, placement: placed.placement, owner: placed.owner, ownerEpoch: placed.ownerEpoch)
            },
            sources: broker.configuration.sources.map { source in
                let placed = Placement(node: source.node, holder: view.holders[broker.configuration.leaseKey(source: source.name)])
                return ClusterSourceBody(source: source.name, placement: placed.placement, owner: placed.owner, ownerEpoch: placed.ownerEpoch)
            }))
    }
}

/// Where a link or source runs: pinned to the member it names, or leased to its lease's holder
/// (none between two holders; no epoch in the instant the holder has not written it yet).
private struct Placement {
    var placement: String
    var owner: String?
    var ownerEpoch: UInt64?

    init(node: String?, holder: LeaseHolder?) {
        if let node {
            (placement, owner, ownerEpoch) = ("pinned", node, nil)
        } else {
            (placement, owner, ownerEpoch) = ("leased", holder?.owner, holder.flatMap { $0.epoch == 0 ? nil : $0.epoch })
        }
    }
}
