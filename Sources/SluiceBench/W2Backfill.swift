import ArgumentParser
import Foundation
import SluiceContent
import SluicePostgres
import SluiceReport
import SluiceWorkloads

#if canImport(Glibc)
    import Glibc
#endif

/// W2: the MIME backfill against the libmagic ceiling measured in the same run.
struct W2: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "w2",
        abstract: "W2 MIME backfill: sluice run examples/mime-backfill.yaml vs the libmagic ceiling, types checked.")

    @Option(help: "Distinct blobs (1x = 200,000).") var blobs = 200_000
    @Option(help: "File rows (1x = 1,000,000).") var rows = 1_000_000
    @Option(help: "Where generated data is kept.") var dir = "bench-data"
    @Option(help: "The sluice binary (default: beside this one).") var sluice: String?
    @Option(help: "The pipeline file.") var pipeline = "examples/mime-backfill.yaml"
    @Option(help: "Server URL (default: $SLUICE_PG_URL).") var url: String?
    @Option(help: "Head bytes (as in the pipeline).") var headBytes = 2048
    @Option(help: "Also write the results as JSON here.") var json: String?
    @Flag(help: "Run the pipeline with fast_signatures: false (libmagic on every blob).") var libmagicOnly = false
    @Option(help: "Backfill runs; each is bracketed by ceiling measurements and the median share is reported.")
    var runs = 3
    @Option(help: "The ceiling is measured on every Nth head (all kinds), so it brackets each run closely.")
    var ceilingStride = 4

    func run() throws {
        let fm = FileManager.default
        let url = try serverURL(url)
        let bin = try sluiceBinary(sluice)
        let gen = W2Generator(blobs: blobs, rows: rows)
        let base = URL(fileURLWithPath: "\(dir)/w2v\(W2Generator.version)-\(blobs)-\(rows)").standardizedFileURL.path
        let root = base + "/blobs"
        let csv = base + "/inode.csv"
        if !fm.fileExists(atPath: csv) {
            print("generating \(Format.count(Int64(blobs))) blobs and \(Format.count(Int64(rows))) rows in \(base) …")
            try? fm.removeItem(atPath: base)
            try gen.write(root: root, rowsCSV: csv + ".tmp")
            try fm.moveItem(atPath: csv + ".tmp", toPath: csv)
        }

        // What libmagic says for every whole blob file: the answer every run is checked against.
        let ids = (0..<blobs).map { gen.blobID($0) }
        let magic = try MagicHandle()
        var expected: [String: String] = [:]
        var histogram: [String: Int] = [:]
        for id in ids {
            let type = magic.mimeType(file: W2Generator.path(root: root, blobID: id)) ?? "?"
            expected[id] = type
            histogram[type, default: 0] += 1
        }
        let heads = try readHeads(ids: ids, root: root)
        let sample = stride(from: 0, to: heads.count, by: max(1, ceilingStride)).map { heads[$0] }
        let cores = ProcessInfo.processInfo.activeProcessorCount

        var pipeline = pipeline
        if libmagicOnly {
            let text = try String(contentsOfFile: pipeline, encoding: .utf8)
            guard text.contains("fast_signatures: true") else {
                throw BenchError("\(pipeline) has no fast_signatures: true")
            }
            pipeline = "\(dir)/w2-libmagic-only.yaml"
            try text.replacingOccurrences(of: "fast_signatures: true", with: "fast_signatures: false").write(
                toFile: pipeline, atomically: true, encoding: .utf8)
        }
        setenv("DATABASE_URL", url, 1)
        setenv("BLOB_ROOT", root, 1)
        let admin = AdminSQL(url: url)

        print(
            "W2 MIME backfill, \(Format.count(Int64(rows))) rows / \(Format.count(Int64(blobs))) blobs, \(cores) cores, \(libmagicOnly ? "libmagic on every blob" : "fast signatures on"), \(runs) runs"
        )
        print(
            "  ceiling: libmagic on one core × \(cores), on every \(ceilingStride)th head (\(Format.count(Int64(sample.count))) heads), right before and right after each run"
        )
        var results: [[String: Any]] = []
        var shares: [Double] = []
        for run in 1...max(1, runs) {
            try prepareTable(admin: admin, url: url, csv: csv)
            let before = measureOneCore(sample)
            let r = try spawn(
                [bin, "run", pipeline, "--no-progress", "--report-json", "\(dir)/w2-report.json"],
                stderrPath: "\(dir)/w2-sluice.err")
            guard r.status == 0 else { throw BenchError("sluice failed (\(r.status)): \(r.stderr)") }
            let after = measureOneCore(sample)
            let rate = Double(blobs) / r.seconds
            let ceiling = (before + after) / 2 * Double(cores)
            let report = try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/w2-report.json")))
            let peakRSS = ((report as? [String: Any])?["peakRSSBytes"] as? NSNumber)?.int64Value ?? r.peakRSSBytes
            let mismatches = try check(admin: admin, expected: expected)
            print(
                String(
                    format:
                        "  run %d: sluice %6.0f blobs/s (%.2f s, peak RSS %@), ceiling %6.0f (%.0f/s before, %.0f/s after) → %.0f%%, %d types differ",
                    run, rate, r.seconds, Format.bytes(peakRSS), ceiling, before, after, rate / ceiling * 100,
                    mismatches))
            shares.append(rate / ceiling)
            results.append([
                "sluiceBlobsPerSecond": rate, "sluiceSeconds": r.seconds, "ceilingBlobsPerSecond": ceiling,
                "oneCoreBefore": before, "oneCoreAfter": after, "shareOfCeiling": rate / ceiling,
                "sluicePeakRSSBytes": peakRSS, "mismatches": mismatches,
            ])
            if mismatches > 0 { throw BenchError("\(mismatches) types differ from libmagic") }
        }
        let allCores = measureAllCores(sample, threads: cores)
        let median = shares.sorted()[shares.count / 2]
        print(
            String(
                format: "  share of ceiling: median %.0f%% (runs: %@)", median * 100,
                shares.map { String(format: "%.0f%%", $0 * 100) }.joined(separator: ", ")))
        print(String(format: "  (libmagic on %d threads at once, alone: %.0f heads/s)", cores, allCores))
        print("  types: \(histogram.count) distinct, every one equal to libmagic's on the whole blob in every run")
        for (t, n) in histogram.sorted(by: { $0.value > $1.value }) { print("    \(t): \(n)") }
        if let json {
            let out: [String: Any] = [
                "blobs": blobs, "rows": rows, "cores": cores, "runs": results, "medianShareOfCeiling": median,
                "allCoresDetectionsPerSecond": allCores, "ceilingSampleHeads": sample.count,
            ]
            try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys])
                .write(to: URL(fileURLWithPath: json))
        }
    }

    /// Recreates `inode` with every row untyped, and the index a backfill wants: untyped rows by blob id
    /// (paging and the update both use it; typed rows leave it).
    func prepareTable(admin: AdminSQL, url: String, csv: String) throws {
        try admin.execute("DROP TABLE IF EXISTS inode")
        try admin.execute("CREATE TABLE inode (id bigint PRIMARY KEY, blobid text NOT NULL, mime_type text)")
        let r = try spawn(
            psql(url, ["-c", "\\copy inode (id, blobid) FROM '\(csv)' WITH (FORMAT csv, HEADER true)"]),
            stderrPath: "\(dir)/w2-prefill.err")
        guard r.status == 0 else { throw BenchError("loading inode failed: \(r.stderr)") }
        try admin.execute("CREATE INDEX inode_untyped ON inode (blobid) WHERE mime_type IS NULL")
        try admin.execute("VACUUM ANALYZE inode")
        try admin.execute("CHECKPOINT")
    }

    /// Rows whose blob has no type, two types, or a type other than libmagic's for the whole file.
    func check(admin: AdminSQL, expected: [String: String]) throws -> Int {
        let got = try admin.rows(
            "SELECT blobid, min(mime_type), max(mime_type), count(*) FILTER (WHERE mime_type IS NULL) FROM inode GROUP BY blobid"
        )
        var mismatches = 0
        var typed = 0
        for row in got {
            let (id, lo, hi, nulls) = (row[0] ?? "", row[1], row[2], Int64(row[3] ?? "") ?? -1)
            typed += 1
            if nulls != 0 || lo != hi || lo != expected[id] {
                if mismatches < 5 {
                    print("  mismatch \(id): sluice \(lo ?? "nil")/\(hi ?? "nil"), libmagic \(expected[id] ?? "?")")
                }
                mismatches += 1
            }
        }
        return mismatches + (expected.count - typed)
    }

    /// The first `headBytes` of every blob.
    func readHeads(ids: [String], root: String) throws -> [[UInt8]] {
        var heads: [[UInt8]] = []
        heads.reserveCapacity(ids.count)
        for id in ids {
            let fd = open(W2Generator.path(root: root, blobID: id), O_RDONLY)
            guard fd >= 0 else { throw BenchError("cannot open blob \(id)") }
            var b = [UInt8](repeating: 0, count: headBytes)
            let n = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, headBytes, 0) }
            close(fd)
            heads.append(Array(b.prefix(max(0, n))))
        }
        return heads
    }

    /// libmagic detections per second on `heads`, one thread.
    func measureOneCore(_ heads: [[UInt8]]) -> Double {
        guard let magic = try? MagicHandle() else { return 0 }
        let t0 = MonotonicClock.now()
        for h in heads { h.withUnsafeBytes { _ = magic.mimeType($0) } }
        return Double(heads.count) / (Double(MonotonicClock.now() - t0) / 1e9)
    }

    /// libmagic detections per second on `heads` split over `threads` threads at once.
    func measureAllCores(_ heads: [[UInt8]], threads: Int) -> Double {
        let chunks = (0..<threads).map { k in
            Array(heads[(k * heads.count / threads)..<((k + 1) * heads.count / threads)])
        }
        let t1 = MonotonicClock.now()
        let group = DispatchGroup()
        for chunk in chunks {
            group.enter()
            Thread.detachNewThread {
                if let m = try? MagicHandle() {
                    for h in chunk { h.withUnsafeBytes { _ = m.mimeType($0) } }
                }
                group.leave()
            }
        }
        group.wait()
        return Double(heads.count) / (Double(MonotonicClock.now() - t1) / 1e9)
    }
}
