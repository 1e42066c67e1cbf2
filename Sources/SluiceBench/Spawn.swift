import Foundation
import SluiceReport
import SluiceTesting

#if canImport(Glibc)
    import Glibc
#endif

/// A finished child process: its status, wall time and peak RSS.
struct ChildRun {
    var status: Int32
    var seconds: Double
    var peakRSSBytes: Int64
    var stderr: String
}

/// Runs a command to completion with `posix_spawn`, measuring wall time and the child's own peak RSS
/// (`wait4`'s `ru_maxrss`). Standard output is discarded, standard error is captured to a file.
func spawn(_ argv: [String], stderrPath: String = "/dev/null") throws -> ChildRun {
    var fileActions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&fileActions)
    defer { posix_spawn_file_actions_destroy(&fileActions) }
    posix_spawn_file_actions_addopen(&fileActions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&fileActions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var cargs = argv.map { strdup($0) } + [nil]
    defer { for p in cargs { free(p) } }
    var pid: pid_t = 0
    let t0 = MonotonicClock.now()
    let rc = posix_spawnp(&pid, argv[0], &fileActions, nil, &cargs, environ)
    guard rc == 0 else { throw BenchError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    let seconds = Double(MonotonicClock.now() - t0) / 1e9
    let err = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
    let exit = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    return ChildRun(status: exit, seconds: seconds, peakRSSBytes: Int64(usage.ru_maxrss) * 1024, stderr: err)
}

/// A benchmark failure with a message.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// The `sluice` binary a benchmark runs: `override`, or the one beside `sluice-bench`.
func sluiceBinary(_ override: String?) throws -> String {
    let bin =
        override
        ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("sluice")
        .path
    guard FileManager.default.isExecutableFile(atPath: bin) else {
        throw BenchError("no sluice binary at \(bin); build with swift build -c release")
    }
    return bin
}

/// The PostgreSQL server a benchmark uses: `override`, or `SLUICE_PG_URL`.
func serverURL(_ override: String?) throws -> String {
    guard let url = override ?? ProcessInfo.processInfo.environment["SLUICE_PG_URL"] else {
        throw BenchError("no server: pass --url or set SLUICE_PG_URL (scripts/bench starts one)")
    }
    return url
}

/// One side-by-side scenario. Each of `runs` rounds runs the reference, then sluice (alternating, so machine
/// noise hits both alike); each run returns its child process and a checksum of what it loaded. Once the
/// checksums agree, prints the medians and the ratio and returns them for the JSON results.
func sideBySide(
    name: String, reference: String, rows: Int, runs: Int, runReference: () throws -> (ChildRun, String),
    runSluice: () throws -> (ChildRun, String)
) throws -> [String: Any] {
    var refTimes: [Double] = []
    var sluiceTimes: [Double] = []
    var refRSS: Int64 = 0
    var sluiceRSS: Int64 = 0
    var refSum = ""
    var sluiceSum = ""
    for _ in 0..<max(1, runs) {
        let (r, rs) = try runReference()
        refTimes.append(r.seconds)
        refRSS = max(refRSS, r.peakRSSBytes)
        refSum = rs
        let (l, ls) = try runSluice()
        sluiceTimes.append(l.seconds)
        sluiceRSS = max(sluiceRSS, l.peakRSSBytes)
        sluiceSum = ls
    }
    guard refSum == sluiceSum else {
        throw BenchError("\(name): loaded contents differ\n  reference: \(refSum)\n  sluice:    \(sluiceSum)")
    }
    let rt = median(refTimes)
    let st = median(sluiceTimes)
    print(
        String(
            format:
                "%@\n  %-48@ %6.2f s  %9.0f rows/s  peak RSS %@\n  %-48@ %6.2f s  %9.0f rows/s  peak RSS %@\n  ratio %.2f×   contents equal (%@)",
            name, reference, rt, Double(rows) / rt, Format.bytes(refRSS), "sluice load", st, Double(rows) / st,
            Format.bytes(sluiceRSS), rt / st, String(refSum.prefix(40))))
    return [
        "scenario": name, "reference": reference, "referenceSeconds": rt, "sluiceSeconds": st, "ratio": rt / st,
        "rows": rows, "sluicePeakRSSBytes": sluiceRSS, "referencePeakRSSBytes": refRSS, "referenceRuns": refTimes,
        "sluiceRuns": sluiceTimes,
    ]
}

/// `psql` against `url` without reading ~/.psqlrc, quiet, stopping at the first error, followed by `arguments`
/// (`-c SQL` or `-f script`).
func psql(_ url: String, _ arguments: [String]) -> [String] {
    ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1"] + arguments
}

/// Statements the benchmarks run to prepare and check a server (outside the timed runs), through `psql`.
struct AdminSQL {
    /// The server.
    let url: String

    /// Runs one statement.
    func execute(_ sql: String) throws { _ = try Psql.rows(url, sql) }

    /// Rows of a query, every column as text (NULL as nil).
    func rows(_ sql: String) throws -> [[String?]] { try Psql.rows(url, sql) }
}
