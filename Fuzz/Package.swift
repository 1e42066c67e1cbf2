// swift-tools-version: 6.0
import PackageDescription

// libFuzzer targets for Sluice's decoders, kept out of the main package's build and tests. Built and run by
// `scripts/fuzz TARGET SECONDS` (`swift build --sanitize=fuzzer --sanitize=address` in this directory).
let strict: [SwiftSetting] = [.unsafeFlags(["-warnings-as-errors"])]

/// One libFuzzer executable: the shared harness and the Sluice library it fuzzes.
func fuzzer(_ name: String, _ library: String) -> Target {
    .executableTarget(
        name: name, dependencies: ["FuzzSupport", .product(name: library, package: "sluice")], swiftSettings: strict)
}

let package = Package(
    name: "sluice-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "sluice", path: "..")],
    targets: [
        .target(
            name: "FuzzSupport", dependencies: [.product(name: "SluiceCore", package: "sluice")], swiftSettings: strict),
        fuzzer("FuzzCSV", "SluiceCSV"),
        fuzzer("FuzzJSONLines", "SluiceJSONLines"),
        fuzzer("FuzzXML", "SluiceXML"),
        fuzzer("FuzzValues", "SluiceCore"),
        fuzzer("FuzzPipelineYAML", "SluiceConfig"),
    ]
)
