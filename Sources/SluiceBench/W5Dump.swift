import ArgumentParser
import Foundation
import SluicePostgres
import SluiceReport
import SluiceWorkloads

#if canImport(Glibc)
    import Glibc
#endif

/// `sluice-bench generate-w5`: writes the W5 initial and update dumps.
struct GenerateW5: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-w5", abstract: "Write the W5 releases dump and its update dump (gzip).")

    @Option(help: "Releases in the initial dump (1x = 190000).")
    var releases = 190_000

    @Option(help: "Directory for releases.xml.gz and releases-update.xml.gz.")
    var out = "w5"

    @Flag(help: "Write only the initial dump.") var initialOnly = false

    func run() throws {
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let g = W5Generator(releases: releases)
        try g.writeInitial(to: out + "/releases.xml.gz")
        if initialOnly {
            print("wrote \(out)/releases.xml.gz (\(releases) releases)")
            return
        }
        try g.writeUpdate(to: out + "/releases-update.xml.gz")
        let c = g.updateCounts()
        print(
            "wrote \(out)/releases.xml.gz (\(releases) releases) and releases-update.xml.gz: "
                + "\(c.changed) changed, \(c.added) new, \(c.deleted) deleted, \(c.reordered) reordered, \(c.same) same"
        )
    }
}

