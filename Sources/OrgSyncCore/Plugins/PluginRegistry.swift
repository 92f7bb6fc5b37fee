import Foundation
import Logging
import OrgSyncPluginAPI

/// Every adapter the broker can load, by name: first-party factories compiled in, and
/// out-of-process plugins found in a plugins directory.
///
/// ```swift
/// let registry = PluginRegistry(
///     builtins: [SQLiteAdapterFactory(), PostgresAdapterFactory(), WebhookAdapterFactory()],
///     pluginsDirectory: "/var/lib/orgsync/plugins", logger: logger)
/// for problem in registry.problems { logger.error("\(problem)") }
/// let adapter = try registry.makeAdapter(named: link.adapter, configuration: adapterConfiguration)
/// ```
///
/// Discovery reads each subdirectory of the plugins directory (dot-directories are skipped);
/// one with a valid `plugin.json` becomes a ``ProcessAdapterFactory``, one without becomes an
/// entry of ``problems``; a broken plugin never stops the others from loading. A plugin cannot
/// take the name of a builtin; of two plugins with one name, the first in directory order wins.
public struct PluginRegistry: Sendable {
    /// Factories by name, builtins and plugins.
    private let factories: [String: any OrgAdapterFactory]
    /// What ``listings`` shows.
    public let listings: [PluginListing]
    /// Plugin directories that could not be loaded, in directory order.
    public let problems: [PluginManifestError]
    /// Capture source factories by kind (first-party only).
    private let sourceFactories: [String: any ChangeSourceFactory]

    /// - Parameters:
    ///   - builtins: first-party factories; their names must be unique (a later one with the name
    ///     of an earlier one is reported as a problem and ignored).
    ///   - pluginsDirectory: where third-party plugins live, or nil for builtins only.
    ///   - processLimits: timeouts and line limits every out-of-process adapter gets.
    ///   - logger: gets plugin processes' stderr lines and lifecycle events.
    ///   - sources: first-party capture source factories (``ChangeSourceFactory``), by their kind.
    public init(
        builtins: [any OrgAdapterFactory], sources: [any ChangeSourceFactory] = [], pluginsDirectory: String? = nil,
        processLimits: PluginProcessLimits = PluginProcessLimits(), logger: Logger
    ) {
        var factories: [String: any OrgAdapterFactory] = [:]
        var listings: [PluginListing] = []
        var problems: [PluginManifestError] = []
        for factory in builtins {
            guard factories[factory.name] == nil else {
                problems.append(PluginManifestError(.duplicateName, directory: "(builtin)", "two builtin adapters are named \(factory.name)"))
                continue
            }
            factories[factory.name] = factory
            listings.append(PluginListing(name: factory.name, version: factory.version, origin: .builtin))
        }
        if let pluginsDirectory {
            // Plugins run in their own directory, so their paths must not depend on our cwd.
            let absolute = pluginsDirectory.hasPrefix("/")
                ? pluginsDirectory : FileManager.default.currentDirectoryPath + "/" + pluginsDirectory
            let (found, failed) = Self.discover(URL(fileURLWithPath: absolute).standardizedFileURL.path)
            problems += failed
            for (directory, manifest) in found {
                guard factories[manifest.name] == nil else {
                    let owner = listings.first { $0.name == manifest.name }?.origin.description ?? "another plugin"
                    problems.append(PluginManifestError(
                        .duplicateName, directory: directory, field: "name", "\"\(manifest.name)\" is already taken by \(owner)"))
                    continue
                }
                factories[manifest.name] = ProcessAdapterFactory(
                    manifest: manifest, directory: directory, limits: processLimits, logger: logger)
                listings.append(PluginListing(
                    name: manifest.name, version: manifest.version, origin: .external(directory: directory),
                    protocolVersion: manifest.protocolVersion, description: manifest.description))
            }
        }
        self.factories = factories
        self.sourceFactories = Dictionary(sources.map { ($0.kind, $0) }, uniquingKeysWith: { first, _ in first })
        self.listings = listings.sorted { $0.name < $1.name }
        self.problems = problems
    }

    /// The capture source factory of `kind`, or nil.
    public func sourceFactory(kind: String) -> (any ChangeSourceFactory)? { sourceFactories[kind] }

    /// The source kinds this broker can capture from.
    public var sourceKinds: [String] { sourceFactories.keys.sorted() }

    /// The factory registered as `name`.
    public func factory(named name: String) throws(PluginRegistryError) -> any OrgAdapterFactory {
        guard let factory = factories[name] else {
            throw PluginRegistryError(adapter: name, known: listings.map(\.name))
        }
        return factory
    }

    /// A new adapter for one link from the factory registered as `name`.
    public func makeAdapter(named name: String, configuration: AdapterConfiguration) throws -> any OrgAdapter {
        try factory(named: name).makeAdapter(configuration)
    }

