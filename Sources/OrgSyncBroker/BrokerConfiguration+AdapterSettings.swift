import OrgSyncCore
import OrgSyncPluginAPI

extension BrokerConfiguration {
    /// Checks every link's adapter (and every source's kind) and `settings` names against what the adapter declares
    /// (``OrgAdapterFactory/settings``): an unknown adapter, a setting it does not declare
    /// (`links[0].settings.primary_kye`) or a required one left out stops start-up, before any
    /// stream or link is opened. `password_env` counts as `password`.
    public func validateAdapterSettings(registry: PluginRegistry) throws(ConfigurationError) {
        for (i, link) in links.enumerated() {
            let factory: any OrgAdapterFactory
            do {
                factory = try registry.factory(named: link.adapter)
            } catch {
                throw ConfigurationError(field: "links[\(i)].adapter", problem: "\(error)")
            }
            if let problem = factory.settings.problem(names: link.settings.keys) {
                throw ConfigurationError(field: "links[\(i)].settings.\(problem.setting)", problem: "\(problem) [adapter \(link.adapter)]")
            }
            // A leased link moves between members: its target must refuse a member that lost it.
            if cluster != nil, link.node == nil, !factory.fencesOwnerEpochs {
                let problem = if let plugin = factory as? ProcessAdapterFactory {
                    "plugin \(link.adapter) speaks protocol \(plugin.manifest.protocolVersion), which does not store owner epochs: "
                        + "a link that moves between members needs protocol \(PluginWireProtocol.fencingVersion); pin the link to a member (node:) or upgrade the plugin"
                } else {
                    "adapter \(link.adapter) does not store owner epochs with the target's position, so its target could not refuse "
                        + "a member that lost the link: a link that moves between members needs one that does (sqlite, postgres, "
                        + "a plugin of protocol \(PluginWireProtocol.fencingVersion)); pin the link to a member (node:)"
                }
                throw ConfigurationError(field: "links[\(i)].adapter", problem: problem)
            }
        }
        for (i, source) in sources.enumerated() {
            guard let factory = registry.sourceFactory(kind: source.kind) else {
                let known = registry.sourceKinds.isEmpty ? "none" : registry.sourceKinds.joined(separator: ", ")
                throw ConfigurationError(field: "sources[\(i)].kind", problem: "unknown source kind \(source.kind) (known: \(known))")
            }
            if let problem = factory.settings.problem(names: source.settings.keys) {
                throw ConfigurationError(field: "sources[\(i)].settings.\(problem.setting)", problem: "\(problem) [source kind \(source.kind)]")
            }
        }
    }
}
