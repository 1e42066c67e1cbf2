import Foundation
import SluiceReport

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
