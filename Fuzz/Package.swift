// swift-tools-version: 6.0
import PackageDescription

// libFuzzer targets for Sluice's decoders, kept out of the main package's build and tests. Built and run by
// `scripts/fuzz TARGET SECONDS` (`swift build --sanitize=fuzzer --sanitize=address` in this directory).
let strict: [SwiftSetting] = [.unsafeFlags(["-warnings-as-errors"])]

let package = Package(
    name: "sluice-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "sluice", path: "..")],
    targets: [
        .target(
            name: "FuzzSupport", dependencies: [.product(name: "SluiceCore", package: "sluice")], swiftSettings: strict),
        .executableTarget(
            name: "FuzzCSV",
            dependencies: ["FuzzSupport", .product(name: "SluiceCSV", package: "sluice")], swiftSettings: strict),
        .executableTarget(
            name: "FuzzJSONLines",
            dependencies: ["FuzzSupport", .product(name: "SluiceJSONLines", package: "sluice")],
            swiftSettings: strict),
        .executableTarget(
            name: "FuzzXML",
            dependencies: ["FuzzSupport", .product(name: "SluiceXML", package: "sluice")], swiftSettings: strict),
        .executableTarget(
            name: "FuzzValues",
            dependencies: ["FuzzSupport", .product(name: "SluiceCore", package: "sluice")], swiftSettings: strict),
        .executableTarget(
            name: "FuzzPipelineYAML",
            dependencies: ["FuzzSupport", .product(name: "SluiceConfig", package: "sluice")],
            swiftSettings: strict),
    ]
)
