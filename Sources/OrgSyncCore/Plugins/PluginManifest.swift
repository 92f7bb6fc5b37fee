#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import OrgSyncPluginAPI

/// The `plugin.json` of an out-of-process adapter: one per subdirectory of the plugins directory.
///
/// ```json
/// {
///   "name": "python-sqlite",
///   "version": "1.0.0",
///   "protocolVersion": 1,
///   "command": ["python3", "adapter.py"],
///   "description": "optional, one line",
///   "settings": { "path": "required", "primary_key": "optional", "header.": "optional" }
/// }
/// ```
///
/// `settings` is optional: when given, a link whose `settings` name anything else (or leave out
/// a required one) stops start-up naming the field; a name ending in `.` declares a family
/// (`header.` covers `header.Authorization`). Without it any setting is passed on.
///
/// `command` is argv, run in the plugin's directory: a first element containing `/` is a path
/// relative to that directory (or absolute), a bare name is looked up on `PATH`.
public struct PluginManifest: Sendable, Hashable, Codable {
    /// The name links use (`adapter = "python-sqlite"`): lowercase letters, digits, `-`, `_`.
    public var name: String
    public var version: String
    /// The version of `plugins/PROTOCOL.md` the plugin speaks.
    public var protocolVersion: Int
    public var command: [String]
    public var description: String?
    /// The settings the plugin declares, or ``AdapterSettingsDeclaration/any`` when the manifest
    /// has no `settings`.
    public var settings: AdapterSettingsDeclaration = .any

    /// The encoded form stays what it was before settings were declared.
    enum CodingKeys: String, CodingKey { case name, version, protocolVersion, command, description }

    /// The manifest's file name inside a plugin directory.
    public static let fileName = "plugin.json"
    /// Largest manifest read, in bytes.
    public static let fileBytesMax = 64 * 1024

    public init(name: String, version: String, protocolVersion: Int, command: [String], description: String? = nil) {
        self.name = name
        self.version = version
        self.protocolVersion = protocolVersion
        self.command = command
        self.description = description
    }

    /// Reads and validates `directory/plugin.json`, including that the command can be found.
    public static func load(directory: String) throws(PluginManifestError) -> PluginManifest {
        let path = directory + "/" + fileName
        guard FileManager.default.fileExists(atPath: path) else {
            throw PluginManifestError(.missingManifest, directory: directory, "no \(fileName) in the plugin directory")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PluginManifestError(.unreadable, directory: directory, "cannot read \(fileName)")
        }
        guard data.count <= fileBytesMax else {
            throw PluginManifestError(.invalidValue, directory: directory, "\(fileName) is larger than \(fileBytesMax) bytes")
        }
        let manifest = try parse(Array(data), directory: directory)
        try manifest.checkCommand(directory: directory)
        return manifest
    }

