/// The settings an adapter understands, so that the broker can refuse a link whose `settings`
/// name one it does not (`primary_kye: org_key` is a typo, not a new setting) or leave out a
/// required one, at start-up and naming the field.
///
/// ## Implementation requirements
///
/// - Declare every setting ``OrgAdapterFactory/makeAdapter(_:)`` reads, by the name it reads.
/// - Do not declare `_env` forms: the broker resolves `password_env: PGPASSWORD` into
///   `password` before the adapter sees it, and checks `password_env` as `password`.
/// - A family of settings that share a prefix (`header.Authorization`, `header.X-Tenant`) is one
///   declaration with ``AdapterSetting/family(_:)``.
/// - ``any`` (the default of ``OrgAdapterFactory/settings``) accepts every name: for adapters
///   written before settings were declared. Prefer a declaration.
public struct AdapterSettingsDeclaration: Sendable, Hashable {
    /// The declared settings, or nil when the adapter accepts any name.
    public var settings: [AdapterSetting]?

    public init(_ settings: [AdapterSetting]) {
        self.settings = settings
    }

    private init(acceptingAnything: Void) {
        self.settings = nil
    }

    /// Accepts every setting name: nothing is checked.
    public static let any = AdapterSettingsDeclaration(acceptingAnything: ())

    /// The declaration that `name` (already without an `_env` suffix) falls under, if any.
    public func declaration(of name: String) -> AdapterSetting? {
        settings?.first { $0.matches(name) }
    }

    /// The first problem with a link's setting names, in name order: a name nothing declares
    /// (`unknown`) or a required setting left out (`missing`). `names` are as written in the
    /// configuration: `x_env` counts as `x`. Nil when all is well, or for ``any``.
    public func problem(names: some Sequence<String>) -> AdapterSettingsProblem? {
        guard let settings else { return nil }
        var present = Set<String>()
        for written in names.sorted() {
            let name = Self.baseName(written)
            guard declaration(of: name) != nil else {
                return .unknown(setting: written, known: settings.map(\.description).sorted())
            }
            present.insert(name)
        }
        for setting in settings where setting.isRequired && !setting.isFamily && !present.contains(setting.name) {
            return .missing(setting: setting.name)
        }
        return nil
    }

    /// `password_env` → `password`; other names are themselves.
    public static func baseName(_ written: String) -> String {
        written.hasSuffix("_env") && written.count > 4 ? String(written.dropLast(4)) : written
    }
}

/// One declared setting of an adapter.
public struct AdapterSetting: Sendable, Hashable, CustomStringConvertible {
    /// The setting's name, or for a family its prefix (ending in `.`).
    public var name: String
    /// A link must set it (a family is never required).
    public var isRequired: Bool
    /// A family of names sharing the prefix ``name``.
    public var isFamily: Bool

    /// A setting a link must give.
    public static func required(_ name: String) -> AdapterSetting {
        AdapterSetting(name: name, isRequired: true, isFamily: false)
    }

    /// A setting with a default.
    public static func optional(_ name: String) -> AdapterSetting {
        AdapterSetting(name: name, isRequired: false, isFamily: false)
    }

    /// Every name that starts with `prefix` (e.g. `header.` for `header.Authorization`).
    public static func family(_ prefix: String) -> AdapterSetting {
        AdapterSetting(name: prefix, isRequired: false, isFamily: true)
    }

    public func matches(_ name: String) -> Bool {
        isFamily ? name.hasPrefix(self.name) && name.count > self.name.count : name == self.name
    }

    public var description: String { isFamily ? name + "NAME" : name }
}

/// What is wrong with a link's setting names.
public enum AdapterSettingsProblem: Sendable, Hashable, CustomStringConvertible {
    /// `setting` (as written) is not one the adapter declares.
    case unknown(setting: String, known: [String])
    /// A required setting is missing.
    case missing(setting: String)

    /// The setting at fault, as written in the configuration.
    public var setting: String {
        switch self {
        case .unknown(let setting, _), .missing(let setting): setting
        }
    }

    public var description: String {
        switch self {
        case .unknown(_, let known): "unknown setting of this adapter (known: \(known.joined(separator: ", ")))"
        case .missing: "is required"
        }
    }
}
