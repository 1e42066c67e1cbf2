import Foundation
import SluiceSQLite
import SluiceTesting
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A `sluice load -` reading CSV from a pipe the test writes to, with its standard error collected as it comes.
private final class StreamingRun: @unchecked Sendable {
    let process = Process()
    let input = Pipe()
    private let errors = Pipe()
    private let lock = NSLock()
    private var collected = Data()

    init(_ args: [String], cwd: String) throws {
        process.executableURL = URL(fileURLWithPath: sluiceBinary)
        process.arguments = args
        process.currentDirectoryURL = URL(fileURLWithPath: cwd)
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        errors.fileHandleForReading.readabilityHandler = { [self] h in
            let d = h.availableData
            lock.withLock { collected.append(d) }
        }
        try process.run()
    }

    var stderr: String { lock.withLock { String(decoding: collected, as: UTF8.self) } }

    func send(_ text: String) { input.fileHandleForWriting.write(Data(text.utf8)) }

    /// Waits up to `seconds` for the process to exit; true if it did.
    func waitForExit(within seconds: Double) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        return !process.isRunning
    }

    /// Waits until `condition` holds, up to `seconds`.
    func wait(upTo seconds: Double, until condition: () -> Bool) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        while !condition() && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        return condition()
    }
}

private func count(_ db: String) -> Int {
    let rows = (try? SQLiteConnection(path: db).query("SELECT count(*) FROM t")) ?? []
    return Int((rows.first?.first ?? nil) ?? "0") ?? 0
}

private func rows(_ range: ClosedRange<Int>) -> String { range.map { "\($0)\n" }.joined() }

@Suite(.serialized) struct SignalTests {
    /// Loads 100 rows, then holds the database's write lock so that the next batch cannot commit: a stop then
    /// has to wait for the store.
    private func runBlockedOnTheStore(_ dir: TemporaryDirectory) throws -> (StreamingRun, SQLiteConnection) {
        let run = try StreamingRun(
            ["load", "-", "--format", "csv", "--into", "sqlite:t.db", "--table", "t", "--schema", "id:int64"],
            cwd: dir.path)
        run.send("id\n" + rows(1...100))
        #expect(run.wait(upTo: 20) { count(dir.file("t.db")) == 100 }, "\(run.stderr)")
        let blocker = try SQLiteConnection(path: dir.file("t.db"))
        try blocker.exec("BEGIN EXCLUSIVE")
        run.send(rows(101...200))
        Thread.sleep(forTimeInterval: 1.6)  // past the 1 s batching latency: the writer now waits for the lock
        return (run, blocker)
    }

    @Test func aSecondSignalOfEitherKindQuitsAtOnce() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let (run, blocker) = try runBlockedOnTheStore(dir)
        run.process.interrupt()
        Thread.sleep(forTimeInterval: 0.5)
        #expect(run.process.isRunning, "one signal waits for what was read to be written")
        kill(run.process.processIdentifier, SIGTERM)
        #expect(run.waitForExit(within: 3), "SIGINT then SIGTERM must quit at once")
        try blocker.exec("ROLLBACK")
        if !run.process.isRunning { #expect(run.process.terminationStatus == 130) } else { run.process.terminate() }
        // Only whole committed batches remain.
        #expect(count(dir.file("t.db")) == 100)
    }

    @Test func oneSignalWritesAndCommitsWhatWasReadOnceTheStoreAllowsIt() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let (run, blocker) = try runBlockedOnTheStore(dir)
        kill(run.process.processIdentifier, SIGTERM)
        Thread.sleep(forTimeInterval: 0.5)
        #expect(run.process.isRunning)
        try blocker.exec("ROLLBACK")
        #expect(run.waitForExit(within: 30), "\(run.stderr)")
        if run.process.isRunning { run.process.terminate() }
        #expect(run.process.terminationStatus == 130)
        #expect(count(dir.file("t.db")) == 200)
        #expect(run.stderr.contains("INTERRUPTED") && run.stderr.contains("200 out"), "\(run.stderr)")
    }
}

