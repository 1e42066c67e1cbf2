import Foundation
import SluiceCore
import SluiceReport
import SluiceRuntime
import SluiceTesting
import Testing

@Suite struct BatcherTests {
    let policy = BatchingPolicy(maxRows: 100, maxBytes: 1000, maxLatency: .milliseconds(50))

    @Test func flushesOnRowsBytesOrLatencyWhicheverFirst() {
        var b = Batcher(policy: policy)
        #expect(b.add(rows: 60, bytes: 10, now: 0) == .wait)
        #expect(b.add(rows: 40, bytes: 10, now: 1) == .flush(.rows))
        b.reset()
        #expect(b.add(rows: 1, bytes: 999, now: 10) == .wait)
        #expect(b.add(rows: 1, bytes: 1, now: 11) == .flush(.bytes))
        b.reset()
        #expect(b.add(rows: 1, bytes: 1, now: 1_000_000) == .wait)
        #expect(b.deadline == 51_000_000)
        #expect(b.tick(now: 50_999_999) == .wait)
        #expect(b.tick(now: 51_000_000) == .flush(.latency))
        b.reset()
        #expect(b.finish() == .wait)
        _ = b.add(rows: 1, bytes: 1, now: 0)
        #expect(b.finish() == .flush(.end))
    }
}

@Suite struct RetryAndLimitTests {
    @Test func backoffDoublesUpToTheCapWithFullJitter() {
        let r = RetryPolicy(maxAttempts: 5, baseDelay: .milliseconds(100), maxDelay: .seconds(1))
        #expect(r.delay(retry: 0, unit: 1) == .milliseconds(100))
        #expect(r.delay(retry: 2, unit: 1) == .milliseconds(400))
        #expect(r.delay(retry: 10, unit: 1) == .seconds(1))
        #expect(r.delay(retry: 3, unit: 0.5) == .milliseconds(400))
        #expect(r.delay(retry: 3, unit: 0) == .zero)
    }

    @Test func errorLimits() {
        #expect(ErrorLimit("10") == .count(10))
        #expect(ErrorLimit("2.5%") == .percent(2.5))
        #expect(ErrorLimit("x") == nil && ErrorLimit("-1") == nil && ErrorLimit("101%") == nil)
        #expect(ErrorLimit.count(10).exceeded(rejected: 11, seen: 11, final: false))
        #expect(!ErrorLimit.count(10).exceeded(rejected: 10, seen: 10, final: false))
        #expect(!ErrorLimit.percent(1).exceeded(rejected: 5, seen: 100, final: false))
        #expect(ErrorLimit.percent(1).exceeded(rejected: 5, seen: 100, final: true))
        #expect(ErrorLimit.percent(1).exceeded(rejected: 11, seen: 1000, final: false))
    }
}

@Suite struct MemoryBudgetTests {
    func fakeRoot(_ files: [String: String]) throws -> TemporaryDirectory {
        let dir = try TemporaryDirectory()
        for (path, text) in files {
            let full = dir.path + path
            try FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: true, encoding: .utf8)
        }
        return dir
    }

    @Test func readsCgroupV2ThenV1ThenPhysical() throws {
        let v2 = try fakeRoot(["/sys/fs/cgroup/memory.max": "1073741824\n"])
        defer { v2.remove() }
        let b2 = MemoryBudget.detect(fraction: 0.25, root: v2.path)
        #expect(b2.source == "cgroup v2" && b2.bytes == 268_435_456)

        let v1 = try fakeRoot([
            "/sys/fs/cgroup/memory.max": "max\n", "/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n",
        ])
        defer { v1.remove() }
        let b1 = MemoryBudget.detect(fraction: 0.5, root: v1.path)
        #expect(b1.source == "cgroup v1" && b1.bytes == 268_435_456)

        let none = try fakeRoot(["/sys/fs/cgroup/memory.max": "max\n"])
        defer { none.remove() }
        #expect(MemoryBudget.detect(root: none.path).source == "physical RAM")
    }

    @Test func sizingFollowsTheBudget() {
        let big = BatchSizing.from(budget: MemoryBudget(machineBytes: 16 << 30), policy: BatchingPolicy(), workers: 2)
        #expect(big.chunkBytes == 4 << 20 && big.queueDepth == 2)
        let small = BatchSizing.from(budget: MemoryBudget(machineBytes: 64 << 20), policy: BatchingPolicy(), workers: 2)
        #expect(small.chunkBytes < 4 << 20 && small.chunkBytes >= 64 << 10 && small.queueDepth == 1)
        let tiny = BatchSizing.from(budget: MemoryBudget(machineBytes: 1 << 20), policy: BatchingPolicy(), workers: 2)
        #expect(tiny.chunkBytes == 64 << 10)
    }
}

let ab = Schema([Field("a", .int64), Field("b", .string)])
func rows(_ n: Int) -> [[Value]] { (0..<n).map { [.int64(Int64($0)), .string("r\($0)")] } }

