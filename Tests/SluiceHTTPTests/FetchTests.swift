import Foundation
import SluiceBlobStore
import SluiceCore
import SluicePostgres
import SluiceReport
import SluiceRuntime
import SluiceSQLite
import SluiceTesting
import Testing

@testable import SluiceHTTP

/// One stored manifest row.
struct ManifestRow: Equatable {
    var url: String
    var status: Int?
    var bytes: Int?
    var sha256: String?
    var attempts: Int
    var error: String?
    var elapsedMs: Double
}

/// A fetch run: URLs → fetch → SQLite manifest (upsert on url) and a blob store, in a temporary directory.
struct FetchRun {
    let dir: TemporaryDirectory
    var db: String { dir.file("manifest.db") }
    var blobRoot: String { dir.file("blobs") }

    init() throws { dir = try TemporaryDirectory(prefix: "sluice-fetch") }

    func run(
        _ urls: [String], options: FetchOptions, durability: BlobStore.Durability = .batch, batchRows: Int = 65_536
    ) async throws -> (RunReport, FetchCounts) {
        let source = ArraySource(
            schema: try Schema.parse("url:string"), rows: urls.map { [.string($0)] }, batchSize: 64)
        let fetch = try FetchTransform(options: options, blobs: BlobStore(root: blobRoot, durability: durability))
        let sink = SQLiteSink(path: db, table: "manifest", mode: .upsert(key: ["url"]), options: SQLiteSinkOptions())
        var po = PipelineOptions()
        po.batching = BatchingPolicy(maxRows: batchRows, maxBytes: 1 << 20, maxLatency: .milliseconds(200))
        po.rejectsPath = dir.file("rejects.jsonl")
        let report = try await Pipeline(source: source, io: fetch, sink: sink, options: po).run()
        #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))")
        #expect(report.recordsFailed == fetch.counts.failed)
        return (report, fetch.counts)
    }

    func rows() throws -> [String: ManifestRow] {
        let c = try SQLiteConnection(path: db)
        var out: [String: ManifestRow] = [:]
        for r in try c.query("SELECT url, status, bytes, sha256, attempts, error, elapsed_ms FROM manifest") {
            out[r[0]!] = ManifestRow(
                url: r[0]!, status: r[1].flatMap { Int($0) }, bytes: r[2].flatMap { Int($0) }, sha256: r[3],
                attempts: Int(r[4]!)!, error: r[5], elapsedMs: Double(r[6]!)!)
        }
        return out
    }
}

func quickServer(_ configure: (inout TestServerOptions) -> Void = { _ in }) async throws -> TestHTTPServer {
    var o = TestServerOptions()
    o.latencyMs = 1...3
    configure(&o)
    return try await TestHTTPServer.start(o)
}

func quickOptions(concurrency: Int = 8) -> FetchOptions {
    var o = FetchOptions()
    o.concurrency = concurrency
    o.timeout = .seconds(5)
    o.retry = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(5), maxDelay: .milliseconds(20))
    return o
}

@Suite(.serialized) struct FetchTests {
    @Test func everyBodyIsStoredByItsHashWithStatusSizeAndNoMoreConnectionsThanConcurrency() async throws {
        let server = try await quickServer()
        let run = try FetchRun()
        defer { run.dir.remove() }
        let ids = Array(1...120)
        let (report, counts) = try await run.run(ids.map { server.url(id: $0) }, options: quickOptions(concurrency: 6))
        await server.stop()
        #expect(report.outcome == .clean)
        let rows = try run.rows()
        #expect(rows.count == ids.count)
        let store = try BlobStore(root: run.blobRoot)
        for id in ids {
            let body = server.objects.body(of: id)
            let r = try #require(rows[server.url(id: id)])
            #expect(r.status == 200 && r.error == nil && r.attempts == 1)
            #expect(r.bytes == body.count)
            #expect(r.sha256 == sha256Hex(body))
            let onDisk = try #require(FileManager.default.contents(atPath: store.path(sha256: r.sha256!)))
            #expect(Array(onDisk) == body)
        }
        #expect(store.path(sha256: "abcdef") == run.blobRoot + "/ab/cd/abcdef")
        #expect(server.connectionsAccepted <= 6)
        #expect(server.maxConcurrentRequests <= 6)
        #expect(server.requestsServed == ids.count)
        #expect(counts.stored == Int64(ids.count) && counts.blobsWritten == Int64(ids.count) && counts.failed == 0)
        // The manifest is written in batches, not per record.
        let write = try #require(report.stages.first { $0.name.hasPrefix("write") })
        #expect(write.records == Int64(ids.count))
        let fetch = try #require(report.stages.first { $0.name == "fetch" })
        #expect(fetch.threads == 6 && fetch.records == Int64(ids.count))
        #expect(report.notes.first?.label == "fetch")
        #expect(report.text.contains("120 stored (120 new blobs"))
    }

