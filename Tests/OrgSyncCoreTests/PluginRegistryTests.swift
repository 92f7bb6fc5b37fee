import Foundation
import Logging
import OrgSyncCore
import OrgSyncPluginAPI
import Testing

@Suite("Plugin registry")
struct PluginRegistryTests {
    struct FakeFactory: OrgAdapterFactory {
        var name: String
        var version = "9.9.9"
        func makeAdapter(_ configuration: AdapterConfiguration) throws -> any OrgAdapter {
            throw AdapterConfigurationError(setting: "fake", problem: "is not a real adapter")
        }
    }

    /// Writes `manifest` (raw text) into `root/name/plugin.json`, plus an executable `run.sh`.
    private func plugin(_ root: String, _ name: String, _ manifest: String?) throws {
        let directory = root + "/" + name
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "#!/bin/sh\nexit 0\n".write(toFile: directory + "/run.sh", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory + "/run.sh")
        try "not executable".write(toFile: directory + "/data.txt", atomically: true, encoding: .utf8)
        if let manifest {
            try manifest.write(toFile: directory + "/plugin.json", atomically: true, encoding: .utf8)
        }
    }

    private func manifest(name: String, protocolVersion: String = "1", command: String = #"["./run.sh"]"#) -> String {
        #"{"name": "\#(name)", "version": "1.2.3", "protocolVersion": \#(protocolVersion), "command": \#(command), "description": "d"}"#
    }

