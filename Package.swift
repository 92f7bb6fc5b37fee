// swift-tools-version: 6.1
// orgsync — a durable broker that keeps databases ("orgs") in sync across unreliable links.
// Dependencies point one way: orgsync → OrgSyncServer → OrgSyncCore → {OrgSyncLog, OrgSyncPluginAPI};
// the server and the CLI share the API's bodies (OrgSyncAPI);
// plugins depend on OrgSyncPluginAPI (and their own driver) only. See docs/DESIGN.md and README.md.
import PackageDescription

// `ORGSYNC_FUZZ=1` (set by `.ci/fuzz.sh`) adds the libFuzzer executable `OrgSyncFuzz` and
// instruments the broker's own modules with `-sanitize=fuzzer,address`. Without it, nothing
// below changes: the normal build and `swift test` neither compile nor link the fuzz targets
// (they need libFuzzer's driver, which only `-sanitize=fuzzer` links).
let fuzzing = Context.environment["ORGSYNC_FUZZ"] == "1"

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]
/// The broker's own modules: instrumented when fuzzing (dependencies are not: their code is
/// not what the fuzz targets test, and instrumenting them would double the build).
/// `ORGSYNC_FUZZ_OPTIMIZE=1` (`.ci/fuzz.sh --long`) compiles them with `-O` as well: up to five
/// times the executions a second (generic code specialised, as in a release build), at twice
/// the build time; `-enable-testing` keeps the targets' `@testable import`s working.
let fuzzOptimized = fuzzing && Context.environment["ORGSYNC_FUZZ_OPTIMIZE"] == "1"
let ours: [SwiftSetting] = strict + (fuzzing ? [.unsafeFlags(["-sanitize=fuzzer,address"] + (fuzzOptimized ? ["-O", "-enable-testing"] : []))] : [])
/// The test support the fuzz targets use (the in-memory storage): optimized with them, not
/// instrumented.
let testSupport: [SwiftSetting] = strict + (fuzzOptimized ? [.unsafeFlags(["-O"])] : [])

