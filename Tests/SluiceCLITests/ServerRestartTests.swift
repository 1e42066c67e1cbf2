import Foundation
import SluiceTesting
import SluiceWorkloads
import Testing

/// The package's root (for `scripts/pg`).
private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// Runs a script of the package and returns its standard output, through `system(3)` and a file: the server
/// the script starts keeps the descriptors it inherited, and `system` reaps the script itself.
private func script(_ args: [String]) throws -> (status: Int32, out: String) {
    let outFile = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-script-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: outFile) }
    let quoted = args.map { "'" + $0 + "'" }.joined(separator: " ")
    let status = system("cd '\(packageRoot)' && bash \(quoted) > '\(outFile.path)' 2>/dev/null </dev/null")
    return (status, (try? String(contentsOf: outFile, encoding: .utf8)) ?? "")
}

/// A PostgreSQL server restarted with `-m fast` in the middle of a load (every session terminated mid-statement,
/// the server refusing connections while it stops and starts): the load rides it out with retries and ends
/// with exactly the input — never a hang, never a crash. On a server of its own, so other tests are not hit.
@Suite(.serialized, .enabled(if: !Psql.testURL.isEmpty, "needs PostgreSQL (scripts/test starts it)"))
struct ServerRestartTests {
    @Test(arguments: ["append", "upsert"])
    func aServerRestartMidLoadIsRiddenOutWithThreeWriters(mode: String) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pgDir = dir.file("pg")
        let started = try script(["scripts/pg", "start", pgDir])
        try #require(started.status == 0, "scripts/pg start failed")
        defer { _ = try? script(["scripts/pg", "stop", pgDir]) }
        let url = try #require(
            started.out.split(separator: " ").first { $0.hasPrefix("SLUICE_PG_URL=") }.map { String($0.dropFirst(14)) })
        let rows = 1_000_000
        try W0Generator(rows: rows).write(to: dir.file("e.csv"), format: .csv)
        let key = mode == "upsert" ? ", PRIMARY KEY (id)" : ""
        _ = try Psql.rows(
            url, "CREATE TABLE events (id bigint, name text, ts timestamptz, value double precision, tags text\(key))")

        let p = Process()
        p.executableURL = URL(fileURLWithPath: sluiceBinary)
        p.arguments =
            ["load", "e.csv", "--into", url, "--table", "events", "--writers", "3", "--no-progress"]
            + (mode == "upsert" ? ["--key", "id", "--mode", "upsert"] : [])
        p.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.file("e.err")).creatingFile())
        try p.run()
        // Restart once rows are arriving, i.e. mid-load.
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, p.isRunning {
            let n = (try? Psql.rows(url, "SELECT count(*) FROM events"))?.first?.first.flatMap { $0 }.flatMap {
                Int($0)
            }
            if let n, n > 0 { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let wasRunning = p.isRunning
        #expect(try script(["scripts/pg", "restart", pgDir]).status == 0)
        // Never a hang: a bounded wait, then a kill that fails the test.
        let limit = Date().addingTimeInterval(120)
        while p.isRunning && Date() < limit { Thread.sleep(forTimeInterval: 0.1) }
        let hung = p.isRunning
        if hung { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let stderr = (try? String(contentsOfFile: dir.file("e.err"), encoding: .utf8)) ?? ""
        #expect(!hung, "sluice hung after the restart\n\(stderr)")
        #expect(p.terminationReason == .exit && p.terminationStatus == 0, "\(p.terminationStatus)\n\(stderr)")
        #expect(wasRunning, "the load ended before the restart: make it longer")
        let counts = try Psql.rows(url, "SELECT count(*), count(DISTINCT id) FROM events")
        #expect(counts == [["\(rows)", "\(rows)"]], "\(stderr)")
    }
}

extension URL {
    /// The URL, after creating an empty file there.
    fileprivate func creatingFile() -> URL {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        return self
    }
}