    /// Validates the manifest's JSON: every field present with its type, values in range.
    public static func parse(_ bytes: [UInt8], directory: String) throws(PluginManifestError) -> PluginManifest {
        let members: [String: JSONValue]
        do {
            members = try JSONDecoder().decode([String: JSONValue].self, from: Data(bytes))
        } catch {
            throw PluginManifestError(.invalidJSON, directory: directory, "\(fileName) is not a JSON object")
        }
        func string(_ field: String) throws(PluginManifestError) -> String {
            guard let value = members[field] else {
                throw PluginManifestError(.missingField, directory: directory, field: field, "is required")
            }
            guard case .string(let text) = value, !text.isEmpty else {
                throw PluginManifestError(.wrongType, directory: directory, field: field, "must be a non-empty string, not \(value.typeName)")
            }
            return text
        }
        let name = try string("name")
        guard name.utf8.count <= 64, name.utf8.first.map({ $0 != UInt8(ascii: "-") }) == true,
            name.utf8.allSatisfy({ (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D || $0 == 0x5F })
        else {
            throw PluginManifestError(
                .invalidValue, directory: directory, field: "name",
                "\"\(name)\" must be 1-64 lowercase ASCII letters, digits, - or _, not starting with -")
        }
        let version = try string("version")
        guard case .int(let protocolVersion)? = members["protocolVersion"] else {
            throw PluginManifestError(
                members["protocolVersion"] == nil ? .missingField : .wrongType, directory: directory, field: "protocolVersion",
                "must be an integer")
        }
        guard PluginWireProtocol.supportedVersions.contains(Int(protocolVersion)) else {
            throw PluginManifestError(
                .unsupportedProtocolVersion, directory: directory, field: "protocolVersion",
                "is \(protocolVersion); this broker speaks \(PluginWireProtocol.supportedVersions.map(String.init).joined(separator: ", "))")
        }
        guard case .array(let argv)? = members["command"] else {
            throw PluginManifestError(
                members["command"] == nil ? .missingField : .wrongType, directory: directory, field: "command",
                "must be an array of strings (argv), e.g. [\"python3\", \"adapter.py\"]")
        }
        let command = argv.compactMap(\.stringValue)
        guard !command.isEmpty, command.count == argv.count, !command[0].isEmpty else {
            throw PluginManifestError(
                .invalidValue, directory: directory, field: "command", "must be a non-empty array of strings, the first naming the program")
        }
        var description: String?
        switch members["description"] {
        case nil, .null?: description = nil
        case .string(let text)?: description = text
        case let other?:
            throw PluginManifestError(.wrongType, directory: directory, field: "description", "must be a string, not \(other.typeName)")
        }
        var manifest = PluginManifest(
            name: name, version: version, protocolVersion: Int(protocolVersion), command: command, description: description)
        manifest.settings = try parseSettings(members["settings"], directory: directory)
        return manifest
    }

    /// `"settings": {"name": "required" | "optional", …}`; absent or null accepts anything.
    static func parseSettings(_ value: JSONValue?, directory: String) throws(PluginManifestError) -> AdapterSettingsDeclaration {
        switch value {
        case nil, .null?: return .any
        case .object(let members)?:
            var settings: [AdapterSetting] = []
            for (name, kind) in members.sorted(by: { $0.key < $1.key }) {
                guard !name.isEmpty else {
                    throw PluginManifestError(.invalidValue, directory: directory, field: "settings", "a setting name must not be empty")
                }
                let required: Bool
                switch kind {
                case .string("required"): required = true
                case .string("optional"): required = false
                default:
                    throw PluginManifestError(
                        .invalidValue, directory: directory, field: "settings", "\"\(name)\" must be \"required\" or \"optional\"")
                }
                if name.hasSuffix(".") {
                    settings.append(.family(name))
                } else {
                    settings.append(required ? .required(name) : .optional(name))
                }
            }
            return AdapterSettingsDeclaration(settings)
        case let other?:
            throw PluginManifestError(
                .wrongType, directory: directory, field: "settings",
                "must be an object of setting names to \"required\" or \"optional\", not \(other.typeName)")
        }
    }

    /// Checks that `command[0]` names an executable: a path in or from the plugin directory,
    /// or a program on `PATH`.
    public func checkCommand(directory: String) throws(PluginManifestError) {
        let program = command[0]
        if program.contains("/") {
            let path = program.hasPrefix("/") ? program : directory + "/" + program
            guard access(path, X_OK) == 0 else {
                throw PluginManifestError(
                    .commandNotFound, directory: directory, field: "command",
                    "\(path) does not exist or is not executable (chmod +x, and a #! line for a script)")
            }
            return
        }
        let searchPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        let found = searchPath.split(separator: ":").contains { access("\($0)/\(program)", X_OK) == 0 }
        guard found else {
            throw PluginManifestError(.commandNotFound, directory: directory, field: "command", "\(program) is not on PATH")
        }
    }
}

/// A plugin directory the registry could not load, and why. The registry keeps going.
public struct PluginManifestError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, Codable {
        case missingManifest, unreadable, invalidJSON, missingField, wrongType, invalidValue
        case unsupportedProtocolVersion, commandNotFound, duplicateName, pluginsDirectoryMissing
    }

    public var code: Code
    /// The plugin's directory (or the plugins directory itself).
    public var directory: String
    /// The manifest field at fault, if one is.
    public var field: String?
    public var message: String

    public init(_ code: Code, directory: String, field: String? = nil, _ message: String) {
        self.code = code
        self.directory = directory
        self.field = field
        self.message = message
    }

    public var description: String {
        let location = field.map { "\(PluginManifest.fileName): \"\($0)\" " } ?? ""
        return "plugin \(directory): \(location)\(message) [\(code.rawValue)]"
    }
}
