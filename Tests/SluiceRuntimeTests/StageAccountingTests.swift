import Foundation
import SluiceCore
import SluiceReport
import SluiceRuntime
import SluiceTesting
import Synchronization
import Testing

private let pair = try! Schema.parse("a:int64,b:string")

/// Emits `batches` batches of one row each.
private final class CountingSource: Source, @unchecked Sendable {
    let progress = SourceProgress()
    let batches: Int
    let delayMicros: UInt32
    var n = 0
    init(batches: Int, delayMicros: UInt32 = 0) {
        self.batches = batches
        self.delayMicros = delayMicros
    }
    var name: String { "counting" }
    func open(context: SourceContext) throws -> Schema { pair }
    func next() throws -> SourceItem? {
        guard n < batches else { return nil }
        if delayMicros > 0 { usleep(delayMicros) }
        n += 1
        let b = RecordBatchBuilder(schema: pair)
        b.columns[0].append(int64: Int64(n))
        b.columns[1].append(string: "x")
        b.finishRow()
        return .batch(b.build())
    }
}

/// A sink that takes `delayMicros` per batch, on `writers` threads.
private final class SlowSink: BatchSink, @unchecked Sendable {
    let delayMicros: UInt32
    let writers: Int
    let rows = Atomic<Int>(0)
    init(delayMicros: UInt32, writers: Int = 1) {
        self.delayMicros = delayMicros
        self.writers = writers
    }
    var target: String { "slow" }
    func open(schema: Schema) throws {}
    func write(_ batch: RecordBatch, context: WriteContext) throws -> SinkWriteOutcome {
        usleep(delayMicros)
        rows.add(batch.count, ordering: .relaxed)
        return SinkWriteOutcome(written: batch.count)
    }
    func finish(_ end: RunEnd) throws {}
    var timings: SinkTimings { SinkTimings() }
}

/// Records everything an observer is told.
private final class RecordingObserver: PipelineObserver, @unchecked Sendable {
    let lock = NSLock()
    var started = 0
    var snapshots: [RunSnapshot] = []
    var written: [(Int, Double)] = []
    var finished: (RunReport, RunSnapshot)?
    func runStarted(_ snapshot: RunSnapshot) { lock.withLock { started += 1 } }
    func runProgressed(_ snapshot: RunSnapshot) { lock.withLock { snapshots.append(snapshot) } }
    func batchWritten(rows: Int, seconds: Double) { lock.withLock { written.append((rows, seconds)) } }
    func runFinished(_ report: RunReport, snapshot: RunSnapshot) { lock.withLock { finished = (report, snapshot) } }
}

@Suite struct StageAccountingTests {
    @Test func aSlowWriterBooksOnlyItsOwnThreadsTimeAndTheDispatcherHasItsOwnRow() async throws {
        // The writer is the bottleneck: the dispatcher waits for it most of the run. That wait is the
        // dispatcher's (blocked), never the writer's.
        let sink = SlowSink(delayMicros: 3_000)
        let report = try await Pipeline(source: CountingSource(batches: 150), sink: sink).run()
        #expect(sink.rows.load(ordering: .relaxed) == 150)
        #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))")
        let write = try #require(report.stages.first { $0.name == "write slow" })
        let dispatch = try #require(report.stages.first { $0.name == "dispatch" })
        #expect(write.busySeconds >= 0.4, "150 batches of 3 ms: \(write)")
        #expect(write.overheadSeconds < write.busySeconds / 2, "\(write)")
        #expect(dispatch.threads == 1 && dispatch.blockedSeconds > 0, "\(dispatch)")
        // The writer was busy nearly all of its life, so it is the bottleneck.
        #expect(report.bottleneck == "write slow", "\(report.text)")
    }

    @Test func severalWritersBookAtMostTheirThreadsTime() async throws {
        let sink = SlowSink(delayMicros: 2_000, writers: 3)
        let report = try await Pipeline(source: CountingSource(batches: 120), sink: sink).run()
        #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))")
        let write = try #require(report.stages.first { $0.name == "write slow" })
        #expect(write.threads == 3 && write.records == 120)
    }

    @Test func aThreadTimerBooksEveryNanosecondOnce() {
        let start = MonotonicClock.now()
        var t = ThreadTimer()
        usleep(2_000)
        t.mark(.busy)
        usleep(1_000)
        t.mark(waited: 500_000, as: .starved)
        usleep(1_000)
        let elsewhere = t.handOver()
        t.mark(waited: UInt64.max, as: .blocked)
        let total = MonotonicClock.now() - start
        let c = t.take()
        #expect(c.busy >= 2_000_000 && c.starved == 500_000 && elsewhere >= 1_000_000)
        #expect(c.booked + elsewhere <= total)
        #expect(t.clock.booked == 0)
    }

    @Test func observersSeeSnapshotsEveryBatchAndTheFinalReportFromTheSameNumbers() async throws {
        let observer = RecordingObserver()
        var options = PipelineOptions()
        options.observers = [observer]
        options.progressInterval = .milliseconds(10)
        let report = try await Pipeline(
            source: CountingSource(batches: 60, delayMicros: 2_000), sink: SlowSink(delayMicros: 500),
            options: options
        ).run()
        #expect(observer.started == 1)
        #expect(observer.snapshots.count >= 3, "\(observer.snapshots.count) snapshots")
        // Counters only grow between snapshots.
        for (a, b) in zip(observer.snapshots, observer.snapshots.dropFirst()) {
            #expect(a.recordsOut <= b.recordsOut && a.elapsedSeconds <= b.elapsedSeconds)
            for (sa, sb) in zip(a.stages, b.stages) where sa.name == sb.name {
                #expect(sa.clock.booked <= sb.clock.booked, "\(sa.name)")
            }
        }
        #expect(observer.written.count == 60 && observer.written.allSatisfy { $0.0 == 1 && $0.1 >= 0.0004 })
        let (final, last) = try #require(observer.finished)
        #expect(final.recordsOut == report.recordsOut && last.recordsOut == 60)
        #expect(final.stages.map(\.busySeconds) == last.stages.map { Double($0.clock.busy) / 1e9 })
        #expect(final.wallSeconds == last.elapsedSeconds)
    }