    /// Valid plugins (directory, manifest) and problems, in directory order.
    static func discover(_ pluginsDirectory: String) -> ([(String, PluginManifest)], [PluginManifestError]) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: pluginsDirectory, isDirectory: &isDirectory), isDirectory.boolValue else {
            return ([], [PluginManifestError(.pluginsDirectoryMissing, directory: pluginsDirectory, "the plugins directory does not exist")])
        }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: pluginsDirectory).sorted()
        } catch {
            return ([], [PluginManifestError(.unreadable, directory: pluginsDirectory, "cannot list the plugins directory")])
        }
        var found: [(String, PluginManifest)] = []
        var problems: [PluginManifestError] = []
        for name in names where !name.hasPrefix(".") {
            let directory = pluginsDirectory.hasSuffix("/") ? pluginsDirectory + name : pluginsDirectory + "/" + name
            var isSubdirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isSubdirectory), isSubdirectory.boolValue else {
                continue
            }
            do {
                found.append((directory, try PluginManifest.load(directory: directory)))
            } catch {
                problems.append(error)
            }
        }
        return (found, problems)
    }
}

/// One adapter the broker can load, as `orgsync plugins list` shows it.
public struct PluginListing: Sendable, Hashable, Codable {
    public enum Origin: Sendable, Hashable, Codable, CustomStringConvertible {
        /// Compiled into the broker.
        case builtin
        /// An executable plugin in this directory.
        case external(directory: String)

        public var description: String {
            switch self {
            case .builtin: "builtin"
            case .external(let directory): directory
            }
        }
    }

    public var name: String
    public var version: String
    public var origin: Origin
    /// The plugin protocol version of an external plugin; nil for a builtin.
    public var protocolVersion: Int?
    public var description: String?

    public init(name: String, version: String, origin: Origin, protocolVersion: Int? = nil, description: String? = nil) {
        self.name = name
        self.version = version
        self.origin = origin
        self.protocolVersion = protocolVersion
        self.description = description
    }
}

/// A link names an adapter the registry does not have.
public struct PluginRegistryError: Error, Sendable, Hashable, CustomStringConvertible {
    public var adapter: String
    public var known: [String]

    public var description: String {
        "no adapter named \"\(adapter)\" (known: \(known.isEmpty ? "none" : known.joined(separator: ", ")))"
    }
}

/// Timeouts and limits every out-of-process adapter runs under. Defaults suit a local database.
public struct PluginProcessLimits: Sendable, Hashable {
    public var handshakeTimeoutMs: Int
    public var requestTimeoutMs: Int
    public var applyTimeoutMs: Int
    public var exitGraceMs: Int
    public var lineBytesMax: Int
    public var stderrLineBytesMax: Int

    public init(
        handshakeTimeoutMs: Int = 10_000, requestTimeoutMs: Int = 30_000, applyTimeoutMs: Int = 120_000,
        exitGraceMs: Int = 2_000, lineBytesMax: Int = 1 << 20, stderrLineBytesMax: Int = 8 << 10
    ) {
        self.handshakeTimeoutMs = handshakeTimeoutMs
        self.requestTimeoutMs = requestTimeoutMs
        self.applyTimeoutMs = applyTimeoutMs
        self.exitGraceMs = exitGraceMs
        self.lineBytesMax = lineBytesMax
        self.stderrLineBytesMax = stderrLineBytesMax
    }
}

/// Makes ``ProcessAdapter``s for one plugin found in the plugins directory.
public struct ProcessAdapterFactory: OrgAdapterFactory {
    public let manifest: PluginManifest
    public let directory: String
    public let limits: PluginProcessLimits
    private let logger: Logger

    public var name: String { manifest.name }
    public var version: String { manifest.version }
    /// As the manifest declares them (`settings` in plugin.json), or any when it does not.
    public var settings: AdapterSettingsDeclaration { manifest.settings }
    /// A plugin of protocol 3 or later stores owner epochs (the contract check `ownerFencing` tests it).
    public var fencesOwnerEpochs: Bool { manifest.protocolVersion >= PluginWireProtocol.fencingVersion }

    public init(manifest: PluginManifest, directory: String, limits: PluginProcessLimits = PluginProcessLimits(), logger: Logger) {
        self.manifest = manifest
        self.directory = directory
        self.limits = limits
        self.logger = logger
    }

    public func makeAdapter(_ configuration: AdapterConfiguration) throws -> any OrgAdapter {
        ProcessAdapter(
            configuration: ProcessAdapterConfiguration(
                pluginName: manifest.name, command: manifest.command, workingDirectory: directory, limits: limits),
            adapterConfiguration: configuration, logger: logger)
    }
}
