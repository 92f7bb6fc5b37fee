import OrgSyncPluginAPI
import PostgresAdapter
import SQLiteAdapter
import WebhookAdapter

/// The first-party adapters compiled into this executable, registered by name. OrgSyncCore does
/// not depend on plugin targets; the executable hands these to `PluginRegistry`.
enum BuiltinAdapters {
    static var factories: [any OrgAdapterFactory] {
        [SQLiteAdapterFactory(), PostgresAdapterFactory(), WebhookAdapterFactory()]
    }

    /// The capture sources compiled in, by kind.
    static var sources: [any ChangeSourceFactory] { [PostgresSourceFactory()] }
}