    @Test func everyFaultEndsStoredRetriedOrFailedWithItsReason() async throws {
        let server = try await quickServer {
            $0.retryAfterSeconds = 1
            $0.stallSeconds = 5
        }
        let run = try FetchRun()
        defer { run.dir.remove() }
        var options = quickOptions()
        // Long enough that a loaded CI machine never times out a normal response (1–3 ms), short enough to
        // keep the test quick: a stalled attempt ends after it.
        options.timeout = .milliseconds(1500)
        let cases: [(String, TestFault?, Int?)] = [
            ("ok", nil, nil),
            ("503 once", .unavailable, 1), ("503 always", .unavailable, 99),
            ("stall once", .stall, 1), ("stall always", .stall, 99),
            ("404", .notFound, nil),
            ("truncated once", .truncated, 1), ("truncated always", .truncated, 99),
        ]
        var urls: [String: String] = [:]
        for (k, (name, fault, times)) in cases.enumerated() {
            urls[name] = server.url(id: 1000 + k, fault: fault, times: times)
        }
        let (report, counts) = try await run.run(Array(urls.values), options: options)
        await server.stop()
        let rows = try run.rows()
        #expect(rows.count == cases.count, "no record is lost")
        #expect(report.outcome == .clean)
        func row(_ name: String) throws -> ManifestRow { try #require(rows[urls[name]!]) }

        for name in ["ok", "503 once", "stall once", "truncated once"] {
            let r = try row(name)
            #expect(r.status == 200 && r.error == nil && r.sha256 != nil, "\(name): \(r)")
            #expect(r.attempts == (name == "ok" ? 1 : 2), "\(name)")
        }
        // Retry-After: 1 s was honoured before the second attempt.
        #expect(try row("503 once").elapsedMs >= 1000)

        let unavailable = try row("503 always")
        #expect(unavailable.status == 503 && unavailable.sha256 == nil && unavailable.attempts == 3)
        #expect(unavailable.error == "HTTP 503 Service Unavailable (after 3 attempts)")
        let stalled = try row("stall always")
        #expect(stalled.status == nil && stalled.attempts == 3)
        #expect(stalled.error?.hasPrefix("timed out") == true, "\(stalled)")
        let missing = try row("404")
        #expect(missing.status == 404 && missing.attempts == 1 && missing.error == "HTTP 404 Not Found")
        let truncated = try row("truncated always")
        #expect(truncated.status == nil && truncated.attempts == 3 && truncated.sha256 == nil)
        let reason = try #require(truncated.error)
        #expect(
            reason.contains("Content-Length") || reason.contains("closed") || reason.contains("before the body"),
            "\(reason)")

        #expect(counts.stored == 4 && counts.failed == 4)
        #expect(counts.retryAfterHonoured >= 1)
        #expect(report.notes.map(\.label) == ["fetch", "retries", "failed"])
    }

    @Test func aRerunSkipsStoredURLsAndFetchesOnlyTheFailedOnes() async throws {
        let server = try await quickServer()
        let run = try FetchRun()
        defer { run.dir.remove() }
        var options = quickOptions()
        options.retry = RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(1), maxDelay: .milliseconds(5))
        // 40 good URLs; 5 that fail twice (both attempts of the first run), then succeed.
        let good = (1...40).map { server.url(id: $0) }
        let flaky = (41...45).map { server.url(id: $0, fault: .unavailable, times: 2) }
        let (_, first) = try await run.run(good + flaky, options: options)
        #expect(first.stored == 40 && first.failed == 5)
        let before = server.requestsServed
        #expect(before == 40 + 5 * 2)

        let (report, second) = try await run.run(good + flaky, options: options)
        #expect(second.resumed == 40 && second.previouslyFailed == 5)
        #expect(second.requests == 5 && server.requestsServed - before == 5, "only the failed URLs are fetched")
        #expect(second.stored == 5 && second.failed == 0)
        #expect(report.recordsOut == 5)
        let rows = try run.rows()
        #expect(rows.count == 45 && rows.values.allSatisfy { $0.error == nil && $0.status == 200 })

