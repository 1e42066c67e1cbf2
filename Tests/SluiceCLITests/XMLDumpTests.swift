import Foundation
import SluiceSQLite
import SluiceTesting
import SluiceWorkloads
import Testing

/// `examples/discogs-releases.yaml`, as the tests run it.
let discogsExample = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("examples/discogs-releases.yaml").path

let discogsTables = [
    "release", "release_artist", "release_label", "release_format", "release_genre", "release_style", "release_track",
    "release_identifier", "release_company", "release_video", "release_image",
]

/// A copy of the example in `dir`, so that its rejects file lands there.
func exampleCopy(_ dir: TemporaryDirectory, maxErrors: String? = nil) throws -> String {
    var text = try String(contentsOfFile: discogsExample, encoding: .utf8)
    if let maxErrors {
        text = text.replacingOccurrences(
            of: "  rejects: discogs.rejects.jsonl", with: "  rejects: discogs.rejects.jsonl\n  max_errors: \(maxErrors)"
        )
    }
    return try dir.write(maxErrors == nil ? "discogs.yaml" : "strict.yaml", text)
}

/// Occurrences of `needle` in the file at `path`.
func occurrences(_ needle: String, in path: String) throws -> Int {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    return text.components(separatedBy: needle).count - 1
}

/// The expected `changes` line of an update run of `gen`'s dumps.
/// The report line of an update run: every release the update dump repeats byte for byte is skipped undecoded
/// (the reordered ones are decoded, and found unchanged by their content hash).
func skippedLine(_ gen: W5Generator) -> String {
    "skipped    \(gen.updateCounts().same) unchanged records by their bytes, without decoding them"
}

func changesLine(_ gen: W5Generator) -> String {
    let c = gen.updateCounts()
    return
        "changes    \(c.added) inserted, \(c.changed) updated, \(c.same + c.reordered) unchanged, \(c.deleted) purged"
}

/// Writes the W5 dumps for `releases` into `dir`: the initial one, the update, and a broken update (release 5
/// has a mismatched tag).
func writeDumps(_ gen: W5Generator, _ dir: TemporaryDirectory) throws {
    try gen.writeInitial(to: dir.file("releases.xml"))
    try gen.writeUpdate(to: dir.file("update.xml.gz"))
    try gen.writeUpdate(to: dir.file("update.xml"))
    var text = try String(contentsOfFile: dir.file("update.xml"), encoding: .utf8)
    let start = text.range(of: "<release id=\"5\" ")!
    let title = text.range(of: "</title>", range: start.upperBound..<text.endIndex)!
    text.replaceSubrange(title, with: "</titel>")
    try text.write(toFile: dir.file("broken.xml"), atomically: true, encoding: .utf8)
}

/// The URL of database `name` on the test server, dropped and created empty.
func freshDatabase(_ name: String) throws -> String {
    let url = Psql.testURL
    _ = try Psql.rows(url, "DROP DATABASE IF EXISTS \(name)")
    _ = try Psql.rows(url, "CREATE DATABASE \(name)")
    return String(url[..<url.lastIndex(of: "/")!]) + "/" + name
}

@Suite struct XMLDumpTests {
    /// Every row of every table, sorted, as text (source hashes included: an update run gives an unchanged
    /// record decoded from other bytes the hash of those bytes, as a fresh load would).
    func contents(_ db: String) throws -> [[String?]] {
        let c = try SQLiteConnection(path: db)
        var all: [[String?]] = []
        for t in discogsTables {
            let columns = try c.query("SELECT name FROM pragma_table_info('\(t)')").compactMap { $0[0] }
                .map { "\"\($0)\"" }.joined(separator: ", ")
            all += try c.query("SELECT \(columns) FROM \(t) ORDER BY 1, 2").map { [t] + $0.map { $0 } }
        }
        return all
    }

