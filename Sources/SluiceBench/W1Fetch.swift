import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import SluiceBlobStore
import SluiceReport
import SluiceSQLite
import SluiceTesting

/// Writes the W1 URL list (a CSV with a `url` header) for `count` objects of `server`.
func writeW1URLs(_ server: TestHTTPServer, count: Int, to path: String) throws {
    var text = "url\n"
    text.reserveCapacity(count * 40)
    for id in 1...count { text += server.url(id: id) + "\n" }
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}

/// CPU time the hypervisor gave to other guests (steal) and all CPU time so far, in ticks, from /proc/stat.
func cpuTicks() -> (steal: Int64, total: Int64) {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
        let line = text.split(separator: "\n").first
    else { return (0, 0) }
    let v = line.split(separator: " ").dropFirst().compactMap { Int64($0) }
    return (v.count > 7 ? v[7] : 0, v.prefix(8).reduce(0, +))
}

/// Runs `body` and returns its result with the share of CPU time stolen by the hypervisor meanwhile.
func measuringSteal<T>(_ body: () throws -> T) rethrows -> (T, Double) {
    let a = cpuTicks()
    let r = try body()
    let b = cpuTicks()
    return (r, b.total > a.total ? Double(b.steal - a.steal) / Double(b.total - a.total) : 0)
}

/// Parses `20-50` (milliseconds) into a range.
func millisecondRange(_ text: String) throws -> ClosedRange<Double> {
    let parts = text.split(separator: "-").compactMap { Double($0) }
    guard parts.count == 2, parts[0] >= 0, parts[1] >= parts[0] else {
        throw ValidationError("expected a range of milliseconds like 20-50, got '\(text)'")
    }
    return parts[0]...parts[1]
}

struct ServeW1: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve-w1",
        abstract: "Serve W1's objects on 127.0.0.1 (20–50 ms latency) and write their URL list, until interrupted.")

    @Option(help: "Objects (1x = 12,217).") var objects = 12_217
    @Option(help: "Where to write the URL list (CSV).") var urls = "urls.csv"
    @Option(help: "Injected latency per response, ms.") var latency = "20-50"
    @Flag(help: "Inject W1's fault mix (1% 503, 0.5% stalls, 0.2% 404, 0.1% truncated).") var faults = false

    func run() throws {
        var o = TestServerOptions()
        o.latencyMs = try millisecondRange(latency)
        if faults { o.faultRates = TestServerOptions.w1Faults }
        let server = try TestHTTPServer.startBlocking(o)
        try writeW1URLs(server, count: objects, to: urls)
        print("serving \(objects) objects at http://127.0.0.1:\(server.port)/o/ID; URLs in \(urls). Ctrl-C to stop.")
        while true { sleep(3600) }
    }
}

