import Foundation
import SluiceCSV
import SluiceCore
import SluiceFiles
import SluicePostgres
import SluiceRuntime
import SluiceTesting
import Testing

let allTypes = Schema([
    Field("id", .int64), Field("f", .float64), Field("b", .bool), Field("s", .string), Field("raw", .bytes),
    Field("t", .timestamp), Field("j", .json),
])

let sample: [[Value]] = [
    [
        .int64(1), .float64(1.5), .bool(true), .string("café 😀 \u{0}x"), .bytes([0, 255, 10]),
        .timestamp(1_714_564_800_500_001), .json("{\"a\": [1]}"),
    ],
    [.int64(2), .null, .bool(false), .string(""), .null, .null, .null],
    [.int64(3), .float64(-0.1), .null, .null, .bytes([]), .timestamp(-1), .json("null")],
    [
        .int64(Int64.max), .float64(1e300), .bool(true), .string("quote ' \" , \n\t\\"), .bytes([1]),
        .timestamp(-62_135_596_800_000_000), .json("[]"),
    ],
    [
        .int64(Int64.min), .float64(-0.0), .bool(false), .string("日本語"), .bytes(Array(0...255)), .timestamp(0),
        .json("{}"),
    ],
]

@Suite(.enabled(if: PG.available, "SLUICE_PG_URL is not set: run scripts/test, which starts PostgreSQL"))
struct PostgresSinkTests {
    /// Writer lanes are tasks that hold their connection for the whole run: every batch of a lane goes
    /// through the same server backend, and the lanes' connections are closed when the run ends.
    @Test func eachWriterLaneHoldsOneConnectionForTheRunAndClosesIt() async throws {
        let t = PG.table("lanes")
        try await PG.exec("CREATE TABLE \(t) (id bigint PRIMARY KEY, name text, pid int DEFAULT pg_backend_pid())")
        let rows = (1...600).map { [Value.int64(Int64($0)), .string("n\($0)")] }
        let report = try await PG.load(
            rows, schema: Schema([Field("id", .int64), Field("name", .string)]), table: t, mode: .upsert(key: ["id"]),
            batchSize: 10, writers: 2)
        #expect(report.outcome == .clean && report.recordsOut == 600)
        // 60 batches (of 10 rows), at most 2 connections: one per lane, not one per batch.
        let pids = try PG.texts("SELECT DISTINCT pid FROM \(t)").compactMap { $0[0] }
        #expect((1...2).contains(pids.count), "\(pids)")
        // Closed with their lanes (the server's backend exits a moment after the client closes).
        var alive = pids.count
        for _ in 0..<100 where alive > 0 {
            alive =
                Int(
                    try PG.texts("SELECT count(*) FROM pg_stat_activity WHERE pid IN (\(pids.joined(separator: ",")))")[
                        0][0]
                        ?? "") ?? -1
            if alive > 0 { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(alive == 0)
    }

    @Test func appendCreatesTheTableAndEveryTypeRoundTripsExactly() async throws {
        // PostgreSQL rejects NUL in text; the first row's string has one and must be rejected, alone.
        let t = PG.table("append_types")
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let report = try await PG.load(sample, schema: allTypes, table: t, mode: .append, rejects: dir.file("r.jsonl"))
        #expect(report.recordsOut == 4)
        #expect(report.recordsRejected == 1)
        let rejects = try RejectsFile.read(dir.file("r.jsonl"))
        #expect(rejects.count == 1 && rejects[0].stage == "sink" && rejects[0].reason.contains("0x00"))
        let (schema, rows) = try await PG.read("SELECT * FROM \(t)", key: "id")
        #expect(schema == allTypes)
        let expected = sample.dropFirst().sorted { a, b in
            if case .int64(let x) = a[0], case .int64(let y) = b[0] { return x < y }
            return false
        }
        #expect(rows == Array(expected))
        let types = try PG.texts(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '\(t)'::regclass AND attnum > 0 ORDER BY attnum"
        ).map { $0[0]! }
        #expect(
            types == ["bigint", "double precision", "boolean", "text", "bytea", "timestamp with time zone", "jsonb"])
    }

    @Test func valuesAreConvertedToTheExistingTablesOwnTypes() async throws {
        let t = PG.table("own_types")
        try await PG.exec(
            """
            CREATE TABLE \(t) (id integer PRIMARY KEY, small smallint, name varchar(5), price numeric(8,2), \
            day date, at timestamp, u uuid, doc json, r real)
            """)
        let schema = try Schema.parse(
            "id:int64,small:int64,name:string,price:float64,day:timestamp,at:timestamp,u:string,doc:string,r:float64")
        let rows: [[Value]] = [
            [
                .int64(1), .int64(-3), .string("abc"), .float64(12.5), .timestamp(1_714_521_600_000_000),
                .timestamp(1_714_564_800_123_456), .string("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
                .string("{\"k\":  [1,2]}"), .float64(0.5),
            ],
            [.int64(2), .null, .null, .null, .null, .null, .null, .null, .null],
            // Out of range for smallint: rejected before sending.
            [.int64(3), .int64(40_000), .string("x"), .null, .null, .null, .null, .null, .null],
            // Too long for varchar(5): refused by the server, found by bisection.
            [.int64(4), .int64(1), .string("toolong"), .null, .null, .null, .null, .null, .null],
            [.int64(5), .int64(1), .string("ok"), .null, .null, .null, .string("not-a-uuid"), .null, .null],
            [.int64(6), .int64(2), .string("fine"), .float64(-1), .null, .null, .null, .null, .null],
        ]
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let report = try await PG.load(
            rows, schema: schema, table: t, mode: .append, batchSize: 6, rejects: dir.file("r"))
        #expect(report.recordsOut == 3)
        let reasons = try RejectsFile.read(dir.file("r")).sorted { $0.raw < $1.raw }.map(\.reason)
        #expect(reasons.count == 3)
        #expect(reasons.contains { $0.contains("40000 is out of range for smallint") })
        #expect(reasons.contains { $0.contains("too long") && $0.contains("22001") })
        #expect(reasons.contains { $0.contains("not a UUID") })
        let got = try PG.texts("SELECT id, small, name, price, day, at, u, doc, r FROM \(t) ORDER BY id")
        #expect(
            got == [
                [
                    "1", "-3", "abc", "12.50", "2024-05-01", "2024-05-01 12:00:00.123456",
                    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{\"k\":  [1,2]}", "0.5",
                ],
                ["2", nil, nil, nil, nil, nil, nil, nil, nil],
                ["6", "2", "fine", "-1.00", nil, nil, nil, nil, nil],
            ])
    }

    @Test func upsertWritesOnlyChangedRowsAndKeepsTheLastOfARepeatedKey() async throws {
        let t = PG.table("upsert")
        let schema = try Schema.parse("id:int64!,name:string,v:float64")
        try await PG.load(
            (1...6).map { [.int64($0), .string("n\($0)"), .float64(Double($0))] }, schema: schema, table: t,
            mode: .upsert(key: ["id"]))
        let before = Dictionary(
            uniqueKeysWithValues: try PG.texts("SELECT id, xmin::text FROM \(t)").map { ($0[0]!, $0[1]!) })
        let second: [[Value]] = [
            [.int64(1), .string("n1"), .float64(1)],  // identical: no write
            [.int64(2), .string("changed"), .float64(2)],  // changed
            [.int64(3), .string("n3"), .null],  // changed to null
            [.int64(7), .string("new"), .float64(7)],  // new
            [.int64(7), .string("newer"), .float64(8)],  // same key again in the batch: the last one wins
            [.int64(4), .string("n4"), .float64(4)],  // identical
        ]
        let r = try await PG.load(second, schema: schema, table: t, mode: .upsert(key: ["id"]), batchSize: 6)
        #expect(r.outcome == .clean)
        let after = try PG.texts("SELECT id, name, v, xmin::text FROM \(t) ORDER BY id")
        #expect(
            after.map { Array($0.prefix(3)) } == [
                ["1", "n1", "1"], ["2", "changed", "2"], ["3", "n3", nil], ["4", "n4", "4"], ["5", "n5", "5"],
                ["6", "n6", "6"], ["7", "newer", "8"],
            ])
        let xmin = Dictionary(uniqueKeysWithValues: after.map { ($0[0]!, $0[3]!) })
        // Unchanged rows keep their row version; changed rows get a new one.
        #expect(xmin["1"] == before["1"] && xmin["4"] == before["4"] && xmin["5"] == before["5"])
        #expect(xmin["2"] != before["2"] && xmin["3"] != before["3"])
    }

    @Test func withSeveralWritersTheLastOccurrenceOfAKeyAcrossBatchesWins() async throws {
        let t = PG.table("order")
        let schema = try Schema.parse("id:int64!,name:string")
        // 80 batches of the same 150 keys: every batch overwrites the one before it.
        let rows: [[Value]] = (0..<80).flatMap { b in (0..<150).map { k in [.int64(Int64(k)), .string("b\(b)")] } }
        let r = try await PG.load(
            rows, schema: schema, table: t, mode: .upsert(key: ["id"]), batchSize: 150, writers: 3)
        #expect(r.outcome == .clean)
        let names = try PG.texts("SELECT name, count(*) FROM \(t) GROUP BY name")
        #expect(names.map { [$0[0]!, $0[1]!] } == [["b79", "150"]])

        // The same for update: the last batch's value stays.
        let updates: [[Value]] = (0..<80).flatMap { b in
            (0..<150).map { k in [.int64(Int64(k)), .string("u\(b)")] }
        }
        let u = try await PG.load(
            updates, schema: schema, table: t, mode: .update(key: ["id"], set: ["name"], filter: nil), batchSize: 150,
            writers: 3)
        #expect(u.outcome == .clean)
        let updated = try PG.texts("SELECT name, count(*) FROM \(t) GROUP BY name")
        #expect(updated.map { [$0[0]!, $0[1]!] } == [["u79", "150"]])
    }

    @Test func updateSetsColumnsFromUnnestWhereTheFilterHolds() async throws {
        let t = PG.table("upd")
        try await PG.exec(
            "CREATE TABLE \(t) (id bigint PRIMARY KEY, blob text, mime text)",
            "INSERT INTO \(t) SELECT g, 'b' || (g % 3), CASE WHEN g = 2 THEN 'keep/me' END FROM generate_series(1, 6) g"
        )
        let schema = try Schema.parse("blob:string,mime:string,extra:bytes")
        let rows: [[Value]] = [
            [.string("b1"), .string("image/png"), .bytes([1])], [.string("b2"), .string("text/plain"), .null],
            [.string("missing"), .string("x/y"), .null],
        ]
        let r = try await PG.load(
            rows, schema: schema, table: t, mode: .update(key: ["blob"], set: ["mime"], filter: "t.mime IS NULL"))
        #expect(r.outcome == .clean)
        #expect(
            try PG.texts("SELECT id, mime FROM \(t) ORDER BY id") == [
                ["1", "image/png"], ["2", "keep/me"], ["3", nil], ["4", "image/png"], ["5", "text/plain"],
                ["6", nil],
            ])
    }

