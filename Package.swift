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
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
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
                "SQLiteAdapter",
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
                "OrgSyncCore",
                "SQLiteAdapter",
                "CZlib",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // First-party adapters: depend on OrgSyncPluginAPI (and their driver) only.
        .target(
            name: "SQLiteAdapter",
            dependencies: [
                "OrgSyncPluginAPI",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "plugins/SQLiteAdapter",
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        // The adapter contract every adapter passes; a library the adapter test targets share.
        .target(
            name: "OrgSyncAdapterContract",
            dependencies: ["OrgSyncPluginAPI"],
            path: "Tests/OrgSyncAdapterContract",
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
            name: "OrgSyncCoreTests",
            dependencies: [
                "OrgSyncCore",
                "OrgSyncPluginAPI",
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