/// `sluice-bench w5`: the Discogs-shaped dump, side by side with `xmllint --stream --noout` (parsing) and with
/// `psql \copy` of the very same rows as CSV (loading), then the update run against the initial load.
struct W5: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "w5",
        abstract: "W5 XML dump: parse vs xmllint --stream, load vs psql \\copy of the same rows, update run vs load.")

    @Option(help: "Releases (1x = 190,000).") var releases = 190_000
    @Option(help: "Where generated data is kept.") var dir = "bench-data"
    @Option(help: "The sluice binary (default: beside this one).") var sluice: String?
    @Option(help: "The pipeline file.") var pipeline = "examples/discogs-releases.yaml"
    @Option(help: "Server URL (default: $SLUICE_PG_URL).") var url: String?
    @Option(help: "Comma-separated parts to run: parse, load, update.") var only = "parse,load,update"
    @Option(help: "Also write the results as JSON here.") var json: String?
    @Option(help: "Parse runs of each tool, alternating (the median is reported).") var runs = 3
    @Flag(help: "Load and update from uncompressed dumps instead of gzip.") var plainInput = false

    static let tables = [
        "release", "release_artist", "release_label", "release_format", "release_genre", "release_style",
        "release_track", "release_identifier", "release_company", "release_video",
    ]

    func run() throws {
        let bin = try sluiceBinary(sluice)
        let parts = Set(only.split(separator: ",").map(String.init))
        let data = "\(dir)/w5v\(W5Generator.version)-\(releases)"
        let gen = W5Generator(releases: releases)
        let gz = "\(data)/releases.xml.gz"
        // Parsing is compared on a well-formed copy (`&amp;` where the dump has a bare `&`, which xmllint
        // rejects); the loads read the real dump.
        let plain = "\(data)/releases-wellformed.xml"
        let plainGz = "\(data)/releases-wellformed.xml.gz"
        let update = "\(data)/releases-update.xml.gz"
        if !FileManager.default.fileExists(atPath: update) {
            print("generating \(Format.count(Int64(releases))) releases into \(data) …")
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            try gen.writeWellFormed(to: plain)
            try gen.writeWellFormed(to: plainGz)
            try gen.writeInitial(to: gz)
            try gen.writeUpdate(to: update)
        }
        let rawBytes = Double(
            (try FileManager.default.attributesOfItem(atPath: plain)[.size] as? NSNumber)?.int64Value ?? 0)
        var results: [String: Any] = ["releases": releases, "cores": ProcessInfo.processInfo.activeProcessorCount]
        print(
            "W5 → \(Format.count(Int64(releases))) releases, \(Format.bytes(Int64(rawBytes))) of XML, \(ProcessInfo.processInfo.activeProcessorCount) cores"
        )

        if parts.contains("parse") {
            for (name, file) in [("uncompressed", plain), ("gzip", plainGz)] {
                var xs: [Double] = []
                var ss: [Double] = []
                var rss: Int64 = 0
                for _ in 0..<max(1, runs) {
                    let x = try spawn(["xmllint", "--stream", "--noout", file], stderrPath: "\(data)/xmllint.err")
                    guard x.status == 0 else { throw BenchError("xmllint failed (\(x.status)): \(x.stderr)") }
                    xs.append(x.seconds)
                    setenv("DUMP", file, 1)
                    setenv("DATABASE", "discard:", 1)
                    let s = try spawn(
                        [bin, "run", pipeline, "--no-progress", "--report-json", "\(data)/parse.json"],
                        stderrPath: "\(data)/parse.err")
                    guard s.status == 0 else { throw BenchError("sluice failed (\(s.status)): \(s.stderr)") }
                    let rep = try report("\(data)/parse.json")
                    guard rep.recordsOut == Int64(releases) else {
                        throw BenchError("sluice parsed \(rep.recordsOut) releases, expected \(releases)")
                    }
                    ss.append(s.seconds)
                    rss = max(rss, s.peakRSSBytes)
                }
                let x = (seconds: median(xs), 0)
                let s = (seconds: median(ss), peakRSSBytes: rss)
                let ratio = x.seconds / s.seconds
                print(
                    String(
                        format:
                            "parse %@ (median of \(xs.count) alternating runs; xmllint \(xs.map { String(format: "%.2f", $0) }), sluice \(ss.map { String(format: "%.2f", $0) }))\n  xmllint --stream --noout  %6.2f s  %7.1f MB/s\n  sluice (discard:)         %6.2f s  %7.1f MB/s  %8.0f releases/s  peak RSS %@\n  ratio %.2f×",
                        name, x.seconds, rawBytes / 1e6 / x.seconds, s.seconds, rawBytes / 1e6 / s.seconds,
                        Double(releases) / s.seconds, Format.bytes(s.peakRSSBytes), ratio))
                results["parse-\(name)"] = [
                    "xmllintSeconds": x.seconds, "sluiceSeconds": s.seconds, "ratio": ratio,
                    "xmllintMBps": rawBytes / 1e6 / x.seconds, "sluiceMBps": rawBytes / 1e6 / s.seconds,
                    "sluicePeakRSSBytes": s.peakRSSBytes,
                ]
            }
        }

        guard parts.contains("load") || parts.contains("update") else { return try write(results) }
        var loadInput = gz
        var updateInput = update
        if plainInput {
            loadInput = "\(data)/releases.xml"
            updateInput = "\(data)/releases-update.xml"
            if !FileManager.default.fileExists(atPath: updateInput) {
                try gen.writeInitial(to: loadInput)
                try gen.writeUpdate(to: updateInput)
            }
        }
        let inputKind = plainInput ? "XML" : "gzip XML"
        let server = try serverURL(url)
        let admin = AdminSQL(url: server)
        func dropAll(_ schema: String) throws {
            for t in Self.tables { try admin.execute("DROP TABLE IF EXISTS \(schema).\(t)") }
        }
        try dropAll("public")
        try admin.execute("CHECKPOINT")
        setenv("DUMP", loadInput, 1)
        setenv("DATABASE", server, 1)
        let load = try spawn(
            [bin, "run", pipeline, "--no-progress", "--report-json", "\(data)/load.json"],
            stderrPath: "\(data)/load.err")
        guard load.status == 0 else { throw BenchError("sluice failed (\(load.status)): \(load.stderr)") }
        let loadReport = try report("\(data)/load.json")
        let rows = loadReport.recordsOut + loadReport.childRowsOut
        let sums = try checksums(admin, "public")

        if parts.contains("load") {
            // The same rows as CSV files, loaded by psql into copies of the same tables.
            try admin.execute("DROP SCHEMA IF EXISTS ref CASCADE")
            try admin.execute("CREATE SCHEMA ref")
            var script = ""
            for t in Self.tables {
                let csv = URL(fileURLWithPath: "\(data)/\(t).csv").standardizedFileURL.path
                let r = try spawn(
                    psql(server, ["-c", "\\copy public.\(t) TO '\(csv)' WITH (FORMAT csv)"]),
                    stderrPath: "\(data)/export.err")
                guard r.status == 0 else { throw BenchError("export failed: \(r.stderr)") }
                try admin.execute("CREATE TABLE ref.\(t) (LIKE public.\(t) INCLUDING ALL)")
                script += "\\copy ref.\(t) FROM '\(csv)' WITH (FORMAT csv)\n"
            }
            try script.write(toFile: "\(data)/ref.sql", atomically: true, encoding: .utf8)
            try admin.execute("CHECKPOINT")
            let ref = try spawn(
                psql(server, ["-f", "\(data)/ref.sql"]),
                stderrPath: "\(data)/ref.err")
            guard ref.status == 0 else { throw BenchError("psql failed (\(ref.status)): \(ref.stderr)") }
            guard try checksums(admin, "ref") == sums else { throw BenchError("psql loaded different contents") }
            let ratio = ref.seconds / load.seconds
            print(
                String(
                    format:
                        "load into PostgreSQL (%@ rows: %@ releases + %@ child rows)\n  psql \\copy of the same rows as CSV  %6.2f s  %9.0f rows/s\n  sluice run (%@)%@%6.2f s  %9.0f rows/s  %7.0f releases/s  peak RSS %@\n  ratio %.2f×   contents equal",
                    Format.count(rows), Format.count(loadReport.recordsOut), Format.count(loadReport.childRowsOut),
                    ref.seconds, Double(rows) / ref.seconds, inputKind,
                    String(repeating: " ", count: max(1, 22 - inputKind.count)), load.seconds,
                    Double(rows) / load.seconds, Double(releases) / load.seconds, Format.bytes(load.peakRSSBytes), ratio
                ))
            results["load"] = [
                "rows": rows, "psqlSeconds": ref.seconds, "sluiceSeconds": load.seconds, "ratio": ratio,
                "releasesPerSecond": Double(releases) / load.seconds, "sluicePeakRSSBytes": load.peakRSSBytes,
            ]
            try admin.execute("DROP SCHEMA ref CASCADE")
        }

        if parts.contains("update") {
            try admin.execute("VACUUM ANALYZE")
            try admin.execute("CHECKPOINT")
            setenv("DUMP", updateInput, 1)
            let u = try spawn(
                [
                    bin, "run", pipeline, "--skip-unchanged", "--purge-missing", "--no-progress", "--report-json",
                    "\(data)/update.json",
                ],
                stderrPath: "\(data)/update.err")
            guard u.status == 0 else { throw BenchError("sluice update failed (\(u.status)): \(u.stderr)") }
            let c = try report("\(data)/update.json").changes ?? ChangeCounts()
            let want = gen.updateCounts()
            let counted = (c.inserted, c.updated, c.unchanged, c.purged)
            let expected = (
                Int64(want.added), Int64(want.changed), Int64(want.same + want.reordered), Int64(want.deleted)
            )
            guard counted == expected else {
                throw BenchError("update counts \(counted) differ from the generator's \(expected)")
            }
            let written = Double(c.inserted + c.updated + c.purged) / Double(releases)
            print(
                String(
                    format:
                        "update run (--skip-unchanged --purge-missing)\n  initial load  %6.2f s\n  update run    %6.2f s   %@ inserted, %@ updated, %@ unchanged (%@ skipped by their bytes), %@ purged (%.1f%% written)  peak RSS %@\n  %.1f× faster than the initial load",
                    load.seconds, u.seconds, Format.count(c.inserted), Format.count(c.updated),
                    Format.count(c.unchanged), Format.count(c.undecoded ?? 0),
                    Format.count(c.purged), written * 100, Format.bytes(u.peakRSSBytes), load.seconds / u.seconds))
            results["update"] = [
                "loadSeconds": load.seconds, "updateSeconds": u.seconds, "speedup": load.seconds / u.seconds,
                "inserted": c.inserted, "updated": c.updated, "unchanged": c.unchanged, "purged": c.purged,
                "skippedByBytes": c.undecoded ?? 0, "peakRSSBytes": u.peakRSSBytes,
            ]
        }
        try write(results)
    }

    private func write(_ results: [String: Any]) throws {
        guard let json else { return }
        try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: json))
    }

    private func report(_ path: String) throws -> RunReport {
        try JSONDecoder().decode(RunReport.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Per table: row count and an order-independent checksum of the rows' text.
    private func checksums(_ s: AdminSQL, _ schema: String) throws -> [String] {
        try Self.tables.map { t in
            let r = try s.rows(
                "SELECT count(*)::text || ':' || coalesce(sum(hashtext(x::text)::int8), 0)::text FROM \(schema).\(t) x")
            return "\(t)=" + (r.first?.first.flatMap { $0 } ?? "")
        }
    }
}