        // A blob that went missing is fetched again, even though the manifest says stored.
        let victim = try #require(rows[good[0]])
        let store = try BlobStore(root: run.blobRoot)
        try FileManager.default.removeItem(atPath: store.path(sha256: victim.sha256!))
        let (_, third) = try await run.run(good + flaky, options: options)
        await server.stop()
        #expect(third.requests == 1 && third.resumed == 44 && third.blobsWritten == 1)
        #expect(store.contains(sha256: victim.sha256!, size: Int64(victim.bytes!)))
    }

    @Test func bodyLimitBadURLsAndRefusedConnectionsFailWithReasons() async throws {
        let server = try await quickServer()
        let run = try FetchRun()
        defer { run.dir.remove() }
        var options = quickOptions()
        options.maxBodyBytes = 4096
        let closedPort = server.port
        let big = server.url(id: 5)
        let (_, counts) = try await run.run(
            [big, "not a url", "ftp://127.0.0.1/x", "http://127.0.0.1:1/o/1"], options: options)
        _ = closedPort
        await server.stop()
        let rows = try run.rows()
        #expect(rows.count == 4)
        let tooBig = try #require(rows[big])
        #expect(tooBig.attempts == 1 && tooBig.error?.hasPrefix("body larger than max_body (4096 bytes") == true)
        #expect(rows["not a url"]?.error?.hasPrefix("bad URL") == true)
        #expect(rows["ftp://127.0.0.1/x"]?.error?.contains("scheme") == true, "\(rows["ftp://127.0.0.1/x"]!)")
        let refused = try #require(rows["http://127.0.0.1:1/o/1"])
        #expect(refused.attempts == 3 && refused.error?.contains("127.0.0.1") == true, "\(refused)")
        #expect(counts.failed == 4 && counts.stored == 0)
    }

    @Test func aNewConnectionPaysItsPenaltyOnceAndPooledRequestsDoNot() async throws {
        // A penalty well above what a loaded 2-core machine adds to a pooled request (CI measured >150 ms).
        let server = try await quickServer { $0.newConnectionPenaltyMs = 500...500 }
        let run = try FetchRun()
        defer { run.dir.remove() }
        let urls = (1...24).map { server.url(id: $0) }
        let (_, counts) = try await run.run(urls, options: quickOptions(concurrency: 2))
        await server.stop()
        #expect(counts.stored == 24)
        #expect(server.connectionsAccepted <= 2)
        let slow = try run.rows().values.filter { $0.elapsedMs >= 500 }
        #expect(slow.count >= 1 && slow.count <= server.connectionsAccepted, "\(slow.map(\.elapsedMs))")
    }

    @Test func perHostRateSpacesRequests() async throws {
        let server = try await quickServer { $0.latencyMs = 0...0 }
        let run = try FetchRun()
        defer { run.dir.remove() }
        var options = quickOptions(concurrency: 16)
        options.rate = 40
        let t0 = ContinuousClock.now
        let (_, counts) = try await run.run((1...21).map { server.url(id: $0) }, options: options)
        let elapsed = ContinuousClock.now - t0
        await server.stop()
        #expect(counts.stored == 21)
        // One token at once, then one per 25 ms: the 21st request cannot start before 500 ms.
        #expect(elapsed >= .milliseconds(480), "\(elapsed)")
    }

    @Test func rateLimiterReservesEvenlySpacedSlotsPerHost() {
        let l = HostRateLimiter(rate: 10, burst: 2)
        let t: UInt64 = 1_000_000_000
        #expect(l.reserve(host: "a", now: t) == 0)
        #expect(l.reserve(host: "a", now: t) == 0)
        #expect(l.reserve(host: "a", now: t) == 100_000_000)
        #expect(l.reserve(host: "a", now: t) == 200_000_000)
        #expect(l.reserve(host: "b", now: t) == 0, "hosts have their own buckets")
        // After a quiet second, the bucket is full again (at most `burst`).
        #expect(l.reserve(host: "a", now: t + 1_500_000_000) == 0)
    }

    @Test func retryAfterTakesSecondsOrAnHTTPDate() throws {
        #expect(RetryAfter("7") == .seconds(7))
        #expect(RetryAfter(" 0 ") == .seconds(0))
        #expect(RetryAfter("soon") == nil)
        #expect(RetryAfter("-3") == nil)
        let d = try #require(RetryAfter("Wed, 21 Oct 2015 07:28:00 GMT"))
        let now = Date(timeIntervalSince1970: 1_445_412_470)  // 10 s earlier
        #expect(d.nanoseconds(now: now) == 10_000_000_000)
        #expect(d.nanoseconds(now: now.addingTimeInterval(60)) == 0)
    }

    @Test func optionsAreChecked() throws {
        var o = FetchOptions()
        o.concurrency = 0
        #expect(throws: SluiceError.self) { try FetchTransform(options: o, blobs: nil) }
        o = FetchOptions()
        o.rate = 0
        #expect(throws: SluiceError.self) { try FetchTransform(options: o, blobs: nil) }
        let f = try FetchTransform(options: FetchOptions(), blobs: nil)
        #expect(throws: SluiceError.self) { try f.outputSchema(for: Schema.parse("link:string")) }
        #expect(throws: SluiceError.self) { try f.outputSchema(for: Schema.parse("url:string,status:int64")) }
        #expect(throws: SluiceError.self) { try f.outputSchema(for: Schema.parse("url:int64")) }
        let s = try f.outputSchema(for: Schema.parse("id:int64,url:string"))
        #expect(s.fields.map(\.name) == ["id", "url", "status", "bytes", "sha256", "elapsed_ms", "attempts", "error"])
    }
}

