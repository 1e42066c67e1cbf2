import Foundation
import SluiceRuntime
import SluiceSQLite
import SluiceTesting
import SluiceWorkloads
import Testing

/// The built `sluice` binary: beside the test bundle, or `SLUICE_BIN`.
let sluiceBinary: String = {
    if let b = ProcessInfo.processInfo.environment["SLUICE_BIN"] { return b }
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    if dir.path.hasSuffix(".xctest/Contents/MacOS") {
        dir = dir.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
    return dir.appendingPathComponent("sluice").path
}()

struct Outcome {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `sluice` with `args` in `cwd`, optionally feeding `stdin`.
/// Runs the built `sluice`. `fileSizeLimit` (in 512-byte blocks) caps every file it writes, as a full disk
/// would (`ulimit -f`, with SIGXFSZ ignored: a write past the cap fails with EFBIG).
func sluice(
    _ args: [String], cwd: String, stdin: String? = nil, env: [String: String] = [:], fileSizeLimit: Int? = nil
) throws -> Outcome {
    let p = Process()
    if let fileSizeLimit {
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "trap '' XFSZ; ulimit -f \(fileSizeLimit); exec \"$0\" \"$@\"", sluiceBinary] + args
    } else {
        p.executableURL = URL(fileURLWithPath: sluiceBinary)
        p.arguments = args
    }
    if !env.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 } }
    p.currentDirectoryURL = URL(fileURLWithPath: cwd)
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = Pipe()
    p.standardInput = input
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Outcome(
        status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
        stderr: String(decoding: e, as: UTF8.self))
}

