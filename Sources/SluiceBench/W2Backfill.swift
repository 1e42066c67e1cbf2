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

        // The table, fresh: every row without a type.
        let admin = try PostgresSession(PostgresLocation(url: url))
        defer { admin.close() }
        try admin.execute("DROP TABLE IF EXISTS inode")
        try admin.execute("CREATE TABLE inode (id bigint PRIMARY KEY, blobid text NOT NULL, mime_type text)")
        let r = try spawn(
            [
                "psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                "\\copy inode (id, blobid) FROM '\(csv)' WITH (FORMAT csv, HEADER true)",
            ],
            stderrPath: "\(dir)/w2-prefill.err")
        guard r.status == 0 else { throw BenchError("loading inode failed: \(r.stderr)") }
        // The index a backfill wants: untyped rows by blob id (paging and the update both use it; typed rows
        // leave it).
        try admin.execute("CREATE INDEX inode_untyped ON inode (blobid) WHERE mime_type IS NULL")
        try admin.execute("VACUUM ANALYZE inode")
        try admin.execute("CHECKPOINT")

        // The ceiling, measured before and after the backfill (this machine's speed drifts): libmagic on the
        // same heads, one core, times the cores.
        let ids = (0..<blobs).map { gen.blobID($0) }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let (oneCoreBefore, allCoresBefore) = try measureCeiling(ids: ids, root: root)

        // The backfill.
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
        let run = try spawn(
            [bin, "run", pipeline, "--no-progress", "--report-json", "\(dir)/w2-report.json"],
            stderrPath: "\(dir)/w2-sluice.err")
        guard run.status == 0 else { throw BenchError("sluice failed (\(run.status)): \(run.stderr)") }
        let rate = Double(blobs) / run.seconds

        let (oneCoreAfter, allCoresAfter) = try measureCeiling(ids: ids, root: root)
        let oneCore = (oneCoreBefore + oneCoreAfter) / 2
        let allCores = (allCoresBefore + allCoresAfter) / 2
        let ceiling = oneCore * Double(cores)
        let report = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/w2-report.json")))
        let peakRSS = ((report as? [String: Any])?["peakRSSBytes"] as? NSNumber)?.int64Value ?? run.peakRSSBytes

        // Every row typed, and every type what libmagic says for the whole blob.
        let got = try admin.rows(
            "SELECT blobid, min(mime_type), max(mime_type), count(*) FILTER (WHERE mime_type IS NULL) FROM inode GROUP BY blobid"
        )
        var types: [String: String] = [:]
        for row in got {
            let (id, lo, hi, nulls) = try row.decode((String, String?, String?, Int64).self)
            guard nulls == 0, let lo, lo == hi else { throw BenchError("blob \(id): rows without a type or with two") }
            types[id] = lo
        }
        guard types.count == blobs else { throw BenchError("\(types.count) blobs typed, expected \(blobs)") }
        let magic = try MagicHandle()
        var mismatches = 0
        var histogram: [String: Int] = [:]
        for id in ids {
            let expected = magic.mimeType(file: W2Generator.path(root: root, blobID: id)) ?? "?"
            histogram[expected, default: 0] += 1
            if types[id] != expected {
                if mismatches < 5 { print("  mismatch \(id): sluice \(types[id] ?? "nil"), libmagic \(expected)") }
                mismatches += 1
            }
        }
        print(
            "W2 MIME backfill, \(Format.count(Int64(rows))) rows / \(Format.count(Int64(blobs))) blobs, \(cores) cores, \(libmagicOnly ? "libmagic on every blob" : "fast signatures on")"
        )
        print(
            String(
                format:
                    "  libmagic ceiling   %9.0f blobs/s  (%.0f/s on one core × %d; %.0f before, %.0f after the run)",
                ceiling, oneCore, cores, oneCoreBefore, oneCoreAfter))
        print(
            String(
                format: "  sluice backfill    %9.0f blobs/s  %.2f s  peak RSS %@", rate, run.seconds,
                Format.bytes(peakRSS)))
        print(String(format: "  share of ceiling   %.0f%%", rate / ceiling * 100))
        print(String(format: "  (libmagic on %d threads at once, alone: %.0f blobs/s)", cores, allCores))
        print("  types: \(histogram.count) distinct; \(mismatches) differ from libmagic on the whole blob")
        for (t, n) in histogram.sorted(by: { $0.value > $1.value }) { print("    \(t): \(n)") }
        if let json {
            let out: [String: Any] = [
                "blobs": blobs, "rows": rows, "cores": cores, "ceilingBlobsPerSecond": ceiling,
                "oneCoreDetectionsPerSecond": oneCore, "sluiceBlobsPerSecond": rate, "sluiceSeconds": run.seconds,
                "shareOfCeiling": rate / ceiling, "allCoresDetectionsPerSecond": allCores,
                "sluicePeakRSSBytes": peakRSS, "mismatches": mismatches,
            ]
            try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys])
                .write(to: URL(fileURLWithPath: json))
        }
        if mismatches > 0 { throw BenchError("\(mismatches) types differ from libmagic") }
    }

    /// libmagic detections per second on the blobs' heads: one thread, and one thread per core at once.
    func measureCeiling(ids: [String], root: String) throws -> (Double, Double) {
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
        let magic = try MagicHandle()
        let t0 = MonotonicClock.now()
        for h in heads { h.withUnsafeBytes { _ = magic.mimeType($0) } }
        let oneCore = Double(ids.count) / (Double(MonotonicClock.now() - t0) / 1e9)
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let chunks = (0..<cores).map { k in Array(heads[(k * heads.count / cores)..<((k + 1) * heads.count / cores)]) }
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
        let allCores = Double(ids.count) / (Double(MonotonicClock.now() - t1) / 1e9)
        return (oneCore, allCores)
    }
}
