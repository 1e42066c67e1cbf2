import ArgumentParser
import CAllocCounter
import Foundation
import SluiceCSV
import SluiceCore
import SluiceRuntime
import SluiceSQLite
import SluiceWorkloads

@main
struct SluiceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice-bench",
        abstract: "Side-by-side benchmarks for Sluice (release builds only).",
        subcommands: [
            W0.self, W0Postgres.self, W2.self, Overhead.self, Allocations.self, GenerateW0.self, GenerateW5.self,
            W5.self, W1.self, ServeW1.self,
        ])
}

/// Median of a list.
func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

struct GenerateW0: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "Write the W0 dataset.")
    @Option var rows = 2_000_000
    @Option var format = "csv"
    @Flag var gzip = false
    @Option(name: .shortAndLong) var output: String
    func run() throws {
        guard let f = W0Generator.Format(rawValue: format) else { throw ValidationError("csv or jsonl") }
        try W0Generator(rows: rows).write(to: output, format: f, gzip: gzip)
    }
}

struct W0: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "W0 flat-file loads into SQLite: sluice vs sqlite3 .import, same data, same table, one run.")

    @Option(help: "Rows (1x = 2,000,000).") var rows = 2_000_000
    @Option(help: "Where generated data is kept.") var dir = "bench-data"
    @Option(help: "The sluice binary (default: beside this one).") var sluice: String?
    @Option(help: "Runs per tool and scenario; the median is reported.") var runs: Int = 3
    @Option(help: "Scenarios: csv, upsert, jsonl, gzip (comma-separated).") var only = "csv,upsert,jsonl,gzip"
    @Option(help: "Also write the results as JSON here.") var json: String?

    struct Scenario {
        var name: String
        var table: String
        var referenceInput: String
        var sluiceInput: String
        var sluiceArgs: [String]
        var reference: String
    }

    func run() throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let bin = try sluiceBinary(sluice)
        let csv = "\(dir)/w0-\(rows).csv"
        let jsonl = "\(dir)/w0-\(rows).jsonl"
        let gz = "\(dir)/w0-\(rows).csv.gz"
        let wanted = Set(only.split(separator: ",").map(String.init))
        for (path, format, gzip) in [(csv, W0Generator.Format.csv, false), (jsonl, .jsonl, false), (gz, .csv, true)]
        where !fm.fileExists(atPath: path) {
            if path == jsonl && !wanted.contains("jsonl") { continue }
            if path == gz && !wanted.contains("gzip") { continue }
            print("generating \(path) …")
            try W0Generator(rows: rows).write(to: path + ".tmp", format: format, gzip: gzip)
            try fm.moveItem(atPath: path + ".tmp", toPath: path)
        }
        let plain = "CREATE TABLE events (id INTEGER, name TEXT, ts TEXT, value REAL, tags TEXT)"
        let keyed = "CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT, ts TEXT, value REAL, tags TEXT)"
        let schema = ["--schema", W0Generator.schemaSpec]
        var scenarios: [Scenario] = []
        if wanted.contains("csv") {
            scenarios.append(
                Scenario(
                    name: "CSV → SQLite (append)", table: plain, referenceInput: csv, sluiceInput: csv,
                    sluiceArgs: schema, reference: "sqlite3 .import"))
        }
        if wanted.contains("upsert") {
            scenarios.append(
                Scenario(
                    name: "CSV → SQLite (upsert on id, empty keyed table)", table: keyed, referenceInput: csv,
                    sluiceInput: csv, sluiceArgs: schema + ["--key", "id", "--mode", "upsert"],
                    reference: "sqlite3 .import into the keyed table"))
        }
        if wanted.contains("jsonl") {
            scenarios.append(
                Scenario(
                    name: "JSON Lines → SQLite", table: plain, referenceInput: csv, sluiceInput: jsonl,
                    sluiceArgs: schema, reference: "sqlite3 .import of the same rows as CSV"))
        }
        if wanted.contains("gzip") {
            scenarios.append(
                Scenario(
                    name: "gzip CSV → SQLite", table: plain, referenceInput: csv, sluiceInput: gz, sluiceArgs: schema,
                    reference: "sqlite3 .import of the uncompressed CSV"))
        }
        var results: [[String: Any]] = []
        print(
            "W0, \(Format.count(Int64(rows))) rows, \(ProcessInfo.processInfo.activeProcessorCount) cores, median of \(runs)"
        )
        for s in scenarios {
            // Alternate the tools so that machine noise hits both alike.
            results.append(
                try sideBySide(
                    name: s.name, reference: s.reference, rows: rows, runs: runs,
                    runReference: {
                        let refDB = "\(dir)/ref.db"
                        try prepare(refDB, s.table)
                        let r = try spawn(
                            ["sqlite3", refDB, ".import --csv --skip 1 \(s.referenceInput) events"],
                            stderrPath: "\(dir)/ref.err")
                        guard r.status == 0, r.stderr.isEmpty else {
                            throw BenchError("sqlite3 failed (\(r.status)): \(r.stderr)")
                        }
                        return (r, try checksum(refDB))
                    },
                    runSluice: {
                        let sluiceDB = "\(dir)/sluice.db"
                        try prepare(sluiceDB, s.table)
                        let l = try spawn(
                            [
                                bin, "load", s.sluiceInput, "--into", "sqlite:\(sluiceDB)", "--table", "events",
                                "--no-progress",
                            ] + s.sluiceArgs,
                            stderrPath: "\(dir)/sluice.err")
                        guard l.status == 0 else { throw BenchError("sluice failed (\(l.status)): \(l.stderr)") }
                        return (l, try checksum(sluiceDB))
                    }))
        }
        if let json {
            try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
                .write(to: URL(fileURLWithPath: json))
        }
    }

    func prepare(_ db: String, _ ddl: String) throws {
        for suffix in ["", "-journal", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: db + suffix) }
        try SQLiteConnection(path: db).exec(ddl)
    }

    /// Row count and sums over every column; empty tags count as empty whether stored as '' or NULL.
    func checksum(_ db: String) throws -> String {
        let c = try SQLiteConnection(path: db)
        let r = try c.query(
            """
            SELECT count(*), sum(id), printf('%.2f', total(value)), sum(length(name)), sum(unicode(name)),
                   sum(length(coalesce(tags, ''))), min(ts), max(ts), sum(length(ts)), sum(typeof(value) = 'real')
            FROM events
            """)[0]
        return r.map { $0 ?? "NULL" }.joined(separator: "|")
    }
}

