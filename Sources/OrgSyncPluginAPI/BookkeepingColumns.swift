/// The three columns a SQL adapter keeps in each table beside an entry's fields: the entry's
/// `key`, `org` and `ts`.
///
/// By default they are named `key`, `org` and `ts`, and a field with one of those names is
/// rejected (it would overwrite the column). The settings `key_column`, `org_column` and
/// `ts_column` rename them, so a table whose own columns are called `key`, `org` or `ts` (a
/// captured source table, say) keeps them as fields: with `key_column: orgsync_key`,
/// `org_column: orgsync_org`, `ts_column: orgsync_ts` every source column round-trips.
public struct BookkeepingColumns: Sendable, Hashable {
    public var key: String
    public var org: String
    public var ts: String

    /// `key`, `org`, `ts`.
    public static let standard = BookkeepingColumns(key: "key", org: "org", ts: "ts")
    /// The settings that name them, in the order key, org, ts.
    public static let settingNames = ["key_column", "org_column", "ts_column"]

    public init(key: String, org: String, ts: String) {
        self.key = key
        self.org = org
        self.ts = ts
    }

    /// Reads `key_column`, `org_column` and `ts_column` (each defaults to its standard name).
    /// `nameProblem` is the adapter's rule for a column name (why a name cannot be one, or nil);
    /// `ignoringCase` says whether the target compares column names without case (SQLite), so
    /// `Key` and `key` count as one name.
    public init(
        _ configuration: AdapterConfiguration, ignoringCase: Bool, nameProblem: (String) -> String?
    ) throws(AdapterConfigurationError) {
        let names = zip(Self.settingNames, Self.standard.names).map { configuration.string($0, default: $1) }
        for (setting, name) in zip(Self.settingNames, names) {
            if let problem = nameProblem(name) {
                throw AdapterConfigurationError(setting: setting, problem: "\"\(name.prefix(80))\" \(problem)")
            }
        }
        let compared = ignoringCase ? names.map { $0.lowercased() } : names
        guard Set(compared).count == compared.count else {
            throw AdapterConfigurationError(
                setting: Self.settingNames[compared.lastIndex { name in compared.filter { $0 == name }.count > 1 } ?? 0],
                problem: "names the same column as another of key_column, org_column, ts_column (\(names.joined(separator: ", ")))")
        }
        self.init(key: names[0], org: names[1], ts: names[2])
    }

    /// key, org, ts.
    public var names: [String] { [key, org, ts] }

    /// Whether `name` is one of the three (by the target's comparison of names).
    public func contains(_ name: String, ignoringCase: Bool) -> Bool {
        ignoringCase ? names.contains { $0.lowercased() == name.lowercased() } : names.contains(name)
    }

    /// The settings as `key_column=… org_column=… ts_column=…`, for an adapter's description.
    public var summary: String { zip(Self.settingNames, names).map { "\($0)=\($1)" }.joined(separator: " ") }
}
