import Foundation
import SluiceCSV
import SluiceCore
import SluiceFiles
import SluiceRuntime
import SluiceSQLite
import SluiceTesting
import Testing

let allTypes = Schema([
    Field("id", .int64), Field("f", .float64), Field("b", .bool), Field("s", .string), Field("raw", .bytes),
    Field("t", .timestamp), Field("j", .json),
])

func load(
    _ rows: [[Value]], schema: Schema = allTypes, into db: String, table: String = "t", mode: WriteMode,
    batchSize: Int = 3
) async throws -> RunReport {
    var o = PipelineOptions()
    o.rejectsPath = db + ".rejects.jsonl"
    let report = try await Pipeline(
        source: ArraySource(schema: schema, rows: rows, batchSize: batchSize),
        sink: SQLiteSink(path: db, table: table, mode: mode), options: o
    ).run()
    #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))")
    return report
}

@Suite struct SQLiteSinkTests {
    let sample: [[Value]] = [
        [
            .int64(1), .float64(1.5), .bool(true), .string("café 😀"), .bytes([0, 255, 10]),
            .timestamp(1_714_564_800_500_000), .json("{\"a\":[1]}"),
        ],
        [.int64(2), .null, .bool(false), .string(""), .null, .null, .null],
        [.int64(3), .float64(-0.1), .null, .null, .bytes([]), .timestamp(-1), .json("null")],
        [
            .int64(Int64.max), .float64(1e300), .bool(true), .string("quote ' \" , \n"), .bytes([1]), .timestamp(0),
            .json("[]"),
        ],
    ]