func run(
    _ sink: CollectingSink, rows: [[Value]], batchSize: Int = 4, configure: (inout PipelineOptions) -> Void = { _ in }
)
    async throws -> (RunReport, String)
{
    let dir = try TemporaryDirectory()
    var o = PipelineOptions()
    o.rejectsPath = dir.file("rejects.jsonl")
    o.retry = RetryPolicy(maxAttempts: 4, baseDelay: .milliseconds(1), maxDelay: .milliseconds(2))
    configure(&o)
    let report = try await Pipeline(
        source: ArraySource(schema: ab, rows: rows, batchSize: batchSize), sink: sink, options: o
    )
    .run()
    return (report, o.rejectsPath!)
}

@Suite struct PipelineTests {
    @Test func deliversEveryRowInOrderAcrossWorkers() async throws {
        let sink = CollectingSink()
        let (report, _) = try await run(sink, rows: rows(1000), batchSize: 7) { $0.workers = 3 }
        #expect(sink.rows == rows(1000))
        #expect(report.outcome == .clean && report.recordsOut == 1000 && report.recordsIn == 1000)
        #expect(sink.finishedComplete == true)
        #expect(report.stages.map(\.name).contains("write collect"))
    }

    @Test func transientFailuresAreRetriedWithoutDuplicates() async throws {
        let sink = CollectingSink(transientFailures: 3)
        let (report, _) = try await run(sink, rows: rows(10))
        #expect(sink.rows == rows(10))
        #expect(sink.writeCalls == 3 + 3)
        #expect(report.outcome == .clean)
    }

    @Test func persistentTransientFailureAbortsTheRun() async throws {
        let sink = CollectingSink(transientFailures: 100)
        let (report, _) = try await run(sink, rows: rows(10))
        #expect(report.outcome == .aborted)
        #expect(report.abortReason?.contains("simulated transient failure") == true)
        #expect(sink.finishedComplete == false)
    }

    @Test func refusedBatchesAreBisectedToTheOffendingRows() async throws {
        let sink = CollectingSink { row in row[0] == .int64(5) || row[0] == .int64(13) }
        let (report, rejectsPath) = try await run(sink, rows: rows(20), batchSize: 16)
        #expect(sink.rows == rows(20).filter { $0[0] != .int64(5) && $0[0] != .int64(13) })
        #expect(report.outcome == .completedWithRejects && report.recordsRejected == 2 && report.recordsOut == 18)
        let rejects = try RejectsFile.read(rejectsPath)
        #expect(rejects.map(\.raw) == ["[5,\"r5\"]", "[13,\"r13\"]"])
        #expect(rejects.allSatisfy { $0.stage == "sink" && $0.reason == "simulated constraint violation" })
    }

    @Test func maxErrorsAbortsAndKeepsWhatWasCommitted() async throws {
        let sink = CollectingSink { row in if case .int64(let v) = row[0] { return v % 2 == 0 } else { return false } }
        let (report, _) = try await run(sink, rows: rows(100), batchSize: 10) {
            $0.maxErrors = .count(3)
            $0.workers = 1
        }
        #expect(report.outcome == .aborted)
        #expect(report.abortReason?.contains("too many rejected records") == true)
        #expect(report.recordsRejected == 5)
        #expect(
            sink.rows == [
                [.int64(1), .string("r1")], [.int64(3), .string("r3")], [.int64(5), .string("r5")],
                [.int64(7), .string("r7")], [.int64(9), .string("r9")],
            ])
        #expect(sink.finishedComplete == false)
    }

    @Test func cancelStopsReadingButFlushesWhatWasRead() async throws {
        final class SlowSource: Source, @unchecked Sendable {
            let progress = SourceProgress()
            var n = 0
            var name: String { "slow" }
            func open(context: SourceContext) throws -> Schema { ab }
            func next() throws -> SourceItem? {
                usleep(2_000)
                n += 1
                let b = RecordBatchBuilder(schema: ab)
                b.columns[0].append(int64: Int64(n))
                b.columns[1].append(string: "x")
                b.finishRow()
                return .batch(b.build())
            }
        }
        let sink = CollectingSink()
        let source = SlowSource()
        let pipeline = Pipeline(source: source, sink: sink)
        async let report = pipeline.run()
        // Cancel once some rows are through (under a loaded test run the first batch can take a while).
        for _ in 0..<1000 where sink.rows.count < 3 { try await Task.sleep(for: .milliseconds(10)) }
        pipeline.cancel()
        let r = try await report
        #expect(r.outcome == .interrupted)
        #expect(sink.rows.count == Int(r.recordsOut) && r.recordsOut >= 3)
        #expect(sink.rows.map { $0[0] } == (1...sink.rows.count).map { .int64(Int64($0)) })
        #expect(sink.finishedComplete == false)
    }
}