    @Test func theDiscogsExampleLoadsUpdatesAndPurgesExactlyAsGenerated() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let gen = W5Generator(releases: 700)
        try writeDumps(gen, dir)
        let db = dir.file("d.db")
        let example = try exampleCopy(dir)
        func run(_ dump: String, _ extra: [String] = [], database: String? = nil) throws -> Outcome {
            try sluice(
                ["run", example, "--no-progress"] + extra, cwd: dir.path,
                env: ["DUMP": dir.file(dump), "DATABASE": "sqlite:" + (database ?? db)])
        }
        let first = try run("releases.xml")
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains("records    700 in, 700 out, 0 rejected"))
        #expect(first.stderr.contains("changes    700 inserted, 0 updated, 0 unchanged, 0 purged"))
        // The example maps every element of the dump: the report lists nothing ignored.
        #expect(!first.stderr.contains("ignored "), "\(first.stderr)")
        let c = try SQLiteConnection(path: db)
        for (table, tag) in [
            ("release_track", "<track>"), ("release_genre", "<genre>"), ("release_style", "<style>"),
            ("release_identifier", "<identifier "), ("release_company", "<company>"), ("release_video", "<video "),
            ("release_label", "<label "), ("release_format", "<format "), ("release_image", "<image "),
        ] {
            let n = try c.query("SELECT count(*) FROM \(table)")[0][0]
            #expect(n == String(try occurrences(tag, in: dir.file("releases.xml"))), "\(table)")
        }
        // Every description of every format is kept (a JSON array per format), none dropped.
        let xml = try String(contentsOfFile: dir.file("releases.xml"), encoding: .utf8)
        let inFormats = xml.components(separatedBy: "<descriptions>").dropFirst().map {
            $0.components(separatedBy: "</descriptions>")[0].components(separatedBy: "<description>").count - 1
        }.reduce(0, +)
        #expect(inFormats > 700)
        #expect(
            try c.query("SELECT sum(json_array_length(descriptions)) FROM release_format")[0][0] == String(inFormats))
        // The bare '&' and '&#13;' of the notes arrive as text.
        #expect(try c.query("SELECT notes FROM release WHERE id = 1")[0][0]?.contains("R&B mix\r\n") == true)

        let update = try run("update.xml.gz", ["--skip-unchanged", "--purge-missing"])
        #expect(update.status == 0, "\(update.stderr)")
        #expect(update.stderr.contains(changesLine(gen)), "\(update.stderr)")
        #expect(update.stderr.contains(skippedLine(gen)), "\(update.stderr)")
        // The updated store holds exactly what a fresh load of the update dump holds.
        let fresh = try run("update.xml.gz", database: dir.file("fresh.db"))
        #expect(fresh.status == 0, "\(fresh.stderr)")
        #expect(try contents(db) == contents(dir.file("fresh.db")))
        let again = try run("update.xml.gz", ["--skip-unchanged", "--purge-missing"])
        #expect(
            again.stderr.contains(
                "changes    0 inserted, 0 updated, \(700 - gen.updateCounts().deleted + gen.added) unchanged, 0 purged")
        )
        // The reordered releases got the source hash of their new bytes in the update run: none is decoded.
        let skipped = 700 - gen.updateCounts().deleted + gen.added
        #expect(again.stderr.contains("skipped    \(skipped) unchanged records by their bytes"), "\(again.stderr)")
    }

    @Test func purgingNeverFollowsARunWithRejectsOrAnAbortedRun() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let gen = W5Generator(releases: 400)
        try writeDumps(gen, dir)
        let db = dir.file("d.db")
        let env = ["DATABASE": "sqlite:" + db]
        let discogsExample = try exampleCopy(dir)
        #expect(
            try sluice(
                ["run", discogsExample, "--no-progress"], cwd: dir.path,
                env: env.merging(["DUMP": dir.file("releases.xml")]) { $1 }
            ).status == 0)
        let c = try SQLiteConnection(path: db)
        let before = try c.query("SELECT count(*) FROM release")[0][0]
        // Release 5 is unreadable in this dump: purging would delete it and every release the dump dropped.
        let r = try sluice(
            ["run", discogsExample, "--no-progress", "--skip-unchanged", "--purge-missing"], cwd: dir.path,
            env: env.merging(["DUMP": dir.file("broken.xml")]) { $1 })
        #expect(r.status == 3, "\(r.stderr)")
        #expect(r.stderr.contains("purge      skipped: some records were rejected"))
        #expect(r.stderr.contains("0 purged"))
        #expect(try c.query("SELECT count(*) FROM release WHERE id = 5")[0][0] == "1")
        #expect(
            try c.query("SELECT count(*) FROM release")[0][0] == String(Int(before!)! + gen.added))
        let rejects = try String(contentsOfFile: dir.file("discogs.rejects.jsonl"), encoding: .utf8)
        #expect(rejects.contains("end tag </titel> does not match the open element <title>"))
        // An aborted run (the first rejected record is one too many) purges nothing either.
        let strict = try exampleCopy(dir, maxErrors: "0")
        let a = try sluice(
            ["run", strict, "--no-progress", "--purge-missing"], cwd: dir.path,
            env: env.merging(["DUMP": dir.file("broken.xml")]) { $1 })
        #expect(a.status == 1, "\(a.stderr)")
        #expect(a.stderr.contains("purge      skipped: the run did not complete"))
        #expect(try c.query("SELECT count(*) FROM release")[0][0] == String(Int(before!)! + gen.added))
    }
}

