// swift-tools-version: 6.0
import PackageDescription

// The project's own targets build without warnings: any warning is an error (dependencies are not affected).
let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny"), .unsafeFlags(["-warnings-as-errors"])]
let testSettings: [SwiftSetting] = [.unsafeFlags(["-warnings-as-errors"])]

let package = Package(
    name: "sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluice", targets: ["SluiceCLI"]),
        .executable(name: "sluice-bench", targets: ["SluiceBench"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
        .library(name: "SluiceInterfaces", targets: ["SluiceInterfaces"]),
        .library(name: "SluiceRuntime", targets: ["SluiceRuntime"]),
        .library(name: "SluiceFiles", targets: ["SluiceFiles"]),
        .library(name: "SluiceBlobStore", targets: ["SluiceBlobStore"]),
        .library(name: "SluiceReport", targets: ["SluiceReport"]),
        .library(name: "SluiceCSV", targets: ["SluiceCSV"]),
        .library(name: "SluiceJSONLines", targets: ["SluiceJSONLines"]),
        .library(name: "SluiceSQLite", targets: ["SluiceSQLite"]),
        .library(name: "SluiceTesting", targets: ["SluiceTesting"]),
        .library(name: "SluiceWorkloads", targets: ["SluiceWorkloads"]),
        .library(name: "SluiceConfig", targets: ["SluiceConfig"]),
        .library(name: "SluicePostgres", targets: ["SluicePostgres"]),
        .library(name: "SluiceContent", targets: ["SluiceContent"]),
        .library(name: "SluiceXML", targets: ["SluiceXML"]),
        .library(name: "SluiceHTTP", targets: ["SluiceHTTP"]),
        .library(name: "SluiceMetrics", targets: ["SluiceMetrics"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        // SluiceHTTP: pooled, keep-alive HTTP/1.1 and HTTP/2 client on SwiftNIO (the W1 fetch stage).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // SluiceTesting: the loopback HTTP test server with injected latency and faults.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        // Observation and lifecycle: metrics API (libraries), Prometheus backend (CLI), graceful shutdown.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite"),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CMagic", path: "Sources/CMagic"),
        .target(name: "CAllocCounter", path: "Sources/CAllocCounter"),
        .target(name: "CSluiceSupport", path: "Sources/CSluiceSupport"),
        .target(name: "SluiceCore", swiftSettings: strict),
        .target(name: "SluiceReport", dependencies: ["SluiceCore"], swiftSettings: strict),
        .target(
            name: "SluiceMetrics",
            dependencies: ["SluiceCore", "SluiceReport", .product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: strict),
        // The contracts adapters implement (sources, sinks, transforms, write modes, batching and retry
        // policies): no threads, no I/O.
        .target(name: "SluiceInterfaces", dependencies: ["SluiceCore", "SluiceReport"], swiftSettings: strict),
        .target(
            name: "SluiceFiles", dependencies: ["SluiceCore", "SluiceInterfaces", "CZlib"], swiftSettings: strict),
        .target(
            name: "SluiceBlobStore", dependencies: ["SluiceCore", "CSluiceSupport"], swiftSettings: strict),
        .target(
            name: "SluiceRuntime",
            dependencies: [
                "SluiceCore", "SluiceReport", "SluiceInterfaces", "CSluiceSupport",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .target(name: "SluiceCSV", dependencies: ["SluiceCore"], swiftSettings: strict),
        .target(name: "SluiceJSONLines", dependencies: ["SluiceCore"], swiftSettings: strict),
        .target(
            name: "SluiceXML",
            dependencies: ["SluiceCore", "SluiceReport", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict),
        .target(
            name: "SluiceSQLite", dependencies: ["SluiceCore", "SluiceInterfaces", "CSQLite"], swiftSettings: strict),
        .target(
            name: "SluicePostgres",
            dependencies: [
                "SluiceCore", "SluiceInterfaces", .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "SluiceContent", dependencies: ["SluiceCore", "SluiceInterfaces", "CMagic", "CSluiceSupport"],
            swiftSettings: strict),
        .target(
            name: "SluiceHTTP",
            dependencies: [
                "SluiceCore", "SluiceInterfaces", "SluiceReport", "SluiceBlobStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .target(
            name: "SluiceTesting",
            dependencies: [
                "SluiceCore", "SluiceRuntime", "SluiceReport", "SluiceFiles",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "SluiceWorkloads", dependencies: ["SluiceCore", "SluiceRuntime", "CZlib"], swiftSettings: strict),
        .target(
            name: "SluiceConfig",
            dependencies: [
                "SluiceCore", "SluiceRuntime", "SluiceFiles", "SluiceCSV", "SluiceJSONLines", "SluiceSQLite",
                "SluicePostgres", "SluiceContent", "SluiceBlobStore", "SluiceXML", "SluiceHTTP",
                .product(name: "Yams", package: "Yams"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "SluiceCLI",
            dependencies: [
                "SluiceCore", "SluiceRuntime", "SluiceReport", "SluiceSQLite", "SluiceConfig", "SluiceWorkloads",
                "SluiceMetrics", "SluiceCSV", "CSluiceSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "SluiceBench",
            dependencies: [
                "SluiceCore", "SluiceRuntime", "SluiceReport", "SluiceCSV", "SluiceJSONLines", "SluiceSQLite",
                "SluiceWorkloads", "SluiceTesting", "CAllocCounter", "SluicePostgres", "SluiceContent", "SluiceConfig",
                "SluiceBlobStore", "SluiceFiles",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(name: "SluiceCoreTests", dependencies: ["SluiceCore"], swiftSettings: testSettings),
        .testTarget(
            name: "SluiceRuntimeTests", dependencies: ["SluiceRuntime", "SluiceTesting", "SluiceCSV"],
            swiftSettings: testSettings),
        .testTarget(name: "SluiceReportTests", dependencies: ["SluiceReport"], swiftSettings: testSettings),
        .testTarget(
            name: "SluiceCSVTests", dependencies: ["SluiceCSV", "SluiceRuntime", "SluiceTesting"],
            swiftSettings: testSettings),
        .testTarget(
            name: "SluiceJSONLinesTests", dependencies: ["SluiceJSONLines", "SluiceRuntime", "SluiceTesting"],
            swiftSettings: testSettings),
        .testTarget(
            name: "SluiceXMLTests",
            dependencies: [
                "SluiceXML", "SluiceRuntime", "SluiceTesting", .product(name: "Crypto", package: "swift-crypto"),
            ], swiftSettings: testSettings),
        .testTarget(
            name: "SluiceSQLiteTests",
            dependencies: [
                "SluiceSQLite", "SluiceRuntime", "SluiceFiles", "SluiceTesting", "SluiceCSV", "SluiceXML", "CSQLite",
            ],
            swiftSettings: testSettings),
        .testTarget(
            name: "SluicePostgresTests",
            dependencies: [
                "SluicePostgres", "SluiceRuntime", "SluiceFiles", "SluiceTesting", "SluiceCSV",
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ], swiftSettings: testSettings),
        .testTarget(
            name: "SluiceHTTPTests",
            dependencies: [
                "SluiceHTTP", "SluiceRuntime", "SluiceTesting", "SluiceBlobStore", "SluiceSQLite", "SluiceReport",
                "SluicePostgres",
            ], swiftSettings: testSettings),
        .testTarget(
            name: "SluiceContentTests",
            dependencies: ["SluiceContent", "SluiceRuntime", "SluiceTesting", "SluiceWorkloads"],
            swiftSettings: testSettings),
        .testTarget(
            name: "SluiceConfigTests", dependencies: ["SluiceConfig", "SluiceCore"], swiftSettings: testSettings),
        .testTarget(
            name: "SluiceCLITests",
            dependencies: [
                "SluiceWorkloads", "SluiceRuntime", "SluiceFiles", "SluiceCSV", "SluiceSQLite", "SluiceTesting",
                "SluiceConfig",
                "SluiceCLI", "SluiceReport",
            ], swiftSettings: testSettings),
    ],
    swiftLanguageModes: [.v6]
)