@Suite(.serialized) struct CLITests {
    @Test func loadCleanCSVExitsZeroAndWritesTheJSONReport() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try W0Generator(rows: 5_000).write(to: dir.file("events.csv"), format: .csv)
        let r = try sluice(
            [
                "load", "events.csv", "--into", "sqlite:ev.db", "--table", "events", "--key", "id", "--mode", "upsert",
                "--report-json", "report.json",
            ], cwd: dir.path)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("bottleneck:"))
        let db = try SQLiteConnection(path: dir.file("ev.db"))
        #expect(try db.query("SELECT count(*), sum(id) FROM events")[0] == ["5000", "12502500"])
        let json =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.file("report.json"))))
            as! [String: Any]
        #expect(json["recordsOut"] as? Int == 5000)
        #expect(json["outcome"] as? String == "clean")
        #expect((json["stages"] as? [Any])?.count ?? 0 >= 3)
        #expect(json["peakRSSBytes"] as? Int ?? 0 > 0)
    }

    @Test func inferredSchemaGzipAndTableFromFileName() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try W0Generator(rows: 1_000).write(to: dir.file("w0.csv.gz"), format: .csv, gzip: true)
        let r = try sluice(["load", "w0.csv.gz", "--into", "sqlite:out.db", "--no-progress"], cwd: dir.path)
        #expect(r.status == 0, "\(r.stderr)")
        let db = try SQLiteConnection(path: dir.file("out.db"))
        #expect(try db.query("SELECT count(*), typeof(id), typeof(value) FROM w0")[0] == ["1000", "integer", "real"])
    }

    @Test func severalJSONLinesFilesWithADeclaredSchema() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try W0Generator(rows: 300).write(to: dir.file("a.jsonl"), format: .jsonl)
        try W0Generator(rows: 200, firstID: 301).write(to: dir.file("b.jsonl"), format: .jsonl)
        let r = try sluice(
            [
                "load", "a.jsonl", "b.jsonl", "--into", "sqlite:out.db", "--table", "t", "--schema",
                W0Generator.schemaSpec,
            ],
            cwd: dir.path)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(
            try SQLiteConnection(path: dir.file("out.db")).query("SELECT count(*), max(id) FROM t")[0] == [
                "500", "500",
            ])
    }

    @Test func rejectsGoBesideTheTargetAndExitStatusIsThree() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try dir.write("in.csv", "id,v\n1,a\nx,b\n3,c\n4,d,extra\n")
        try FileManager.default.createDirectory(atPath: dir.file("db"), withIntermediateDirectories: true)
        let r = try sluice(
            ["load", "in.csv", "--into", "sqlite:db/t.db", "--schema", "id:int64,v:string"], cwd: dir.path)
        #expect(r.status == 3, "\(r.stderr)")
        let rejects = try String(contentsOfFile: dir.file("db/in.rejects.jsonl"), encoding: .utf8)
        #expect(rejects.split(separator: "\n").count == 2)
        #expect(rejects.contains("\"line\":3") && rejects.contains("\"line\":5"))
        #expect(try SQLiteConnection(path: dir.file("db/t.db")).query("SELECT count(*) FROM \"in\"")[0] == ["2"])
    }

    @Test func maxErrorsAbortsWithStatusOne() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var text = "id\n"
        for i in 0..<3000 { text += i % 10 == 0 ? "bad\n" : "\(i)\n" }
        try dir.write("in.csv", text)
        let count = try sluice(
            [
                "load", "in.csv", "--into", "sqlite:t.db", "--max-errors", "5", "--rejects", "r.jsonl", "--schema",
                "id:int64",
            ], cwd: dir.path)
        #expect(count.status == 1)
        #expect(count.stderr.contains("too many rejected records"))
        let share = try sluice(
            ["load", "in.csv", "--into", "sqlite:u.db", "--max-errors", "20%", "--schema", "id:int64"], cwd: dir.path)
        #expect(share.status == 3)
    }

    @Test(arguments: [
        (["load", "x.csv", "--into", "sqlite:t.db"], "no such file"),
        (["load", "in.csv", "--into", "parquet:out"], "not available"),
        (["load", "in.csv", "--into", "sqlite:t.db", "--mode", "merge"], "unknown mode"),
        (["load", "in.csv", "--into", "sqlite:t.db", "--mode", "upsert"], "needs --key"),
        (["load", "in.csv", "--into", "sqlite:t.db", "--schema", "id:uuid"], "unknown type"),
        (["load", "in.csv", "--into", "sqlite:t.db", "--schema", "nope:int64"], "not a column of the header"),
        (["load", "in.csv"], "--into"),
        (["load", "in.dat", "--into", "sqlite:t.db"], "--format"),
    ])
    func usageErrorsExitTwoWithAClearMessage(args: [String], message: String) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try dir.write("in.csv", "id\n1\n")
        try dir.write("in.dat", "id\n1\n")
        let r = try sluice(args, cwd: dir.path)
        #expect(r.status == 2)
        #expect(r.stderr.contains(message), "\(r.stderr)")
    }

    @Test func pipelineFileRunsAndBadKeysNameTheirLine() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try W0Generator(rows: 100).write(to: dir.file("events.csv"), format: .csv)
        try dir.write(
            "p.yaml",
            """
            source:
              path: events.csv
              schema: {id: int64, name: string, ts: timestamp, value: float64, tags: string}
            sink:
              url: sqlite:out.db
              table: events
              mode: upsert
              key: [id]
            batching:
              max_rows: 10
            errors:
              max_errors: 1%
            """)
        // Run from elsewhere: paths are relative to the pipeline file.
        let r = try sluice(["run", dir.file("p.yaml")], cwd: "/")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try SQLiteConnection(path: dir.file("out.db")).query("SELECT count(*) FROM events")[0] == ["100"])

        try dir.write("bad.yaml", "source:\n  path: events.csv\nsink:\n  url: sqlite:o.db\n  tabel: x\n")
        let bad = try sluice(["run", "bad.yaml"], cwd: dir.path)
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("bad.yaml:5:3") && bad.stderr.contains("unknown key 'tabel'"), "\(bad.stderr)")

        try dir.write(
            "type.yaml", "source:\n  path: events.csv\nsink:\n  url: sqlite:o.db\nbatching:\n  max_rows: many\n")
        let type = try sluice(["run", "type.yaml"], cwd: dir.path)
        #expect(type.status == 2)
        #expect(
            type.stderr.contains("type.yaml:6:13") && type.stderr.contains("max_rows must be an integer"),
            "\(type.stderr)")
    }

    @Test func sigintStopsReadingFlushesAndExits130() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: sluiceBinary)
        p.arguments = ["load", "-", "--into", "sqlite:t.db", "--table", "t", "--schema", "id:int64", "--format", "csv"]
        p.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        let input = Pipe()
        p.standardInput = input
        p.standardError = Pipe()
        try p.run()
        input.fileHandleForWriting.write(
            Data(("id\n" + (1...100).map(String.init).joined(separator: "\n") + "\n").utf8))
        Thread.sleep(forTimeInterval: 2.5)  // past the 1 s batching latency, so the rows are read
        p.interrupt()
        p.waitUntilExit()
        #expect(p.terminationStatus == 130)
        #expect(
            try SQLiteConnection(path: dir.file("t.db")).query("SELECT count(*), sum(id) FROM t")[0] == ["100", "5050"])
    }

    @Test func killMidRunLeavesWholeBatchesAndUpsertRerunConverges() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let rows = 300_000
        try W0Generator(rows: rows).write(to: dir.file("e.csv"), format: .csv)
        let args = [
            "load", "e.csv", "--into", "sqlite:e.db", "--table", "e", "--key", "id", "--mode", "upsert",
            "--schema", W0Generator.schemaSpec, "--batch-rows", "5000",
        ]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: sluiceBinary)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        p.standardError = Pipe()
        try p.run()
        // Kill once some batches are committed (and before the end: 300,000 rows take seconds in a debug build).
        for _ in 0..<400 {
            Thread.sleep(forTimeInterval: 0.025)
            let rows = (try? SQLiteConnection(path: dir.file("e.db")).query("SELECT count(*) FROM e")) ?? []
            if let text = rows.first?.first ?? nil, let count = Int(text), count > 0 { break }
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let db = try SQLiteConnection(path: dir.file("e.db"))
        let partial = try db.query("SELECT count(*), coalesce(max(id), 0) FROM e")[0]
        // Batches commit in input order: what survived is exactly a prefix of the input, and not all of it.
        #expect(partial[0] == partial[1])
        #expect(Int(partial[0] ?? "0")! < rows)
        let again = try sluice(args, cwd: dir.path)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(
            try db.query("SELECT count(*), sum(id), min(id), max(id) FROM e")[0] == [
                "300000", "45000150000", "1", "300000",
            ])
    }

    @Test func quickstartLoadsTheDemo() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let r = try sluice(["quickstart", "--rows", "20000"], cwd: dir.path)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("sluice-demo.db now holds 20000 events"))
        #expect(r.stderr.contains("records    20,000 in, 20,000 out"))
    }
}

@Suite struct InferenceFailureTests {
    /// A file whose sampled records are all broken names its first bad line and why, writes every sampled
    /// record to the rejects file, and exits 2: nothing was loaded.
    @Test func anAllBrokenFileNamesItsFirstBadLineAndKeepsItsRejects() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try dir.write("bad.jsonl", "{\"a\" b}\n{\"a\": 1,}\n")
        let r = try sluice(
            ["load", "bad.jsonl", "--into", "sqlite:x.db", "--table", "t", "--no-progress"], cwd: dir.path)
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderr.contains("bad.jsonl:1: malformed JSON: expected ':'"), "\(r.stderr)")
        #expect(r.stderr.contains("2 rejected"), "\(r.stderr)")
        let rejects = try RejectsFile.read(dir.file("t.rejects.jsonl"))
        #expect(rejects.map(\.line) == [1, 2])
        #expect(rejects.first?.raw == "{\"a\" b}")
    }
}