@Suite struct XMLConfigTests {
    @Test func transformsOnRecordsWithChildTablesAreAConfigurationError() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        _ = try dir.write("d.xml", "<r><x id=\"1\"><t>a</t></x></r>")
        let p = try dir.write(
            "p.yaml",
            """
            source: {path: d.xml, record: /r/x, key: id, fields: {id: "@id"}, children: {x_t: {path: t, fields: {t: .}}}}
            transforms: [{mime: {from: id}}]
            sink: {url: "sqlite:d.db", table: x, mode: upsert, key: [id]}
            """)
        let r = try sluice(["run", p, "--no-progress"], cwd: dir.path)
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderr.contains("transforms cannot run on XML records with child tables"))
    }

    @Test func theHashColumnsAreNamedOrTurnedOffInThePipelineFile() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        _ = try dir.write("d.xml", "<r><x id=\"1\"><t>a</t></x></r>")
        for (keys, want) in [
            ("", "id,t,content_hash,source_hash"), ("hash: false, ", "id,t"),
            ("source_hash: false, ", "id,t,content_hash"),
            ("hash: h, source_hash: raw, ", "id,t,h,raw"), ("hash: false, source_hash: raw, ", "id,t"),
        ] {
            let p = try dir.write(
                "p.yaml",
                """
                source: {path: d.xml, record: /r/x, key: id, \(keys)fields: {id: {path: "@id", type: int64}, t: t}}
                sink: {url: "sqlite:d.db", table: x, mode: upsert, key: [id]}
                """)
            try? FileManager.default.removeItem(atPath: dir.file("d.db"))
            let r = try sluice(["run", p, "--no-progress"], cwd: dir.path)
            #expect(r.status == 0, "\(r.stderr)")
            let columns = try SQLiteConnection(path: dir.file("d.db")).query("SELECT name FROM pragma_table_info('x')")
            #expect(columns.compactMap { $0[0] }.joined(separator: ",") == want, "\(keys)")
        }
    }
}