struct W1: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "W1 bulk fetch: sluice's fetch stage against a loopback server with injected latency, next to the limit concurrency ÷ latency; the fault mix with a re-run; and the naive pattern for contrast."
    )

    @Option(help: "URLs (1x = 12,217).") var urls = 12_217
    @Option(help: "Concurrency levels (comma-separated).") var concurrency = "16,64"
    @Option(help: "Injected latency per response, ms (uniform).") var latency = "20-50"
    @Option(help: "New-connection penalty, ms (e.g. 50-200); default none.") var penalty: String?
    @Option(help: "Where runs keep their files.") var dir = "bench-data/w1"
    @Option(help: "The sluice binary (default: beside this one).") var sluice: String?
    @Option(help: "Parts: clean, faults, naive (comma-separated).") var only = "clean,faults,naive"
    @Option(help: "URLs the naive pattern fetches (its rate is projected to all).") var naiveSample = 300
    @Option(help: "Runs per concurrency level (the median rate is reported).") var runs = 1
    @Option(help: "Also write the results as JSON here.") var json: String?

    /// A new directory for one run, under `dir/runs`.
    private func runDir(_ name: String) -> String {
        "\(dir)/runs/\(name)-\(getpid())-\(MonotonicClock.now())"
    }

    func run() throws {
        let bin = try sluiceBinary(sluice)
        let parts = Set(only.split(separator: ",").map(String.init))
        let lat = try millisecondRange(latency)
        defer { try? FileManager.default.removeItem(atPath: "\(dir)/runs") }
        let meanLatency = (lat.lowerBound + lat.upperBound) / 2 / 1000
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var results: [String: Any] = [
            "urls": urls, "latencyMs": latency, "cores": ProcessInfo.processInfo.activeProcessorCount,
        ]
        print(
            "W1 → \(Format.count(Int64(urls))) URLs, latency \(latency) ms (mean \(meanLatency * 1000) ms), \(ProcessInfo.processInfo.activeProcessorCount) cores"
        )

        if parts.contains("clean") {
            var o = TestServerOptions()
            o.latencyMs = lat
            if let penalty { o.newConnectionPenaltyMs = try millisecondRange(penalty) }
            let server = try TestHTTPServer.startBlocking(o)
            defer { server.stopBlocking() }
            let list = "\(dir)/urls-\(server.port).csv"
            try writeW1URLs(server, count: urls, to: list)
            for c in concurrency.split(separator: ",").compactMap({ Int($0) }) {
                var rates: [Double] = []
                var wrkRates: [Double] = []
                var steals: [Double] = []
                var last: (RunReport, Int, ChildRun)?
                for _ in 0..<max(1, runs) {
                    if let w = try wrk(server: server, concurrency: c, seconds: c >= 64 ? 8 : 15) { wrkRates.append(w) }
                    let connections0 = server.connectionsAccepted
                    let ((rep, child), steal) = try measuringSteal {
                        try fetchRun(bin: bin, list: list, in: runDir("c\(c)"), concurrency: c, timeout: "10s")
                    }
                    steals.append(steal)
                    let stored = rep.notes.first?.counts["stored"] ?? 0
                    guard stored == Int64(urls), rep.outcome == .clean else {
                        throw BenchError("c=\(c): \(stored) of \(urls) stored (\(rep.outcome)): \(child.stderr)")
                    }
                    rates.append(Double(stored) / rep.wallSeconds)
                    last = (rep, server.connectionsAccepted - connections0, child)
                }
                guard let (rep, connections, child) = last else { continue }
                let rate = median(rates)
                let limit = Double(c) / meanLatency
                let fetch = rep.stages.first { $0.name == "fetch" }
                let overheadAll = rep.stages.filter { !$0.isDetail }.reduce(0) { $0 + $1.overheadSeconds }
                let useful = fetch?.busySeconds ?? 0
                let ref = median(wrkRates)
                if !wrkRates.isEmpty {
                    print(
                        String(
                            format:
                                "concurrency %d, wrk (C load generator, same URLs, keep-alive, bodies discarded): %.0f requests/s (runs: %@) → %.1f%% of the limit",
                            c, ref, wrkRates.map { String(format: "%.0f", $0) }.joined(separator: ", "),
                            ref / limit * 100))
                }
                print(
                    String(
                        format:
                            "concurrency %d: sluice %.0f items/s (runs: %@, CPU stolen by the hypervisor: %@), limit %.0f/s → %.1f%% of the limit%@; wall %.2f s, %d connections opened, peak RSS %@\n  fetch slots: busy %.1f s, overhead %.3f s (%.2f%% of busy), starved %.1f s, blocked %.2f s; all stages' overhead %.3f s = %.2f%% of the useful fetch time",
                        c, rate, rates.map { String(format: "%.0f", $0) }.joined(separator: ", "),
                        steals.map { String(format: "%.0f%%", $0 * 100) }.joined(separator: ", "), limit,
                        rate / limit * 100, ref > 0 ? String(format: ", %.2f× wrk", rate / ref) : "", rep.wallSeconds,
                        connections, Format.bytes(child.peakRSSBytes), useful,
                        fetch?.overheadSeconds ?? 0, (fetch?.overheadSeconds ?? 0) / max(useful, 1e-9) * 100,
                        fetch?.starvedSeconds ?? 0, fetch?.blockedSeconds ?? 0, overheadAll,
                        overheadAll / max(useful, 1e-9) * 100))
                results["clean-c\(c)"] = [
                    "itemsPerSecond": rate, "limit": limit, "wrkRequestsPerSecond": ref, "steal": steals,
                    "shareOfLimit": rate / limit,
                    "wallSeconds": rep.wallSeconds,
                    "connections": connections, "fetchBusySeconds": useful,
                    "fetchOverheadSeconds": fetch?.overheadSeconds ?? 0, "allOverheadSeconds": overheadAll,
                    "overheadShare": overheadAll / max(useful, 1e-9), "peakRSSBytes": child.peakRSSBytes,
                ]
            }
        }

        if parts.contains("faults") {
            var o = TestServerOptions()
            o.latencyMs = lat
            o.faultRates = TestServerOptions.w1Faults
            o.stallSeconds = 10
            o.retryAfterSeconds = 1
            let server = try TestHTTPServer.startBlocking(o)
            defer { server.stopBlocking() }
            let list = "\(dir)/urls-faults-\(server.port).csv"
            try writeW1URLs(server, count: urls, to: list)
            let expected = Dictionary(grouping: (1...urls).compactMap { server.fault(of: $0) }, by: { $0 })
                .mapValues(\.count)
            let r0 = server.requestsServed
            let faultDir = runDir("faults")
            let (first, _) = try fetchRun(bin: bin, list: list, in: faultDir, concurrency: 64, timeout: "2s")
            let r1 = server.requestsServed
            let (second, _) = try fetchRun(bin: bin, list: list, in: faultDir, concurrency: 64, timeout: "2s")
            let r2 = server.requestsServed
            let manifest = try SQLiteConnection(path: "\(faultDir)/manifest.db")
            let rows = Int(try manifest.query("SELECT count(*) FROM thumbnails")[0][0] ?? "0") ?? 0
            let storedRows =
                Int(try manifest.query("SELECT count(*) FROM thumbnails WHERE error IS NULL")[0][0] ?? "0") ?? 0
            let reasons = try manifest.query(
                "SELECT error, count(*) FROM thumbnails WHERE error IS NOT NULL GROUP BY error ORDER BY 2 DESC")
            let c1 = first.notes.first?.counts ?? [:]
            let c2 = second.notes.first?.counts ?? [:]
            let lost = urls - rows
            print(
                "fault mix (\(expected.map { "\($0.value) \($0.key.rawValue)" }.sorted().joined(separator: ", "))), concurrency 64, timeout 2 s:\n"
                    + "  first run: \(r1 - r0) requests, \(c1["stored"] ?? 0) stored, \(c1["failed"] ?? 0) failed, \(c1["retried_records"] ?? 0) retried (Retry-After honoured \(c1["retry_after_honoured"] ?? 0)×), wall \(String(format: "%.2f", first.wallSeconds)) s\n"
                    + "  manifest: \(rows) rows (\(lost) lost), \(storedRows) stored; failures: \(reasons.map { "\($0[1] ?? "") × \($0[0] ?? "")" }.joined(separator: "; "))\n"
                    + "  re-run: \(r2 - r1) requests (\(c2["resumed"] ?? 0) stored URLs skipped, \(c2["failed"] ?? 0) failed again), wall \(String(format: "%.2f", second.wallSeconds)) s"
            )
            guard lost == 0 else { throw BenchError("\(lost) URLs have no manifest row") }
            guard Int64(r2 - r1) == c1["failed"] ?? -1 else {
                throw BenchError(
                    "the re-run made \(r2 - r1) requests; only the \(c1["failed"] ?? 0) failed URLs should be fetched")
            }
            results["faults"] = [
                "firstRequests": r1 - r0, "stored": c1["stored"] ?? 0, "failed": c1["failed"] ?? 0, "lost": lost,
                "rerunRequests": r2 - r1, "rerunResumed": c2["resumed"] ?? 0, "firstWallSeconds": first.wallSeconds,
            ]
        }

        if parts.contains("naive") {
            var o = TestServerOptions()
            o.latencyMs = lat
            if let penalty { o.newConnectionPenaltyMs = try millisecondRange(penalty) }
            let server = try TestHTTPServer.startBlocking(o)
            defer { server.stopBlocking() }
            let n = min(naiveSample, urls)
            let c0 = server.connectionsAccepted
            let seconds = try naive(server: server, count: n)
            let rate = Double(n) / seconds
            print(
                String(
                    format:
                        "naive pattern (a new client and connection per URL, one at a time, an INSERT + COMMIT per URL): %d URLs in %.2f s = %.1f items/s, %d connections; projected for %d URLs: %.0f s (%.1f min)",
                    n, seconds, rate, server.connectionsAccepted - c0, urls, Double(urls) / rate,
                    Double(urls) / rate / 60))
            results["naive"] = ["urls": n, "seconds": seconds, "itemsPerSecond": rate]
        }
        if let json {
            try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
                .write(to: URL(fileURLWithPath: json))
        }
    }

    /// The reference ceiling: wrk (if installed) with `concurrency` keep-alive connections on one thread,
    /// walking the same URLs for `seconds`; nil without wrk.
    private func wrk(server: TestHTTPServer, concurrency: Int, seconds: Int) throws -> Double? {
        guard let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"].first(where: FileManager.default.isExecutableFile)
        else { return nil }
        let script = "\(dir)/walk.lua"
        try """
        local i = 0
        request = function()
          i = i % \(urls) + 1
          return wrk.format("GET", "/o/" .. i)
        end
        """.write(toFile: script, atomically: true, encoding: .utf8)
        let out = "\(dir)/wrk.txt"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: wrk)
        p.arguments = ["-t1", "-c\(concurrency)", "-d\(seconds)s", "-s", script, "http://127.0.0.1:\(server.port)/"]
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: out)
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        let text = try String(contentsOfFile: out, encoding: .utf8)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Requests/sec:") }),
            let v = Double(line.split(separator: " ").last ?? "")
        else { throw BenchError("cannot read wrk's output: \(text)") }
        return v
    }

    /// Runs `sluice run` on a W1 pipeline in `d` (its manifest and blob store).
    ///
    /// Each measured run gets a new directory, and old ones are deleted only when the benchmark ends: on
    /// ext4, creating inodes right after deleting thousands is several times slower (the allocator skips
    /// recently freed inodes), which would charge the previous run's clean-up to this one.
    private func fetchRun(
        bin: String, list: String, in d: String, concurrency: Int, timeout: String
    ) throws -> (RunReport, ChildRun) {
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        let absList = URL(fileURLWithPath: list).standardizedFileURL.path
        let pipeline = """
            source: {path: "\(absList)", format: csv, schema: {url: string}}
            transforms:
              - fetch: {url: url, concurrency: \(concurrency), timeout: \(timeout), attempts: 4, blobs: {root: blobs, fsync: batch}}
            sink: {url: "sqlite:manifest.db", table: thumbnails, mode: upsert, key: [url]}
            batching: {max_latency: 1s}
            """
        try pipeline.write(toFile: "\(d)/w1.yaml", atomically: true, encoding: .utf8)
        let child = try spawn(
            [bin, "run", "\(d)/w1.yaml", "--no-progress", "--report-json", "\(d)/report.json"],
            stderrPath: "\(d)/stderr.txt")
        guard child.status == 0 || child.status == 4 else {
            throw BenchError("sluice failed (\(child.status)): \(child.stderr)")
        }
        let rep = try JSONDecoder().decode(
            RunReport.self, from: Data(contentsOf: URL(fileURLWithPath: "\(d)/report.json")))
        return (rep, child)
    }

    /// The first-draft pattern: one URL at a time, a new HTTP client (and connection) for each, the body
    /// written to the blob store, and an INSERT committed per URL.
    private func naive(server: TestHTTPServer, count: Int) throws -> Double {
        let d = runDir("naive")
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        let db = try SQLiteConnection(path: "\(d)/manifest.db")
        try db.exec("CREATE TABLE thumbnails (url TEXT PRIMARY KEY, status INTEGER, bytes INTEGER, sha256 TEXT)")
        let store = try BlobStore(root: "\(d)/blobs", durability: .none)
        let t0 = MonotonicClock.now()
        for id in 1...count {
            let url = server.url(id: id)
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup)
            let response = try client.get(url: url).wait()
            try client.shutdown().wait()
            let body = response.body.map { Array($0.readableBytesView) } ?? []
            let hex = sha256Hex(body)
            try store.write(body, sha256: hex)
            try db.exec(
                "INSERT OR REPLACE INTO thumbnails VALUES ('\(url)', \(response.status.code), \(body.count), '\(hex)')")
        }
        return Double(MonotonicClock.now() - t0) / 1e9
    }
}
