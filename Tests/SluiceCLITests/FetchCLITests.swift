import Foundation
import SluiceReport
import SluiceSQLite
import SluiceTesting
import Testing

/// Runs the thumbnails example (`examples/thumbnails.yaml`) against a loopback test server, killing or
/// interrupting it mid-run, and checks that nothing reported stored is lost and a re-run converges.
@Suite(.serialized) struct FetchCLITests {
    static let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples/thumbnails.yaml").path

    /// Starts `sluice run` on the example with the files in `dir`.
    func start(_ dir: TemporaryDirectory) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: sluiceBinary)
        p.arguments = ["run", Self.example, "--no-progress", "--report-json", dir.file("report.json")]
        p.environment = ProcessInfo.processInfo.environment.merging([
            "URLS": dir.file("urls.csv"), "BLOBS": dir.file("blobs"), "MANIFEST": dir.file("manifest.db"),
        ]) { $1 }
        p.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        p.standardOutput = FileHandle.nullDevice
        _ = FileManager.default.createFile(atPath: dir.file("stderr.txt"), contents: nil)
        p.standardError = FileHandle(forWritingAtPath: dir.file("stderr.txt"))
        try p.run()
        return p
    }

    /// Waits for a process without blocking a Swift concurrency thread (the test server needs them).
    func exitStatus(_ p: Process) async -> Int32 {
        while p.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        return p.terminationStatus
    }

    /// Waits until the manifest holds at least `rows` rows.
    func waitForRows(_ db: String, _ rows: Int) async throws {
        for _ in 0..<1500 {
            try await Task.sleep(for: .milliseconds(20))
            let n = (try? SQLiteConnection(path: db).query("SELECT count(*) FROM thumbnails"))?.first?.first ?? nil
            if let n, let c = Int(n), c >= rows { return }
        }
        Issue.record("the manifest never reached \(rows) rows")
    }

    /// Checks every blob's name is the SHA-256 of its bytes, and every stored manifest row's blob is there
    /// with the server's body. Returns the stored URLs.
    func checkStore(_ dir: TemporaryDirectory, _ server: TestHTTPServer) throws -> Set<String> {
        let root = dir.file("blobs")
        let fm = FileManager.default
        var blobs = 0
        for a in try fm.contentsOfDirectory(atPath: root) where a != ".tmp" {
            for b in try fm.contentsOfDirectory(atPath: "\(root)/\(a)") {
                for name in try fm.contentsOfDirectory(atPath: "\(root)/\(a)/\(b)") {
                    let bytes = try #require(fm.contents(atPath: "\(root)/\(a)/\(b)/\(name)"))
                    #expect(sha256Hex(Array(bytes)) == name, "a blob's name is its hash: no partial blob")
                    #expect(name.hasPrefix(a + b))
                    blobs += 1
                }
            }
        }
        let db = try SQLiteConnection(path: dir.file("manifest.db"))
        var stored = Set<String>()
        for r in try db.query("SELECT url, sha256, bytes FROM thumbnails WHERE error IS NULL") {
            let url = r[0]!
            let id = Int(url.split(separator: "/").last!)!
            let body = server.objects.body(of: id)
            #expect(r[1] == sha256Hex(body) && r[2] == String(body.count))
            let path = "\(root)/\(r[1]!.prefix(2))/\(r[1]!.dropFirst(2).prefix(2))/\(r[1]!)"
            #expect(fm.contents(atPath: path).map(Array.init) == body, "a stored row's blob is on disk")
            stored.insert(url)
        }
        #expect(blobs >= stored.count)
        return stored
    }

    func writeURLs(_ server: TestHTTPServer, _ dir: TemporaryDirectory, count: Int, missing: [Int]) throws -> Int {
        let urls = (1...count).map { server.url(id: $0) } + missing.map { server.url(id: $0, fault: .notFound) }
        _ = try dir.write("urls.csv", "url\n" + urls.joined(separator: "\n") + "\n")
        return urls.count
    }

    @Test func killMidRunKeepsEveryStoredBlobWholeAndTheRerunFetchesOnlyTheRest() async throws {
        var o = TestServerOptions()
        o.latencyMs = 40...80
        let server = try await TestHTTPServer.start(o)
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let total = try writeURLs(server, dir, count: 4000, missing: [90_001, 90_002])
        let p = try start(dir)
        try await waitForRows(dir.file("manifest.db"), 1)
        kill(p.processIdentifier, SIGKILL)
        _ = await exitStatus(p)
        let before = try checkStore(dir, server)
        #expect(before.count > 0 && before.count < total, "killed mid-run: \(before.count) of \(total)")

        let requests0 = server.requestsServed
        let again = try start(dir)
        let status = await exitStatus(again)
        let stderr = (try? String(contentsOfFile: dir.file("stderr.txt"), encoding: .utf8)) ?? ""
        #expect(status == 4, "two URLs fail (404): completed with failed records. \(stderr)")
        #expect(stderr.contains("2 HTTP 404 Not Found (reasons in the error column)"), "\(stderr)")
        let after = try checkStore(dir, server)
        #expect(after.count == total - 2)
        let db = try SQLiteConnection(path: dir.file("manifest.db"))
        #expect(try db.query("SELECT count(*) FROM thumbnails")[0][0] == String(total))
        // Only what the killed run had not stored is fetched again; the 404s once each.
        #expect(server.requestsServed - requests0 == total - before.count)
        let report = try JSONDecoder().decode(
            RunReport.self, from: Data(contentsOf: URL(fileURLWithPath: dir.file("report.json"))))
        #expect(report.notes.first?.counts["resumed"] == Int64(before.count))
        await server.stop()
    }

    @Test func sigintFinishesTheRequestsInFlightAndWritesEveryStoredRecord() async throws {
        var o = TestServerOptions()
        o.latencyMs = 40...80
        let server = try await TestHTTPServer.start(o)
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let total = try writeURLs(server, dir, count: 4000, missing: [])
        let p = try start(dir)
        try await waitForRows(dir.file("manifest.db"), 1)
        p.interrupt()
        let status = await exitStatus(p)
        #expect(status == 130)
        let stored = try checkStore(dir, server)
        let report = try JSONDecoder().decode(
            RunReport.self, from: Data(contentsOf: URL(fileURLWithPath: dir.file("report.json"))))
        #expect(report.outcome == .interrupted)
        // Everything the run reports stored is in the manifest (and on disk, checked above).
        #expect(report.notes.first?.counts["stored"] == Int64(stored.count))
        #expect(stored.count < total)
        #expect(server.requestsServed == stored.count, "each request's record was written")
        await server.stop()
    }
}
