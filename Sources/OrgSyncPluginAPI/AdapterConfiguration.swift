/// What an adapter is told about its link: names, and its own settings from the broker's
/// configuration file (the link's `settings` table), as strings.
public struct AdapterConfiguration: Sendable, Hashable {
    /// The link this adapter serves. Use it as the row key of an offsets table.
    public var linkName: String
    /// The stream the link reads.
    public var streamName: String
    /// Adapter-specific settings (`path`, `url`, `table_prefix`, …). Values are strings; use the
    /// typed accessors, which throw ``AdapterConfigurationError`` naming the setting.
    public var settings: [String: String]
    /// Directory the broker keeps its state in; relative paths in settings resolve against it.
    public var dataDirectory: String

    public init(linkName: String, streamName: String, settings: [String: String] = [:], dataDirectory: String = ".") {
        self.linkName = linkName
        self.streamName = streamName
        self.settings = settings
        self.dataDirectory = dataDirectory
    }

    /// A required string setting.
    public func string(_ name: String) throws(AdapterConfigurationError) -> String {
        guard let value = settings[name], !value.isEmpty else {
            throw AdapterConfigurationError(setting: name, problem: "is required")
        }
        return value
    }

    /// An optional string setting with a default.
    public func string(_ name: String, default defaultValue: String) -> String {
        settings[name].flatMap { $0.isEmpty ? nil : $0 } ?? defaultValue
    }

    /// An optional integer setting with a default, checked against `range`.
    public func int(_ name: String, default defaultValue: Int, in range: ClosedRange<Int> = Int.min...Int.max)
        throws(AdapterConfigurationError) -> Int
    {
        guard let text = settings[name] else { return defaultValue }
        guard let value = Int(text) else {
            throw AdapterConfigurationError(setting: name, problem: "must be an integer, not \"\(text)\"")
        }
        guard range.contains(value) else {
            throw AdapterConfigurationError(setting: name, problem: "must be in \(range.lowerBound)...\(range.upperBound), not \(value)")
        }
        return value
    }

    /// A path setting, resolved against ``dataDirectory`` when relative. A relative path must
    /// stay inside the data directory (`../../x` is refused, naming the setting): an absolute
    /// path is the operator's explicit choice of a place outside it.
    public func path(_ name: String, default defaultValue: String? = nil) throws(AdapterConfigurationError) -> String {
        let value: String
        if let defaultValue { value = string(name, default: defaultValue) } else { value = try string(name) }
        if value.hasPrefix("/") { return value }
        guard Self.staysInside(relativePath: value) else {
            throw AdapterConfigurationError(
                setting: name,
                problem: "\"\(value)\" leaves the data directory; use a path inside it, or an absolute path to choose a place outside it")
        }
        return dataDirectory.hasSuffix("/") ? dataDirectory + value : dataDirectory + "/" + value
    }
}

extension AdapterConfiguration {
    /// Whether a relative path, taken lexically, never climbs above its starting directory.
    static func staysInside(relativePath: String) -> Bool {
        var depth = 0
        for component in relativePath.split(separator: "/", omittingEmptySubsequences: true) {
            switch component {
            case ".": continue
            case "..":
                depth -= 1
                if depth < 0 { return false }
            default: depth += 1
            }
        }
        return true
    }
}

/// A setting of an adapter is missing or invalid.
public struct AdapterConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public var setting: String
    public var problem: String

    public init(setting: String, problem: String) {
        self.setting = setting
        self.problem = problem
    }

    public var description: String { "setting \"\(setting)\" \(problem)" }
}