/// The manifest in PostgreSQL: the state of earlier runs is read from the sink's own table.
@Suite(.enabled(if: !Psql.testURL.isEmpty, "SLUICE_PG_URL is not set: run scripts/test, which starts PostgreSQL"))
struct PostgresManifestTests {
    @Test func aRerunIntoPostgreSQLFetchesOnlyWhatIsNotStored() async throws {
        let server = try await quickServer()
        let dir = try TemporaryDirectory(prefix: "sluice-fetch-pg")
        defer { dir.remove() }
        let table = "fetch_manifest_\(getpid())"
        var options = quickOptions()
        options.retry = RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(1), maxDelay: .milliseconds(5))
        let urls =
            (1...30).map { server.url(id: $0) } + (31...33).map { server.url(id: $0, fault: .unavailable, times: 2) }
        func run() async throws -> FetchCounts {
            let source = ArraySource(
                schema: try Schema.parse("url:string"), rows: urls.map { [.string($0)] }, batchSize: 8)
            let fetch = try FetchTransform(options: options, blobs: BlobStore(root: dir.file("blobs")))
            let sink = try PostgresSink(
                url: Psql.testURL, table: table, mode: .upsert(key: ["url"]), options: PostgresSinkOptions())
            var po = PipelineOptions()
            po.batching = BatchingPolicy(maxRows: 10, maxBytes: 1 << 20, maxLatency: .milliseconds(200))
            po.rejectsPath = dir.file("rejects.jsonl")
            let report = try await Pipeline(source: source, io: fetch, sink: sink, options: po).run()
            #expect(report.outcome == .clean)
            return fetch.counts
        }
        let first = try await run()
        #expect(first.stored == 30 && first.failed == 3)
        let before = server.requestsServed
        let second = try await run()
        await server.stop()
        #expect(second.resumed == 30 && second.previouslyFailed == 3 && second.stored == 3)
        #expect(server.requestsServed - before == 3)
        let rows = try Psql.rows(
            Psql.testURL, "SELECT count(*), count(*) FILTER (WHERE error IS NULL AND status = 200) FROM \(table)")
        #expect(rows == [["33", "33"]])
        _ = try Psql.rows(Psql.testURL, "DROP TABLE \(table)")
    }
}

@Suite struct FetchInterruptTests {
    @Test func stoppingTheRunEndsRetryWaitsAtOnceAsFailures() async throws {
        let server = try await quickServer { $0.retryAfterSeconds = 60 }
        let run = try FetchRun()
        defer { run.dir.remove() }
        var options = quickOptions()
        options.retry = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(1), maxDelay: .milliseconds(5))
        let urls = (1...5).map { server.url(id: $0) } + [server.url(id: 6, fault: .unavailable, times: 9)]
        let source = ArraySource(schema: try Schema.parse("url:string"), rows: urls.map { [.string($0)] })
        let fetch = try FetchTransform(options: options, blobs: BlobStore(root: run.blobRoot))
        let sink = SQLiteSink(
            path: run.db, table: "manifest", mode: .upsert(key: ["url"]), options: SQLiteSinkOptions())
        var po = PipelineOptions()
        po.rejectsPath = run.dir.file("rejects.jsonl")
        let pipeline = Pipeline(source: source, io: fetch, sink: sink, options: po)
        let t0 = ContinuousClock.now
        async let report = pipeline.run()
        // Wait until the 503 asked for a 60 s wait, then stop the run as SIGINT would.
        while server.attempts(of: 6) == 0 { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(200))
        pipeline.cancel()
        let r = try await report
        await server.stop()
        #expect(ContinuousClock.now - t0 < .seconds(30), "the 60 s Retry-After did not hold the stop")
        #expect(r.outcome == .interrupted)
        let rows = try run.rows()
        let waited = try #require(rows[urls[5]])
        #expect(waited.error == "HTTP 503 Service Unavailable (the run stopped before attempt 2)", "\(waited)")
        #expect(rows.values.filter { $0.error == nil }.count == 5)
    }
}