    @Test func replaceSwapsTheTableOnlyAfterACompleteRun() async throws {
        let t = PG.table("repl")
        try await PG.exec("CREATE TABLE \(t) (id bigint PRIMARY KEY, name text)", "INSERT INTO \(t) VALUES (1, 'old')")
        let schema = try Schema.parse("id:int64,name:string")
        // An aborted run (a fatal sink refusal after the first batch) leaves the old table.
        var o = PipelineOptions()
        o.rejectsPath = nil
        o.maxErrors = ErrorLimit("0")
        let dup: [[Value]] = [[.int64(5), .string("a")], [.int64(5), .string("dup")], [.int64(6), .string("b")]]
        let aborted = try await Pipeline(
            source: ArraySource(schema: schema, rows: dup, batchSize: 3),
            sink: PostgresSink(url: PG.url, table: t, mode: .replace), options: o
        ).run()
        #expect(aborted.outcome == .aborted)
        #expect(try PG.texts("SELECT id, name FROM \(t)") == [["1", "old"]])
        let r = try await PG.load(
            [[.int64(2), .string("new")], [.int64(3), .string("newer")]], schema: schema, table: t, mode: .replace)
        #expect(r.outcome == .clean)
        #expect(try PG.texts("SELECT id, name FROM \(t) ORDER BY id") == [["2", "new"], ["3", "newer"]])
        // The replacement keeps the old table's definition (its primary key).
        #expect(
            try PG.texts("SELECT count(*) FROM pg_index WHERE indrelid = '\(t)'::regclass AND indisprimary") == [["1"]])
    }

    @Test func aConstraintViolationIsBisectedToTheOffendingRowsWhileTheRestCommit() async throws {
        let t = PG.table("bisect")
        try await PG.exec("CREATE TABLE \(t) (id bigint PRIMARY KEY, v double precision CHECK (v >= 0))")
        let schema = try Schema.parse("id:int64,v:float64")
        var rows: [[Value]] = (1...100).map { [.int64($0), .float64(Double($0))] }
        rows[16] = [.int64(17), .float64(-1)]
        rows[70] = [.int64(71), .float64(-2)]
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let r = try await PG.load(rows, schema: schema, table: t, mode: .append, batchSize: 50, rejects: dir.file("r"))
        #expect(r.outcome == .completedWithRejects)
        #expect(r.recordsOut == 98)
        let rejects = try RejectsFile.read(dir.file("r"))
        #expect(Set(rejects.map(\.raw)) == ["[17,-1.0]", "[71,-2.0]"])
        #expect(rejects.allSatisfy { $0.reason.contains("23514") })
        // The server's DETAIL quotes the row: it is kept in the rejects file, never in the report.
        #expect(rejects.allSatisfy { $0.reason.contains("Failing row contains") }, "\(rejects.map(\.reason))")
        #expect(!r.text.contains("Failing row"))
        #expect(try PG.texts("SELECT count(*), sum(id) FROM \(t)") == [["98", String(5050 - 17 - 71)]])
    }

    @Test(arguments: [WriteMode.append, .upsert(key: ["id"])], [false, true])
    func aConnectionKilledMidBatchIsRetriedWithoutLosingOrDuplicatingRows(mode: WriteMode, atCommit: Bool) async throws
    {
        let t = PG.table("kill")
        let seq = t + "_once"
        // The server kills the writing backend once, in the batch holding id 150: a trigger calls
        // pg_terminate_backend on its own backend (the sequence survives the rollback).
        // - Mid-COPY (a row trigger): it first waits half a second, so that the client has sent the end of its
        //   COPY data; PostgresNIO 1.33 traps (a precondition failure no caller can catch) when a connection
        //   closes while the client side of a COPY is still open.
        // - At commit (a deferred constraint trigger, then pg_sleep, where the termination lands): the COPY
        //   itself has succeeded, so only the COMMIT can tell that the batch is not stored.
        let kill =
            atCommit
            ? "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(10);"
            : "PERFORM pg_sleep(0.5); PERFORM pg_terminate_backend(pg_backend_pid());"
        let trigger =
            atCommit
            ? "CREATE CONSTRAINT TRIGGER kill AFTER INSERT ON \(t) DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
            : "CREATE TRIGGER kill BEFORE INSERT ON \(t) FOR EACH ROW"
        try await PG.exec(
            "CREATE TABLE \(t) (id bigint PRIMARY KEY, v text)",
            "CREATE SEQUENCE \(seq)",
            """
            CREATE FUNCTION \(t)_kill() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.id = 150 AND nextval('\(seq)') = 1 THEN \(kill) END IF;
              RETURN NEW;
            END $$
            """,
            "\(trigger) EXECUTE FUNCTION \(t)_kill()")
        let schema = try Schema.parse("id:int64,v:string")
        let rows: [[Value]] = (1...400).map { [.int64($0), .string("v\($0)")] }
        let r = try await PG.load(rows, schema: schema, table: t, mode: mode, batchSize: 100)
        #expect(r.outcome == .clean, "\(r.abortReason ?? "")")
        // Row 150 was inserted twice (killed, then retried), so the sequence is at 2 and this reads 3.
        #expect(try PG.texts("SELECT nextval('\(seq)')") == [["3"]])
        #expect(try PG.texts("SELECT count(*), count(DISTINCT id), sum(id) FROM \(t)") == [["400", "400", "80200"]])
    }

    @Test func aMissingTableForUpdateAndABadURLAreClearErrors() async throws {
        let schema = try Schema.parse("k:string,m:string")
        await #expect(throws: SluiceError.self) {
            try await PG.load(
                [], schema: schema, table: PG.table("absent"), mode: .update(key: ["k"], set: ["m"], filter: nil))
        }
        #expect(throws: SluiceError.self) { try PostgresSink(url: "postgres://h:notaport/db", table: "t") }
        let unreachable = try PostgresSink(url: "postgres://postgres@127.0.0.1:1/x", table: "t")
        let e = await #expect(throws: SluiceError.self) { try await unreachable.open(schema: schema) }
        #expect(e?.code == .io)
        #expect(e?.message == "cannot connect to postgres://postgres@127.0.0.1:1/x: Connection refused")
    }
}