@Suite(.enabled(if: !Psql.testURL.isEmpty, "SLUICE_PG_URL is not set: run scripts/test, which starts PostgreSQL"))
struct PostgresXMLDumpTests {
    @Test func theDiscogsExampleUpdatesPostgreSQLExactlyAsGenerated() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let gen = W5Generator(releases: 600)
        try writeDumps(gen, dir)
        let db = try freshDatabase("w5_\(getpid())")
        let fresh = try freshDatabase("w5_fresh_\(getpid())")
        let example = try exampleCopy(dir)
        func run(_ dump: String, _ extra: [String] = [], into: String) throws -> Outcome {
            try sluice(
                ["run", example, "--no-progress"] + extra, cwd: dir.path,
                env: ["DUMP": dir.file(dump), "DATABASE": into])
        }
        let first = try run("releases.xml", into: db)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains("changes    600 inserted, 0 updated, 0 unchanged, 0 purged"))
        // The child tables got their keys after the load.
        let keyed =
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE i.indisprimary AND c.relname LIKE 'release_%'"
        #expect(try Psql.rows(db, keyed)[0][0] == "10")
        // A child table left without its key (a killed run) gets it back when the next run opens.
        _ = try Psql.rows(db, "ALTER TABLE release_track DROP CONSTRAINT release_track_pkey")
        // A child table a user keyed otherwise (no unique (link, position) key): changed records' rows there are
        // replaced rather than merged.
        _ = try Psql.rows(
            db,
            "ALTER TABLE release_genre DROP CONSTRAINT release_genre_pkey; CREATE INDEX ON release_genre (release_id)")
        let update = try run("update.xml.gz", ["--skip-unchanged", "--purge-missing"], into: db)
        #expect(try Psql.rows(db, keyed)[0][0] == "9")
        #expect(update.status == 0, "\(update.stderr)")
        #expect(update.stderr.contains(changesLine(gen)), "\(update.stderr)")
        #expect(update.stderr.contains(skippedLine(gen)), "\(update.stderr)")
        #expect(try run("update.xml.gz", into: fresh).status == 0)
        for t in discogsTables {
            let q =
                "SELECT count(*), coalesce(sum(hashtext(to_jsonb(x)::text)::int8), 0) FROM \(t) x"
            #expect(try Psql.rows(db, q) == Psql.rows(fresh, q), "\(t)")
        }
        // The reordered releases got the source hash of their new bytes: the next update run decodes none.
        let again = try run("update.xml.gz", ["--skip-unchanged", "--purge-missing"], into: db)
        #expect(again.status == 0, "\(again.stderr)")
        let all = 600 - gen.updateCounts().deleted + gen.added
        #expect(again.stderr.contains("skipped    \(all) unchanged records by their bytes"), "\(again.stderr)")
        #expect(try Psql.rows(db, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%sluice_seen'")[0][0] == "0")
        // A broken record: nothing purged, release 5 kept.
        let broken = try run("broken.xml", ["--skip-unchanged", "--purge-missing"], into: db)
        #expect(broken.status == 3, "\(broken.stderr)")
        #expect(broken.stderr.contains("purge      skipped"))
        #expect(try Psql.rows(db, "SELECT count(*) FROM release WHERE id = 5")[0][0] == "1")
    }

    @Test func aKeyRepeatedAcrossBatchesKeepsItsLastOccurrence() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = try freshDatabase("w5_repeat_\(getpid())")
        let pipeline = try dir.write(
            "p.yaml",
            """
            source:
              path: ${DUMP}
              format: xml
              record: /r/x
              key: id
              fields: {id: {path: "@id", type: int64}, v: v}
              children: {x_tag: {path: tags/tag, fields: {tag: .}}}
            sink: {url: "\(db)", table: x, mode: upsert, key: [id], writers: 3}
            batching: {max_rows: 2}
            """)
        func record(_ id: Int, _ v: String) -> String {
            "<x id=\"\(id)\"><v>\(v)</v><tags><tag>\(v)1</tag><tag>\(v)2</tag></tags></x>"
        }
        func run(_ records: [String]) throws -> Outcome {
            let dump = try dir.write("d.xml", "<r>" + records.joined(separator: "\n") + "</r>")
            return try sluice(
                ["run", pipeline, "--no-progress", "--skip-unchanged"], cwd: dir.path, env: ["DUMP": dump])
        }
        let first = try run((1...6).map { record($0, "a") })
        #expect(first.status == 0, "\(first.stderr)")
        // Release 1 changes and changes back; 99 is new twice; the last occurrence of each must stay.
        let second = try run([
            record(1, "b"), record(2, "a"), record(99, "n"), record(3, "a"), record(4, "a"), record(1, "a"),
            record(5, "a"), record(99, "m"), record(6, "a"),
        ])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(
            try Psql.rows(db, "SELECT id, v FROM x WHERE id IN (1, 99) ORDER BY id") == [["1", "a"], ["99", "m"]])
        #expect(
            try Psql.rows(
                db,
                "SELECT x_id, string_agg(tag, ',' ORDER BY position) FROM x_tag WHERE x_id IN (1, 99) GROUP BY x_id ORDER BY x_id"
            )
                == [["1", "a1,a2"], ["99", "m1,m2"]])
    }

    @Test func textWithSurroundingSpacesIsStoredExactlyInSQLiteAndPostgreSQL() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pg = try freshDatabase("w5_exact_\(getpid())")
        // As in the Discogs releases dump: titles and track titles with spaces around them.
        let dump = try dir.write(
            "d.xml",
            """
            <releases>
            <release id="1"><title>Circostanze </title>
              <tracklist><track><position>A1</position><title> Intro</title></track></tracklist>
            </release>
            <release id="2"><title>  Two  Spaces  </title><tracklist/></release>
            </releases>
            """)
        let expected = [["1", "Circostanze "], ["2", "  Two  Spaces  "]]
        for store in ["sqlite:" + dir.file("x.db"), pg] {
            let pipeline = try dir.write(
                "p.yaml",
                """
                source:
                  path: \(dump)
                  record: /releases/release
                  fields: {id: {path: "@id", type: int64}, title: title}
                  children: {release_track: {path: tracklist/track, fields: {track_position: position, title: title}}}
                sink: {url: "\(store)", table: release, mode: upsert, key: [id]}
                """)
            let r = try sluice(["run", pipeline, "--no-progress"], cwd: dir.path)
            #expect(r.status == 0, "\(r.stderr)")
            let q = "SELECT id, title FROM release ORDER BY id"
            let t = "SELECT title FROM release_track"
            if store.hasPrefix("sqlite:") {
                let c = try SQLiteConnection(path: dir.file("x.db"))
                #expect(try c.query(q) == expected.map { $0.map { Optional($0) } })
                #expect(try c.query(t) == [[" Intro"]])
            } else {
                #expect(try Psql.rows(pg, q) == expected)
                #expect(try Psql.rows(pg, t) == [[" Intro"]])
            }
        }
    }
}