    @Test("lists builtins and valid plugins, and reports each invalid plugin with its reason")
    func discovery() throws {
        let root = try PluginTestDirectory("orgsync-plugins")
        defer { root.remove() }
        try plugin(root.path, "good", manifest(name: "good"))
        try plugin(root.path, "on-path", manifest(name: "on-path", command: #"["sh", "run.sh"]"#))
        try plugin(root.path, "no-manifest", nil)
        try plugin(root.path, "bad-json", "{ name: ")
        try plugin(root.path, "no-version", #"{"name": "x", "protocolVersion": 1, "command": ["./run.sh"]}"#)
        try plugin(root.path, "string-protocol", manifest(name: "sp", protocolVersion: #""1""#))
        try plugin(root.path, "future-protocol", manifest(name: "future", protocolVersion: "7"))
        try plugin(root.path, "missing-program", manifest(name: "missing", command: #"["./nope.sh"]"#))
        try plugin(root.path, "not-executable", manifest(name: "nx", command: #"["./data.txt"]"#))
        try plugin(root.path, "unknown-program", manifest(name: "unknown", command: #"["no-such-program-xyz"]"#))
        try plugin(root.path, "empty-command", manifest(name: "empty", command: "[]"))
        try plugin(root.path, "bad-name", manifest(name: "Bad Name"))
        try plugin(root.path, "takes-builtin", manifest(name: "sqlite"))
        try plugin(root.path, "zz-duplicate", manifest(name: "good"))
        try plugin(root.path, ".hidden", nil)
        try "a file, not a plugin".write(toFile: root.path + "/README.md", atomically: true, encoding: .utf8)

        let registry = PluginRegistry(
            builtins: [FakeFactory(name: "sqlite"), FakeFactory(name: "webhook")], pluginsDirectory: root.path,
            logger: Logger(label: "test"))
        #expect(registry.listings.map(\.name) == ["good", "on-path", "sqlite", "webhook"])
        #expect(registry.listings.first { $0.name == "sqlite" }?.origin == .builtin)
        let good = try #require(registry.listings.first { $0.name == "good" })
        #expect(good.origin == .external(directory: root.path + "/good"))
        #expect(good.version == "1.2.3")
        #expect(good.protocolVersion == 1)
        #expect(good.description == "d")

        let problems = Dictionary(registry.problems.map { (URL(fileURLWithPath: $0.directory).lastPathComponent, $0) }) { a, _ in a }
        #expect(problems.count == 12, "\(registry.problems.map(\.description))")
        #expect(problems["no-manifest"]?.code == .missingManifest)
        #expect(problems["bad-json"]?.code == .invalidJSON)
        #expect(problems["no-version"]?.code == .missingField)
        #expect(problems["no-version"]?.field == "version")
        #expect(problems["string-protocol"]?.code == .wrongType)
        #expect(problems["future-protocol"]?.code == .unsupportedProtocolVersion)
        #expect(problems["future-protocol"]?.description.contains("is 7; this broker speaks 1") == true)
        #expect(problems["missing-program"]?.code == .commandNotFound)
        #expect(problems["not-executable"]?.code == .commandNotFound)
        #expect(problems["unknown-program"]?.code == .commandNotFound)
        #expect(problems["empty-command"]?.code == .invalidValue)
        #expect(problems["bad-name"]?.code == .invalidValue)
        #expect(problems["takes-builtin"]?.code == .duplicateName)
        #expect(problems["takes-builtin"]?.message.contains("builtin") == true)
        #expect(problems["zz-duplicate"]?.code == .duplicateName)
    }

    @Test("makes adapters by name; an unknown name is a clear error")
    func lookup() throws {
        let root = try PluginTestDirectory("orgsync-plugins")
        defer { root.remove() }
        try plugin(root.path, "ext", manifest(name: "ext"))
        let registry = PluginRegistry(builtins: [FakeFactory(name: "sqlite")], pluginsDirectory: root.path, logger: Logger(label: "test"))
        let adapter = try registry.makeAdapter(named: "ext", configuration: AdapterConfiguration(linkName: "l", streamName: "s"))
        #expect(adapter is ProcessAdapter)
        #expect(throws: AdapterConfigurationError.self) {
            _ = try registry.makeAdapter(named: "sqlite", configuration: AdapterConfiguration(linkName: "l", streamName: "s"))
        }
        let error = try #require(throws: PluginRegistryError.self) { _ = try registry.factory(named: "nope") }
        #expect(error.description == "no adapter named \"nope\" (known: ext, sqlite)")
    }

    @Test("a missing plugins directory is reported, builtins still load")
    func missingDirectory() {
        let registry = PluginRegistry(
            builtins: [FakeFactory(name: "sqlite")], pluginsDirectory: "/nonexistent/orgsync-plugins", logger: Logger(label: "test"))
        #expect(registry.listings.map(\.name) == ["sqlite"])
        #expect(registry.problems.map(\.code) == [.pluginsDirectoryMissing])
    }

    @Test("manifest parsing never traps on arbitrary bytes", arguments: [
        "", "null", "[]", "42", "\u{FF}\u{FE}", #"{"name": 1}"#, #"{"name": "a", "version": "1", "protocolVersion": 1.5, "command": ["x"]}"#,
        #"{"name": "a", "version": "1", "protocolVersion": 1, "command": [1]}"#,
        #"{"name": "a", "version": "1", "protocolVersion": 1, "command": "x"}"#,
        #"{"name": "a", "version": "1", "protocolVersion": 1, "command": ["x"], "description": 3}"#,
    ])
    func parseRejects(_ text: String) {
        #expect(throws: PluginManifestError.self) { _ = try PluginManifest.parse(Array(text.utf8), directory: "d") }
    }
}

/// plugin.json may declare the plugin's settings; without the field anything is accepted.
@Suite struct PluginManifestSettingsTests {
    static let base = #""name":"p","version":"1","protocolVersion":2,"command":["python3","a.py"]"#

    @Test func declaredSettingsAreChecked() throws {
        let text = "{" + Self.base + #","settings":{"path":"required","primary_key":"optional","header.":"optional"}}"#
        let manifest = try PluginManifest.parse(Array(text.utf8), directory: "d")
        #expect(manifest.settings.problem(names: ["path", "primary_key", "header.X"]) == nil)
        #expect(manifest.settings.problem(names: ["path", "primary_kye"])?.setting == "primary_kye")
        #expect(manifest.settings.problem(names: ["primary_key"]) == .missing(setting: "path"))
        #expect(manifest.settings.problem(names: ["path_env"]) == nil, "path_env counts as path")
    }

    @Test func noDeclarationAcceptsAnything() throws {
        let manifest = try PluginManifest.parse(Array(("{" + Self.base + "}").utf8), directory: "d")
        #expect(manifest.settings == .any)
        #expect(manifest.settings.problem(names: ["whatever"]) == nil)
    }

    @Test(arguments: [#""settings":["path"]"#, #""settings":{"path":"mandatory"}"#, #""settings":{"":"optional"}"#])
    func aMalformedDeclarationIsRefused(member: String) {
        let text = "{" + Self.base + "," + member + "}"
        let error = #expect(throws: PluginManifestError.self) { _ = try PluginManifest.parse(Array(text.utf8), directory: "d") }
        #expect(error?.field == "settings")
    }
}