let package = Package(
    name: "orgsync",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "orgsync", targets: ["orgsync"]),
        .executable(name: "OrgSyncBenchmarks", targets: ["OrgSyncBenchmarks"]),
        .library(name: "OrgSyncPluginAPI", targets: ["OrgSyncPluginAPI"]),
        .library(name: "OrgSyncLog", targets: ["OrgSyncLog"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // 1.8: options with a value that may be left out (`links resume --wait[=TIMEOUT]`).
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.0"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.0"),
    ],
    targets: [
        // MARK: Modules
        .systemLibrary(
            name: "CZlib",
            path: "Sources/CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(
            name: "OrgSyncLog",
            dependencies: [
                "CZlib",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: ours
        ),
        .target(
            name: "OrgSyncPluginAPI",
            swiftSettings: ours
        ),
        .target(
            name: "OrgSyncCore",
            dependencies: [
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: ours
        ),
        // The HTTP API as data: the bodies the server writes and the CLI and tests read (Foundation only).
        .target(
            name: "OrgSyncAPI",
            swiftSettings: ours
        ),
        // Operators' webhooks: events planned from the links' sync logs, signed (Standard
        // Webhooks), delivered in order with retries; no HTTP server, no configuration parsing.
        .target(
            name: "OrgSyncNotifications",
            dependencies: [
                "OrgSyncCore",
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: ours
        ),
        // A NATS client on SwiftNIO (no Swift NATS client among the packages we use): the core
        // protocol (pure parser and encoder), TLS and credentials, request/reply, and JetStream
        // streams, publish with acknowledgement and reads. No broker code.
        .target(
            name: "OrgSyncNATS",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: ours
        ),
        // The broker without HTTP: its configuration, streams (behind `StreamStore`), links,
        // metrics and background services. Throws its own errors (`BrokerError`, `LogError`,
        // `LinkSupervisorError`); the server maps them to HTTP answers in one place.
        .target(
            name: "OrgSyncBroker",
            dependencies: [
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "OrgSyncCore",
                "OrgSyncNotifications",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            // The default configuration: a real file, compiled in by the plugin.
            exclude: ["Embedded"],
            swiftSettings: ours,
            plugins: ["EmbedFilesPlugin"]
        ),
        // A broker as a member of a cluster: its streams are JetStream streams (replicated by
        // NATS), appended to by every member, fenced by JetStream's expected last sequence.
        .target(
            name: "OrgSyncCluster",
            dependencies: [
                "OrgSyncBroker",
                "OrgSyncCore",
                "OrgSyncLog",
                "OrgSyncNATS",
                "OrgSyncPluginAPI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: ours
        ),
        // The HTTP API over the broker (Hummingbird): routes, auth, TLS, connection limits.
        .target(
            name: "OrgSyncServer",
            dependencies: [
                "OrgSyncAPI",
                "OrgSyncBroker",
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "OrgSyncCore",
                "OrgSyncNotifications",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The OpenAPI document and the status page: real files, compiled in as
            // `EmbeddedFiles` constants by the plugin.
            exclude: ["Embedded"],
            swiftSettings: ours,
            plugins: ["EmbedFilesPlugin"]
        ),
        .executableTarget(
            name: "orgsync",
            dependencies: [
                "OrgSyncAPI",
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "OrgSyncCore",
                "OrgSyncServer",
                "OrgSyncBroker",
                "OrgSyncCluster",
                "SQLiteAdapter",
                "PostgresAdapter",
                "WebhookAdapter",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "OrgSyncBenchmarks",
            dependencies: [
                "OrgSyncAPI",
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "OrgSyncCore",
                "SQLiteAdapter",
                "PostgresAdapter",
                "OrgSyncServer",
                "OrgSyncBroker",
                "OrgSyncCluster",
                "OrgSyncNATS",
                "OrgSyncTestCertificates",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The apply ceilings' script, run by `apply` from the source tree.
            exclude: ["ceilings"],
            swiftSettings: strict
        ),

        // MARK: Build tools
        .executableTarget(
            name: "EmbedFiles",
            swiftSettings: strict
        ),
        // Under Sources/, not a top-level Plugins/: that would differ from plugins/ (the adapters)
        // only by case, one folder on a case-insensitive file system.
        .plugin(
            name: "EmbedFilesPlugin",
            capability: .buildTool(),
            dependencies: ["EmbedFiles"],
            path: "Sources/EmbedFilesPlugin"
        ),

        // MARK: First-party adapters: OrgSyncPluginAPI and their driver only.
        .target(
            name: "SQLiteAdapter",
            dependencies: [
                "OrgSyncPluginAPI",
                .product(name: "GRDB", package: "GRDB.swift"),
                // SQLite's C API, for the adapter's data statements (SQLiteStatement.swift).
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ],
            path: "plugins/SQLiteAdapter",
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        .target(
            name: "PostgresAdapter",
            dependencies: [
                "OrgSyncPluginAPI",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "plugins/PostgresAdapter",
            exclude: ["README.md"],
            // Instrumented when fuzzing: the `pgoutput` target reads its capture decoder.
            swiftSettings: ours
        ),
        .target(
            name: "WebhookAdapter",
            dependencies: [
                "OrgSyncPluginAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // The client's TLS settings, and the handshake that reads a refused certificate.
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "plugins/WebhookAdapter",
            exclude: ["README.md"],
            swiftSettings: strict
        ),

        // MARK: Test support
        .target(
            name: "OrgSyncTestSupport",
            dependencies: ["OrgSyncCore", "OrgSyncLog", "OrgSyncPluginAPI", .product(name: "Logging", package: "swift-log")],
            path: "Tests/OrgSyncTestSupport",
            swiftSettings: testSupport
        ),
        // The throwaway PostgreSQL server of .ci/postgres.sh, as the PostgreSQL adapter's tests and
        // the link tests find, reach and stop it.
        .target(
            name: "OrgSyncTestPostgres",
            dependencies: [
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/OrgSyncTestPostgres",
            swiftSettings: strict
        ),
        // A small HTTP/1.1 (and HTTPS) receiver on 127.0.0.1 that records requests and answers
        // from a closure: for the webhook adapter's and the notifier's tests.
        .target(
            name: "OrgSyncTestHTTP",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/OrgSyncTestHTTP",
            swiftSettings: strict
        ),
        // A throwaway nats-server, or a cluster of three, for the tests that need real ones.
        .target(
            name: "OrgSyncTestNATS",
            dependencies: ["OrgSyncNATS", "OrgSyncTestSupport"],
            path: "Tests/OrgSyncTestNATS",
            swiftSettings: strict
        ),
        .testTarget(
            name: "OrgSyncNATSTests",
            dependencies: [
                "OrgSyncNATS", "OrgSyncCore", "OrgSyncTestSupport", "OrgSyncTestNATS", "OrgSyncTestCertificates",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "OrgSyncClusterTests",
            dependencies: [
                "OrgSyncCluster", "OrgSyncBroker", "OrgSyncCore", "OrgSyncLog", "OrgSyncNATS", "OrgSyncPluginAPI",
                "OrgSyncTestSupport", "OrgSyncTestNATS", "OrgSyncTestCertificates", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "OrgSyncNotificationsTests",
            dependencies: [
                "OrgSyncNotifications",
                "OrgSyncCore",
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "OrgSyncTestSupport",
                "OrgSyncTestHTTP",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Certificates made at test time (an own CA, server and client certificates, an expired
        // one, one for another host) for the TLS tests; shared by the test targets that need TLS.
        .target(
            name: "OrgSyncTestCertificates",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            path: "Tests/OrgSyncTestCertificates",
            swiftSettings: strict
        ),
        // The adapter contract every adapter passes; shared by the adapter test targets.
        .target(
            name: "OrgSyncAdapterContract",
            dependencies: ["OrgSyncPluginAPI"],
            path: "Tests/OrgSyncAdapterContract",
            swiftSettings: strict
        ),

        // MARK: Tests
        .testTarget(
            name: "OrgSyncLogTests",
            dependencies: ["OrgSyncLog", "OrgSyncCore", "OrgSyncTestSupport", "CZlib", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "OrgSyncPluginAPITests",
            dependencies: ["OrgSyncPluginAPI"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "OrgSyncCoreTests",
            dependencies: [
                "OrgSyncCore",
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "OrgSyncTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "AdapterTests",
            dependencies: [
                "OrgSyncAdapterContract",
                "OrgSyncPluginAPI",
                "OrgSyncCore",
                "SQLiteAdapter",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "PostgresAdapterTests",
            dependencies: [
                "PostgresAdapter",
                "OrgSyncCore",
                "OrgSyncPluginAPI",
                "OrgSyncAdapterContract",
                "OrgSyncTestCertificates",
                "OrgSyncTestPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict + [.define("ORGSYNC_ADAPTER_CONTRACT")]
        ),
        // Links over the real segment log: against the throwaway PostgreSQL (stopped and
        // started under a steady stream) and fan-out of two links on one stream.
        .testTarget(
            name: "LinkIntegrationTests",
            dependencies: [
                "OrgSyncCore",
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "OrgSyncTestSupport",
                "OrgSyncTestCertificates",
                "OrgSyncTestPostgres",
                "PostgresAdapter",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "WebhookAdapterTests",
            dependencies: [
                "WebhookAdapter",
                "OrgSyncTestHTTP",
                "OrgSyncPluginAPI",
                "OrgSyncCore",
                "OrgSyncAdapterContract",
                "OrgSyncTestCertificates",
                "OrgSyncTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict + [.define("ORGSYNC_ADAPTER_CONTRACT")]
        ),
        // The benchmarks' pure parts (pacing timetable, latency join, lag trend, verdicts): the
        // executable's module, imported @testable.
        .testTarget(
            name: "OrgSyncBenchmarksTests",
            dependencies: ["OrgSyncBenchmarks", "OrgSyncCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "OrgSyncServerTests",
            dependencies: [
                "OrgSyncNotifications",
                "OrgSyncTestHTTP",
                "OrgSyncAPI",
                "OrgSyncServer",
                "OrgSyncBroker",
                "OrgSyncLog",
                "OrgSyncCore",
                "OrgSyncPluginAPI",
                "OrgSyncTestSupport",
                "OrgSyncTestCertificates",
                "OrgSyncTestNATS",
                "SQLiteAdapter",
                "PostgresAdapter",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ]
)

if fuzzing {
    package.targets += [
        // Declares libFuzzer's `LLVMFuzzerRunDriver` for Swift.
        .target(name: "CLibFuzzer", path: "Fuzz/CLibFuzzer"),
        // One executable for every fuzz target (chosen by ORGSYNC_FUZZ_TARGET): one link of
        // the broker's dependency graph instead of one per target. See Fuzz/README.md.
        .executableTarget(
            name: "OrgSyncFuzz",
            dependencies: [
                "CLibFuzzer",
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "OrgSyncCore",
                "OrgSyncServer",
                "OrgSyncBroker",
                "PostgresAdapter",
                "OrgSyncNATS",
                "OrgSyncCluster",
                // FaultInjectingStorage: the in-memory storage the log and small-file targets
                // write their inputs to (not instrumented: a test double, not the broker).
                "OrgSyncTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Fuzz/OrgSyncFuzz",
            swiftSettings: ours,
            linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address", "-use-ld=lld"])]
        ),
    ]
}