struct Overhead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Framework overhead: ready-made batches → discard sink, no parsing; ns per record.")

    @Option var rows = 20_000_000

    func run() async throws {
        var options = PipelineOptions()
        options.rejectsPath = nil
        // Warm up once, then measure.
        _ = try await Pipeline(source: GeneratorSource(rows: 1_000_000), sink: DiscardSink(), options: options).run()
        let report = try await Pipeline(source: GeneratorSource(rows: rows), sink: DiscardSink(), options: options)
            .run()
        let ns = report.wallSeconds * 1e9 / Double(rows)
        print(report.text)
        print(
            String(
                format: "framework overhead: %.2f ns per record (%@ records in %.3f s, batches of %d rows)", ns,
                Format.count(Int64(rows)), report.wallSeconds, report.batchRows))
        if ns > 20 { throw BenchError("over the 20 ns/record bar") }
    }
}

struct Allocations: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Heap allocations per appended row: batch builders and the CSV decoder (bar: ≤ 0.01).")

    @Option var rows = 1_000_000

    func run() throws {
        // 1. Appending W0 rows to builders, cutting a batch every 65,536 rows.
        let gen = W0Generator(rows: rows)
        var builder = RecordBatchBuilder(schema: W0Generator.schema, rowCapacity: 65_536)
        var kept: RecordBatch?
        sluice_alloc_counter_start()
        gen.forEachRow { row in
            W0Generator.append(row, to: builder)
            if builder.count == 65_536 { kept = builder.build() }
        }
        sluice_alloc_counter_stop()
        _ = kept
        builder = RecordBatchBuilder(schema: W0Generator.schema)
        let builderAllocs = Double(sluice_alloc_counter_allocations()) / Double(rows)

        // 2. Decoding W0 CSV with the CSV decoder, chunk by chunk.
        let dir = FileManager.default.temporaryDirectory.path + "/sluice-alloc-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/w0.csv"
        try gen.write(to: path, format: .csv)
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let format = CSVFormat()
        let headerEnd = data.firstIndex(of: 10)! + 1
        let decoder = try format.makeDecoder(
            schema: W0Generator.schema, header: ["id", "name", "ts", "value", "tags"], file: path)
        let decodeBuilder = RecordBatchBuilder(schema: W0Generator.schema, rowCapacity: 65_536, trackOrigins: true)
        var rejects: [RecordReject] = []
        var decoded = 0
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let body = UnsafeRawBufferPointer(rebasing: raw[headerEnd...])
            var pos = 0
            var line = 0
            sluice_alloc_counter_start()
            while pos < body.count {
                let p = decoder.decode(
                    body, from: pos, line: line, into: decodeBuilder, maxRows: 65_536, maxBytes: 64 << 20,
                    rejects: &rejects)
                pos = p.end
                line = p.line
                decoded += decodeBuilder.build().count
            }
            sluice_alloc_counter_stop()
            if !rejects.isEmpty { throw BenchError("unexpected rejects") }
        }
        let decodeAllocs = Double(sluice_alloc_counter_allocations()) / Double(decoded)
        print(
            String(
                format: "builder append: %.5f allocations per row (%@ rows)", builderAllocs, Format.count(Int64(rows))))
        print(
            String(
                format: "CSV decode:     %.5f allocations per row (%@ rows)", decodeAllocs, Format.count(Int64(decoded))
            ))
        if builderAllocs > 0.01 || decodeAllocs > 0.01 { throw BenchError("over the 0.01 allocations-per-row bar") }
    }
}