    @Test func appendCreatesTheTableAndRoundTripsEveryType() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = dir.file("a.db")
        let report = try await load(sample, into: db, mode: .append)
        #expect(report.outcome == .clean && report.recordsOut == 4)
        let c = try SQLiteConnection(path: db)
        let rows = try c.query("SELECT id, f, b, s, hex(raw), t, j, typeof(raw), typeof(f) FROM t ORDER BY id")
        #expect(
            rows[0] == [
                "1", "1.5", "1", "café 😀", "00FF0A", "2024-05-01T12:00:00.500000Z", "{\"a\":[1]}", "blob", "real",
            ])
        #expect(rows[1] == ["2", nil, "0", "", "", nil, nil, "null", "null"])  // hex(NULL) is the empty string
        #expect(rows[2] == ["3", "-0.1", nil, nil, "", "1969-12-31T23:59:59.999999Z", "null", "blob", "real"])
        #expect(rows[3][0] == "9223372036854775807" && rows[3][3] == "quote ' \" , \n")
        let ddl = try c.query("SELECT sql FROM sqlite_master WHERE name = 't'")[0][0]!
        #expect(ddl.contains("\"id\" INTEGER") && ddl.contains("\"t\" TEXT") && ddl.contains("\"raw\" BLOB"))
    }

    @Test func upsertConvergesToTheInputAndLastDuplicateWins() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = dir.file("u.db")
        let schema = Schema([Field("id", .int64, nullable: false), Field("v", .string)])
        let first: [[Value]] = (1...50).map { [.int64(Int64($0)), .string("old\($0)")] }
        _ = try await load(first, schema: schema, into: db, mode: .upsert(key: ["id"]), batchSize: 7)
        var second: [[Value]] = (25...75).map { [.int64(Int64($0)), .string("new\($0)")] }
        second.append([.int64(30), .string("last")])
        // Run twice: a re-run of the same input must converge to the same table.
        for _ in 0..<2 {
            _ = try await load(second, schema: schema, into: db, mode: .upsert(key: ["id"]), batchSize: 7)
        }
        let c = try SQLiteConnection(path: db)
        #expect(try c.query("SELECT count(*), min(id), max(id) FROM t")[0] == ["75", "1", "75"])
        #expect(
            try c.query("SELECT v FROM t WHERE id IN (10, 30, 60) ORDER BY id").map { $0[0] } == [
                "old10", "last", "new60",
            ])
    }

    @Test func compositeKeyUpsert() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = dir.file("c.db")
        let schema = Schema([Field("a", .int64), Field("b", .string), Field("v", .float64)])
        _ = try await load(
            [[.int64(1), .string("x"), .float64(1)], [.int64(1), .string("y"), .float64(2)]], schema: schema,
            into: db, mode: .upsert(key: ["a", "b"]))
        _ = try await load(
            [[.int64(1), .string("x"), .float64(9)]], schema: schema, into: db, mode: .upsert(key: ["a", "b"]))
        let c = try SQLiteConnection(path: db)
        #expect(try c.query("SELECT a, b, v FROM t ORDER BY b") == [["1", "x", "9.0"], ["1", "y", "2.0"]])
    }

    @Test func updateSetsColumnsOfMatchingRowsWhereTheFilterHolds() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = dir.file("u.db")
        let c = try SQLiteConnection(path: db)
        try c.exec(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, blob TEXT, mime TEXT); INSERT INTO t VALUES (1, 'a', NULL), (2, 'b', 'keep'), (3, 'a', NULL), (4, 'c', NULL)"
        )
        let schema = Schema([Field("blob", .string), Field("mime", .string), Field("head", .bytes)])
        let r = try await load(
            [
                [.string("a"), .string("x/a"), .bytes([1])], [.string("b"), .string("x/b"), .null],
                [.string("z"), .string("x/z"), .null],
            ],
            schema: schema, into: db, mode: .update(key: ["blob"], set: ["mime"], filter: "mime IS NULL"))
        #expect(r.outcome == .clean)
        #expect(
            try c.query("SELECT id, mime FROM t ORDER BY id") == [
                ["1", "x/a"], ["2", "keep"], ["3", "x/a"], ["4", nil],
            ])
        await #expect(throws: (any Error).self) {
            try await load(
                [], schema: schema, into: db, table: "absent", mode: .update(key: ["blob"], set: ["mime"], filter: nil))
        }
    }

    @Test func replaceSwapsOnlyAfterACompleteRun() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = dir.file("r.db")
        let schema = Schema([Field("id", .int64), Field("v", .string)])
        _ = try await load(
            [[.int64(1), .string("a")], [.int64(2), .string("b")]], schema: schema, into: db, mode: .append)
        _ = try await load([[.int64(9), .string("z")]], schema: schema, into: db, mode: .replace)
        let c = try SQLiteConnection(path: db)
        #expect(try c.query("SELECT id, v FROM t") == [["9", "z"]])
        #expect(try c.query("SELECT count(*) FROM sqlite_master WHERE name LIKE '%sluice_replace%'")[0] == ["0"])
    }

    @Test func constraintViolationsRejectOnlyTheOffendingRows() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = dir.file("k.db")
        let c = try SQLiteConnection(path: db)
        try c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT CHECK (v <> 'bad'))")
        let schema = Schema([Field("id", .int64), Field("v", .string)])
        var input: [[Value]] = (1...100).map { [.int64(Int64($0)), .string("ok")] }
        input[10][1] = .string("bad")
        input[70] = [.int64(5), .string("dup")]
        let report = try await load(input, schema: schema, into: db, mode: .append, batchSize: 64)
        #expect(report.outcome == .completedWithRejects && report.recordsRejected == 2 && report.recordsOut == 98)
        #expect(try c.query("SELECT count(*) FROM t")[0] == ["98"])
        let rejects = try RejectsFile.read(db + ".rejects.jsonl")
        #expect(rejects.map(\.raw) == ["[11,\"bad\"]", "[5,\"dup\"]"])
        #expect(rejects[0].reason.contains("CHECK constraint failed"))
        #expect(rejects[1].reason.contains("UNIQUE constraint failed"))
    }

    @Test func existingTableWithoutTheColumnsIsAClearError() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = dir.file("e.db")
        try SQLiteConnection(path: db).exec("CREATE TABLE t (x INTEGER)")
        await #expect {
            _ = try await load(sample, into: db, mode: .append)
        } throws: { e in "\(e)".contains("has no column(s) id") }
        try SQLiteConnection(path: db).exec("CREATE TABLE u (id INTEGER, v TEXT)")
        await #expect {
            _ = try await load(
                [[.int64(1), .string("a")]], schema: Schema([Field("id", .int64), Field("v", .string)]),
                into: db, table: "u", mode: .upsert(key: ["id"]))
        } throws: { e in "\(e)".contains("upsert needs a PRIMARY KEY or UNIQUE index") }
    }

    @Test func csvRowsCarryTheirLineIntoSinkRejects() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = dir.file("l.db")
        try SQLiteConnection(path: db).exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        let csv = try dir.write("in.csv", "id,name\n1,a\n2,\"multi\nline\"\n1,again\n3,c\n")
        var o = PipelineOptions()
        o.rejectsPath = dir.file("rej.jsonl")
        let report = try await Pipeline(
            source: FileSource(
                paths: [csv], format: CSVFormat(), schema: Schema([Field("id", .int64), Field("name", .string)])),
            sink: SQLiteSink(path: db, table: "t"), options: o
        ).run()
        #expect(report.recordsOut == 3)
        let rejects = try RejectsFile.read(dir.file("rej.jsonl"))
        #expect(rejects.count == 1)
        #expect(rejects[0].line == 5 && rejects[0].offset == 27 && rejects[0].stage == "sink")
    }
}

@Suite struct SQLiteFileErrorTests {
    /// A full disk (here: SQLite's page limit, which fails the same way, `SQLITE_FULL`) names the database
    /// file, so the user knows which disk to look at; an error about a statement does not.
    @Test func aFullDatabaseNamesItsFile() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("full.db")
        let c = try SQLiteConnection(path: path)
        try c.exec("PRAGMA max_page_count = 3; CREATE TABLE t (v TEXT)")
        let full = #expect(throws: SQLiteError.self) {
            for _ in 0..<200 { try c.exec("INSERT INTO t VALUES (hex(randomblob(200)))") }
        }
        #expect(full?.code == 13)
        #expect(full?.description.hasPrefix("\(path): database or disk is full") == true, "\(String(describing: full))")
        let syntax = #expect(throws: SQLiteError.self) { try c.exec("SELEC 1") }
        #expect(syntax?.description.contains(path) == false)
    }
}