@Suite(.enabled(if: PG.available, "SLUICE_PG_URL is not set: run scripts/test, which starts PostgreSQL"))
struct PostgresRunAccountingTests {
    @Test func aFileIntoPostgreSQLWithThreeWritersBooksEachThreadOnce() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var csv = "id,name\n"
        for i in 1...40_000 { csv += "\(i),n\(i % 97)\n" }
        let path = try dir.write("e.csv", bytes: Array(csv.utf8))
        let t = PG.table("acct")
        var o = PipelineOptions()
        o.batching = BatchingPolicy(maxRows: 1_000, maxBytes: 16 << 10, maxLatency: .seconds(1))
        o.rejectsPath = nil
        var so = PostgresSinkOptions()
        so.writers = 3
        let report = try await Pipeline(
            source: FileSource(paths: [path], format: CSVFormat(), schema: try Schema.parse("id:int64,name:string")),
            sink: PostgresSink(url: PG.url, table: t, mode: .upsert(key: ["id"]), options: so), options: o
        ).run()
        #expect(report.outcome == .clean && report.recordsOut == 40_000, "\(report.text)")
        let write = try #require(report.stages.first { $0.name.hasPrefix("write ") })
        #expect(write.threads == 3)
        #expect(report.stages.filter(\.isDetail).allSatisfy { $0.threads == 3 })
        #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))\n\(report.text)")
        #expect(try PG.texts("SELECT count(*) FROM \(t)") == [["40000"]])
    }
}