@Suite(.serialized) struct MetricsEndpointTests {
    private func scrape(_ url: URL) async throws -> String {
        let (data, response) = try await URLSession.shared.data(from: url)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        return String(decoding: data, as: UTF8.self)
    }

    /// The value of the series `name` (exact, labels included) in a scrape.
    private func value(_ series: String, in text: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test func metricsAreServedWhileTheRunLastsAndGrowBetweenScrapes() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let run = try StreamingRun(
            [
                "load", "-", "--format", "csv", "--into", "sqlite:t.db", "--table", "t", "--schema", "id:int64",
                "--metrics", "127.0.0.1:0",
            ], cwd: dir.path)
        #expect(run.wait(upTo: 20) { run.stderr.contains("/metrics\n") }, "\(run.stderr)")
        let announced = try #require(run.stderr.split(separator: "\n").first { $0.contains("metrics at http://") })
        let url = try #require(URL(string: String(announced[announced.range(of: "http://")!.lowerBound...])))
        run.send("id\n" + rows(1...100))
        #expect(run.wait(upTo: 20) { count(dir.file("t.db")) == 100 })
        try await Task.sleep(for: .milliseconds(400))
        let first = try await scrape(url)
        run.send(rows(101...300))
        #expect(run.wait(upTo: 20) { count(dir.file("t.db")) == 300 })
        try await Task.sleep(for: .milliseconds(400))
        let second = try await scrape(url)
        for series in [
            "sluice_records_read_total", #"sluice_stage_records_total{stage="write"}"#,
            #"sluice_stage_records_total{stage="read"}"#,
        ] {
            let a = try #require(value(series, in: first), "\(series) in\n\(first)")
            let b = try #require(value(series, in: second), "\(series) in\n\(second)")
            #expect(a == 100 && b == 300, "\(series): \(a) then \(b)")
        }
        for state in ["busy", "overhead", "starved", "blocked"] {
            #expect(second.contains(#"sluice_stage_seconds_total{stage="decode",state="\#(state)"}"#), "\(state)")
        }
        let starved = #"sluice_stage_seconds_total{stage="decode",state="starved"}"#
        #expect((value(starved, in: second) ?? 0) > (value(starved, in: first) ?? 0))
        #expect(value("sluice_records_rejected_total", in: second) == 0)
        #expect(second.contains(#"sluice_queue_depth{queue="chunks"}"#))
        #expect((value("sluice_sink_commit_seconds_count", in: second) ?? 0) >= 2, "\(second)")
        #expect((value("sluice_process_resident_memory_bytes", in: second) ?? 0) > 1_000_000)
        // The text is what Prometheus' own client library parses, when the project's Python environment is there.
        if let python = ProcessInfo.processInfo.environment["SLUICE_PYTHON"] {
            let path = dir.file("scrape.txt")
            try second.write(toFile: path, atomically: true, encoding: .utf8)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: python)
            p.arguments = [
                "-c",
                "import sys; from prometheus_client.parser import text_string_to_metric_families as f; "
                    + "fams = list(f(open(sys.argv[1]).read())); "
                    + "names = {s.name for fam in fams for s in fam.samples}; "
                    + "assert 'sluice_stage_seconds_total' in names and 'sluice_sink_commit_seconds_bucket' in names, names; "
                    + "print(len(fams))",
                path,
            ]
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "prometheus_client rejected the scrape")
        }
        try run.input.fileHandleForWriting.close()
        #expect(run.waitForExit(within: 20))
        #expect(run.process.terminationStatus == 0, "\(run.stderr)")
    }

    @Test func aBadMetricsAddressIsAUsageError() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let r = try sluice(
            ["load", "-", "--format", "csv", "--into", "sqlite:t.db", "--table", "t", "--metrics", "nowhere"],
            cwd: dir.path, stdin: "id\n1\n")
        #expect(r.status == 2 && r.stderr.contains("--metrics takes HOST:PORT"), "\(r.stderr)")
    }
}
