import ArgumentParser
import Foundation
import SluicePostgres
import SluiceReport
import SluiceWorkloads

/// W0 into PostgreSQL: `psql \copy` and a staging-table upsert script against `sluice load`, same data and
/// table definitions, alternating runs in one process, contents checked equal.
struct W0Postgres: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "w0-postgres",
        abstract: "W0 CSV into PostgreSQL: sluice vs psql \\copy (append) and vs a staging-table upsert script.")

    @Option(help: "Rows (1x = 2,000,000).") var rows = 2_000_000
    @Option(help: "Where generated data is kept.") var dir = "bench-data"
    @Option(help: "The sluice binary (default: beside this one).") var sluice: String?
    @Option(help: "Runs per tool and scenario; the median is reported.") var runs: Int = 3
    @Option(help: "Server URL (default: $SLUICE_PG_URL; scripts/bench starts a throwaway server).") var url: String?
    @Option(help: "Scenarios: append, upsert-empty, upsert-changed, upsert-same (comma-separated).")
    var only = "append,upsert-empty,upsert-changed,upsert-same"
    @Option(help: "Extra arguments for sluice load (e.g. --writers 1).") var sluiceArgs: String = ""
    @Option(help: "Also write the results as JSON here.") var json: String?

    static let columns = "id bigint, name text, ts timestamptz, value double precision, tags text"

    struct Scenario {
        var name: String
        var key: Bool
        /// The CSV the target is filled from before each run (untimed), if any.
        var prefill: String?
        var reference: String
    }

    func run() throws {
        let fm = FileManager.default
        let url = try serverURL(url)
        let bin = try sluiceBinary(sluice)
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let csv = "\(dir)/w0-\(rows).csv"
        let changed = "\(dir)/w0-\(rows)-seed43.csv"
        for (path, seed) in [(csv, UInt64(42)), (changed, 43)] where !fm.fileExists(atPath: path) {
            print("generating \(path) …")
            try W0Generator(rows: rows, seed: seed).write(to: path + ".tmp", format: .csv)
            try fm.moveItem(atPath: path + ".tmp", toPath: path)
        }
        let absCSV = URL(fileURLWithPath: csv).standardizedFileURL.path
        let wanted = Set(only.split(separator: ",").map(String.init))
        var scenarios: [Scenario] = []
        if wanted.contains("append") {
            scenarios.append(
                Scenario(
                    name: "CSV → PostgreSQL append (logged table, no key)", key: false, prefill: nil,
                    reference: "psql \\copy"))
        }
        for (tag, prefill, what) in [
            ("upsert-empty", nil, "empty target"),
            ("upsert-changed", changed, "target holds every key, every row changed"),
            ("upsert-same", csv, "target holds identical rows"),
        ] where wanted.contains(tag) {
            scenarios.append(
                Scenario(
                    name: "CSV → PostgreSQL upsert on id (\(what))", key: true, prefill: prefill,
                    reference: "staging script (\\copy + INSERT … ON CONFLICT)"))
        }
        let admin = AdminSQL(url: url)
        let extra = sluiceArgs.split(separator: " ").map(String.init)
        var results: [[String: Any]] = []
        print(
            "W0 → PostgreSQL, \(Format.count(Int64(rows))) rows, \(ProcessInfo.processInfo.activeProcessorCount) cores, median of \(runs)"
        )
        for s in scenarios {
            results.append(
                try sideBySide(
                    name: s.name, reference: s.reference, rows: rows, runs: runs,
                    runReference: {
                        try prepare(admin, s, "events")
                        let script = "\(dir)/ref.sql"
                        if s.key {
                            try """
                            BEGIN;
                            CREATE TEMP TABLE stage (LIKE events) ON COMMIT DROP;
                            \\copy stage FROM '\(absCSV)' WITH (FORMAT csv, HEADER true)
                            INSERT INTO events SELECT * FROM stage ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, ts = EXCLUDED.ts, value = EXCLUDED.value, tags = EXCLUDED.tags;
                            COMMIT;

                            """.write(toFile: script, atomically: true, encoding: .utf8)
                        } else {
                            try "\\copy events FROM '\(absCSV)' WITH (FORMAT csv, HEADER true)\n".write(
                                toFile: script, atomically: true, encoding: .utf8)
                        }
                        let r = try spawn(
                            psql(url, ["-f", script]),
                            stderrPath: "\(dir)/ref.err")
                        guard r.status == 0 else { throw BenchError("psql failed (\(r.status)): \(r.stderr)") }
                        return (r, try checksum(admin, "events"))
                    },
                    runSluice: {
                        try prepare(admin, s, "events")
                        var args = [
                            bin, "load", csv, "--into", url, "--table", "events", "--no-progress", "--schema",
                            W0Generator.schemaSpec,
                        ]
                        if s.key { args += ["--key", "id", "--mode", "upsert"] }
                        let l = try spawn(args + extra, stderrPath: "\(dir)/sluice.err")
                        guard l.status == 0 else { throw BenchError("sluice failed (\(l.status)): \(l.stderr)") }
                        return (l, try checksum(admin, "events"))
                    }))
        }
        if let json {
            try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
                .write(to: URL(fileURLWithPath: json))
        }
    }

    /// A fresh table (dropped and created), filled from the scenario's prefill file, vacuumed and analyzed.
    func prepare(_ s: AdminSQL, _ scenario: Scenario, _ table: String) throws {
        try s.execute("DROP TABLE IF EXISTS \(table)")
        try s.execute("CREATE TABLE \(table) (\(Self.columns)\(scenario.key ? ", PRIMARY KEY (id)" : ""))")
        if let prefill = scenario.prefill {
            let path = URL(fileURLWithPath: prefill).standardizedFileURL.path
            let r = try spawn(
                psql(try serverURL(url), ["-c", "\\copy \(table) FROM '\(path)' WITH (FORMAT csv, HEADER true)"]),
                stderrPath: "\(dir)/prefill.err")
            guard r.status == 0 else { throw BenchError("prefill failed: \(r.stderr)") }
            try s.execute("VACUUM ANALYZE \(table)")
        }
        try s.execute("CHECKPOINT")
    }

    /// Row count and a hash over every row's text.
    func checksum(_ s: AdminSQL, _ table: String) throws -> String {
        let r = try s.rows(
            "SELECT count(*)::text || '|' || coalesce(sum(hashtext(t::text)::int8), 0)::text || '|' || coalesce(sum(id), 0)::text FROM \(table) t"
        )
        return r.first?.first.flatMap { $0 } ?? ""
    }
}
