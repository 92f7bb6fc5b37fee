import OrgSyncBroker
import OrgSyncServer

/// Any text as the configuration file: a configuration or a ``ConfigurationError``; never a
/// crash, a hang or unbounded memory (YAML aliases, deep nesting, huge numbers).
@Sendable func fuzzConfiguration(_ data: [UInt8]) {
    let text = String(decoding: data, as: UTF8.self)
    guard let configuration = try? BrokerConfiguration.parse(yaml: text, environment: ["FUZZ_TOKEN": "0123456789abcdef0123"]) else { return }
    // A configuration that loads gives every stream a log configuration (validated) or an error.
    for stream in configuration.streams { _ = try? configuration.logConfiguration(for: stream) }
}