    @Test func cancellingTheRunningTaskStopsReadingAndCommitsWhatWasRead() async throws {
        let sink = CollectingSink()
        let pipeline = Pipeline(source: CountingSource(batches: 1_000_000, delayMicros: 1_000), sink: sink)
        let task = Task { try await pipeline.run() }
        for _ in 0..<1000 where sink.rows.count < 3 { try await Task.sleep(for: .milliseconds(10)) }
        task.cancel()
        let report = try await task.value
        #expect(report.outcome == .interrupted)
        #expect(sink.rows.count == Int(report.recordsOut) && report.recordsOut >= 3 && report.recordsOut < 1_000_000)
        #expect(sink.finishedComplete == false)
    }

    @Test func liveSnapshotsExistOnlyWhileTheRunGoes() async throws {
        // A run that lasts until it is stopped (100 s of input), so a loaded machine cannot end it unobserved.
        let pipeline = Pipeline(
            source: CountingSource(batches: 100_000, delayMicros: 1_000), sink: SlowSink(delayMicros: 100))
        #expect(pipeline.snapshot() == nil)
        let task = Task { try await pipeline.run() }
        var seen: RunSnapshot?
        for _ in 0..<4000 {
            if let s = pipeline.snapshot(), s.recordsOut > 0 {
                seen = s
                break
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        pipeline.cancel()
        _ = try await task.value
        let s = try #require(seen)
        #expect(s.queues.map(\.name) == ["chunks", "decoded", "batches"])
        #expect(s.stages.map(\.name).contains("dispatch"))
        #expect(pipeline.snapshot() == nil)
    }
}

/// A batch with ids `ids` and names `r<id>`.
private func batch(_ ids: ClosedRange<Int>) -> RecordBatch {
    let b = RecordBatchBuilder(schema: pair)
    for i in ids {
        b.columns[0].append(int64: Int64(i))
        b.columns[1].append(string: "r\(i)")
        b.finishRow()
    }
    return b.build()
}

@Suite struct IngestInletTests {
    @Test func sendReturnsOnlyOnceTheBatchIsCommitted() async throws {
        let inlet = IngestInlet(schema: pair, capacity: 2)
        let sink = CollectingSink()
        let pipeline = Pipeline(source: inlet, sink: sink)
        let run = Task { try await pipeline.run() }
        for k in 0..<20 {
            try await inlet.send(batch((k * 10 + 1)...(k * 10 + 10)))
            // Acknowledged means stored: every row of this batch and the ones before is in the sink.
            #expect(sink.rows.count == (k + 1) * 10)
        }
        try await inlet.send(batch(1...1).slice(0..<0))  // an empty batch is acknowledged at once
        inlet.finish()
        let report = try await run.value
        #expect(report.outcome == .clean && report.recordsOut == 200)
        #expect(sink.rows.map { $0[0] } == (1...200).map { .int64(Int64($0)) })
    }

    @Test func aFullInletMakesProducersWaitAndAStoppedRunFailsWhatItDidNotCommit() async throws {
        let inlet = IngestInlet(schema: pair, capacity: 1)
        let sink = SlowSink(delayMicros: 30_000)
        let pipeline = Pipeline(source: inlet, sink: sink)
        let run = Task { try await pipeline.run() }
        final class Senders: Sendable {
            let inFlight = Atomic<Int>(0)
            let peak = Atomic<Int>(0)
            let acknowledged = Atomic<Int>(0)
        }
        let senders = Senders()
        let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
            for k in 0..<100 {
                group.addTask {
                    let n = senders.inFlight.add(1, ordering: .relaxed).newValue
                    senders.peak.max(n, ordering: .relaxed)
                    defer { senders.inFlight.subtract(1, ordering: .relaxed) }
                    do {
                        try await inlet.send(batch((k * 3 + 1)...(k * 3 + 3)))
                        senders.acknowledged.add(1, ordering: .relaxed)
                        return true
                    } catch let e as SluiceError {
                        #expect(e.code == .interrupted)
                        return false
                    }
                }
            }
            // Stop once the first batch is acknowledged (each takes the sink 30 ms; a hundred take 3 s, more than
            // the run's queues hold).
            for _ in 0..<2000 where senders.acknowledged.load(ordering: .relaxed) == 0 {
                try await Task.sleep(for: .milliseconds(10))
            }
            pipeline.cancel()
            var results: [Bool] = []
            for try await ok in group { results.append(ok) }
            return results
        }
        let report = try await run.value
        #expect(report.outcome == .interrupted)
        // Every acknowledged batch is stored, and nothing else is.
        let acknowledged = outcomes.filter { $0 }.count
        #expect(sink.rows.load(ordering: .relaxed) == acknowledged * 3)
        #expect(acknowledged >= 1 && acknowledged < 100, "\(acknowledged) acknowledged")
        #expect(outcomes.count == 100)
        // A send waits for its commit, which the slow sink gives one batch per 30 ms: many senders wait at once.
        #expect(senders.peak.load(ordering: .relaxed) >= 10)
    }

    @Test func aBatchOfAnotherSchemaIsRefused() async throws {
        let inlet = IngestInlet(schema: pair)
        let other = RecordBatchBuilder(schema: try Schema.parse("x:int64"))
        await #expect(throws: SluiceError.self) { try await inlet.send(other.build()) }
    }
}
