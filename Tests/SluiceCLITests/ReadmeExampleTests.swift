import Foundation
import SluiceTesting
import SluiceWorkloads
import Testing

/// `ReadmeExample.swift` is the README's library example, whole; these tests compile it, run it, and check
/// that the README shows exactly that file.
@Suite struct ReadmeExampleTests {
    @Test func theLibraryExampleRuns() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try W0Generator(rows: 2_000).write(to: dir.file("events.csv"), format: .csv)
        let report = try await loadEvents(csv: dir.file("events.csv"), database: dir.file("events.db"))
        #expect(report.outcome == .clean && report.recordsOut == 2_000)
    }

    @Test func theReadmeShowsExactlyThisExample() throws {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let root = here.deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let example = try String(contentsOf: here.appendingPathComponent("ReadmeExample.swift"), encoding: .utf8)
        #expect(readme.contains("```swift\n" + example + "```"))
    }
}
