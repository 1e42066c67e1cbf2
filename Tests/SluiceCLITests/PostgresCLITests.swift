import Foundation
import SluiceContent
import SluiceTesting
import SluiceWorkloads
import Testing

@Suite(.enabled(if: !Psql.testURL.isEmpty, "SLUICE_PG_URL is not set: run scripts/test, which starts PostgreSQL"))
struct PostgresCLITests {
    let url = Psql.testURL

    @Test func loadAppendsAndUpsertsIntoPostgreSQL() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try W0Generator(rows: 3_000).write(to: dir.file("events.csv"), format: .csv)
        let table = "cli_events_\(getpid())"
        let append = try sluice(
            ["load", "events.csv", "--into", url, "--table", table, "--no-progress"], cwd: dir.path)
        #expect(append.status == 0, "\(append.stderr)")
        #expect(append.stderr.contains("records    3,000 in, 3,000 out"))
        let upsertTable = table + "_u"
        for _ in 0..<2 {
            let r = try sluice(
                ["load", "events.csv", "--into", url, "--table", upsertTable, "--key", "id", "--mode", "upsert"],
                cwd: dir.path)
            #expect(r.status == 0, "\(r.stderr)")
        }
        let want = try Psql.rows(url, "SELECT count(*), sum(id), sum(hashtext(name)) FROM \(table)")
        #expect(want[0][0] == "3000")
        #expect(try Psql.rows(url, "SELECT count(*), sum(id), sum(hashtext(name)) FROM \(upsertTable)") == want)
        let bad = try sluice(
            ["load", "events.csv", "--into", url, "--table", table, "--mode", "update", "--key", "id"], cwd: dir.path)
        #expect(bad.status == 2 && bad.stderr.contains("--mode update needs --set"))
    }

    @Test func theMimeBackfillExampleTypesEveryBlobAsLibmagicDoes() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let gen = W2Generator(blobs: 400, rows: 1_500)
        try gen.write(root: dir.file("blobs"), rowsCSV: dir.file("inode.csv"))
        // The example's `inode` table, in a database of this test's own.
        let database = "w2_\(getpid())"
        _ = try Psql.rows(url, "DROP DATABASE IF EXISTS \(database)")
        _ = try Psql.rows(url, "CREATE DATABASE \(database)")
        let db = String(url[..<url.lastIndex(of: "/")!]) + "/" + database
        _ = try Psql.rows(db, "CREATE TABLE inode (id bigint PRIMARY KEY, blobid text NOT NULL, mime_type text)")
        _ = try Psql.rows(db, "CREATE INDEX ON inode (blobid) WHERE mime_type IS NULL")
        _ = try Psql.rows(
            db, "\\copy inode (id, blobid) FROM '\(dir.file("inode.csv"))' WITH (FORMAT csv, HEADER true)")
        // One blob goes missing: its head is an error value, its rows stay untyped, the rest are typed.
        let missing = gen.blobID(7)
        try FileManager.default.removeItem(atPath: W2Generator.path(root: dir.file("blobs"), blobID: missing))
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/mime-backfill.yaml").path
        let r = try sluice(
            ["run", example, "--no-progress"], cwd: dir.path, env: ["DATABASE_URL": db, "BLOB_ROOT": dir.file("blobs")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("records    400 in, 400 out"))
        let typed = try Psql.rows(
            db, "SELECT blobid, min(mime_type), count(*) FILTER (WHERE mime_type IS NULL) FROM inode GROUP BY blobid")
        #expect(typed.count == 400)
        let magic = try MagicHandle()
        for row in typed where row[0] != missing {
            #expect(row[1] == magic.mimeType(file: W2Generator.path(root: dir.file("blobs"), blobID: row[0]!)))
            #expect(row[2] == "0")
        }
        #expect(typed.first { $0[0] == missing }?[1] == nil)
    }
}
