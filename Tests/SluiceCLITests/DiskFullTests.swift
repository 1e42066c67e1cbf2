import Foundation
import SluiceRuntime
import SluiceSQLite
import SluiceTesting
import Testing

/// A full disk, for the SQLite file and for the rejects file: a clean error naming the file, exit 1, whole
/// committed batches intact, a rejects file that is still valid JSON Lines.
@Suite struct DiskFullTests {
    @Test func aFullDiskForTheDatabaseNamesItAndKeepsWholeBatches() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var csv = "id,name\n"
        for i in 0..<60_000 { csv += "\(i),name number \(i)\n" }
        let input = try dir.write("in.csv", csv)
        let db = dir.file("x.db")
        let r = try sluice(
            ["load", input, "--into", "sqlite:" + db, "--table", "t", "--batch-rows", "5000", "--no-progress"],
            cwd: dir.path, fileSizeLimit: 1024)
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("\(db): "), "\(r.stderr)")
        let c = try SQLiteConnection(path: db)
        #expect(try c.query("PRAGMA integrity_check") == [["ok"]])
        let n = try #require(Int(try c.query("SELECT count(*) FROM t")[0][0] ?? ""))
        #expect(n > 0 && n < 60_000 && n % 5000 == 0, "\(n) rows")
        #expect(try c.query("SELECT min(id), max(id) FROM t") == [["0", String(n - 1)]])
    }

    @Test func aFullDiskForTheRejectsFileNamesItAndLeavesWholeLines() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var csv = "id,name\n"
        for i in 0..<40_000 { csv += i % 2 == 0 ? "x\(i),\(String(repeating: "y", count: 40))\n" : "\(i),ok\n" }
        let input = try dir.write("in.csv", csv)
        let rejects = dir.file("r.jsonl")
        let r = try sluice(
            [
                "load", input, "--into", "sqlite:" + dir.file("x.db"), "--table", "t", "--schema",
                "id:int64,name:string",
                "--rejects", rejects, "--max-errors", "100%", "--no-progress",
            ], cwd: dir.path, fileSizeLimit: 2048)
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("\(rejects): cannot write the rejects file"), "\(r.stderr)")
        let read = try RejectsFile.read(rejects)
        #expect(read.count > 1000 && read.count < 20_000)
        #expect(read.allSatisfy { $0.reason.contains("not a valid int64") })
    }
}
