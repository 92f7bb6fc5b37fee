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
                if let node = link.node { return ClusterLinkBody(link: link.name, placement: "pinned", owner: node, ownerEpoch: nil) }
                let holder = view.holders[link.name]
                return ClusterLinkBody(
                    link: link.name, placement: "leased", owner: holder?.owner, ownerEpoch: holder.flatMap { $0.epoch == 0 ? nil : $0.epoch })
            },
            sources: broker.configuration.sources.map { source in
                if let node = source.node { return ClusterSourceBody(source: source.name, placement: "pinned", owner: node, ownerEpoch: nil) }
                let holder = view.holders[broker.configuration.leaseKey(source: source.name)]
                return ClusterSourceBody(
                    source: source.name, placement: "leased", owner: holder?.owner, ownerEpoch: holder.flatMap { $0.epoch == 0 ? nil : $0.epoch })
            }))
    }
}
