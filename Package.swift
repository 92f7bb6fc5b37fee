// swift-tools-version: 6.1
// orgsync — a durable broker that keeps databases ("orgs") in sync across unreliable links.
// Dependencies point one way: orgsync → OrgSyncCore → {OrgSyncLog, OrgSyncPluginAPI};
// plugins depend on OrgSyncPluginAPI only. See ../shared/DESIGN.md and README.md.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

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
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
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
            swiftSettings: strict
        ),
        .target(
            name: "OrgSyncPluginAPI",
            swiftSettings: strict
        ),
        .target(
            name: "OrgSyncCore",
            dependencies: [
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "orgsync",
            dependencies: [
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "OrgSyncCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "OrgSyncBenchmarks",
            dependencies: [
                "OrgSyncLog",
                "OrgSyncPluginAPI",
                "CZlib",
                "PostgresAdapter",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "PostgresAdapter",
            dependencies: [
                "OrgSyncPluginAPI",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "plugins/PostgresAdapter",
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        .target(
            name: "WebhookAdapter",
            dependencies: [
                "OrgSyncPluginAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "plugins/WebhookAdapter",
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "PostgresAdapterTests",
            dependencies: [
                "PostgresAdapter",
                "OrgSyncPluginAPI",
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "WebhookAdapterTests",
            dependencies: [
                "WebhookAdapter",
                "OrgSyncPluginAPI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "OrgSyncLogTests",
            dependencies: ["OrgSyncLog", "CZlib"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "OrgSyncPluginAPITests",
            dependencies: ["OrgSyncPluginAPI"],
            swiftSettings: strict
        ),
    ]
)
