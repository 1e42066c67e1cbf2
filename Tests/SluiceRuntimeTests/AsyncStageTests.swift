import Foundation
import SluiceCore
import SluiceRuntime
import SluiceTesting
import Synchronization
import Testing

/// An async sink standing in for a network store: every write suspends, the first attempt of every fifth
/// batch fails with a retryable error, and the sink notes which lanes were opened and closed.
private final class SuspendingSink: AsyncBatchSink, @unchecked Sendable {
    let lanes: Int
    let ids = Locked<[Int64]>([])
    let opened = Locked<[Int]>([])
    let closed = Locked<[Int]>([])
    let attempts = Locked<[Int: Int]>([:])

    init(lanes: Int) { self.lanes = lanes }
    var target: String { "suspending" }
    var writers: Int { lanes }
    var timings: SinkTimings { SinkTimings() }
    func open(schema: Schema) async throws {}
    func finish(_ end: RunEnd) async throws {}

    func withWriter(_ writer: Int, _ body: (any AsyncSinkWriter) async throws -> Void) async throws {
        opened.withLock { $0.append(writer) }
        defer { closed.withLock { $0.append(writer) } }
        try await body(Lane(sink: self))
    }

    final class Lane: AsyncSinkWriter {
        let sink: SuspendingSink
        init(sink: SuspendingSink) { self.sink = sink }

        func write(_ batch: RecordBatch, sequence: Int?) async throws -> SinkWriteOutcome {
            try await Task.sleep(for: .microseconds(300))
            let seq = sequence ?? -1
            let attempt = sink.attempts.withLock { a -> Int in
                a[seq, default: 0] += 1
                return a[seq]!
            }
            if seq % 5 == 0 && attempt == 1 { throw SluiceError.sink(.retry, "transient") }
            let column = batch.columns[0]
            let got = (0..<batch.count).map { column.int64(at: $0) }
            sink.ids.withLock { $0 += got }
            return SinkWriteOutcome(written: batch.count)
        }
    }
}

/// An async source standing in for a query over the network: each page suspends before it arrives; with
/// `batches` nil it never ends.
private final class SuspendingSource: AsyncSource, @unchecked Sendable {
    let batches: Int?
    let rows: Int
    let progress = SourceProgress()
    let closed = Atomic<Bool>(false)
    let produced = Atomic<Int>(0)
    private var page = 0
    private let schema = Schema([Field("id", .int64)])

    init(batches: Int?, rows: Int) {
        self.batches = batches
        self.rows = rows
    }
    var name: String { "suspending" }
    func open(context: SourceContext) async throws -> Schema { schema }
    func close() async { closed.store(true, ordering: .relaxed) }

    func next() async throws -> SourceItem? {
        if let batches, page >= batches { return nil }
        try await Task.sleep(for: .microseconds(200))
        let builder = RecordBatchBuilder(schema: schema, rowCapacity: rows)
        for r in 0..<rows {
            builder.columns[0].append(int64: Int64(page * rows + r))
            builder.finishRow()
        }
        page += 1
        produced.add(rows, ordering: .relaxed)
        return .batch(builder.build())
    }
}

/// Stages that run as tasks: an async source's reader and an async sink's writer lanes.
@Suite struct AsyncStageTests {
    private func options() -> PipelineOptions {
        var o = PipelineOptions()
        o.rejectsPath = nil
        o.retry = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(2), maxDelay: .milliseconds(10))
        return o
    }

    @Test func writerLanesAndAReaderTaskDeliverEveryRowOnceAndBookTheirTime() async throws {
        let sink = SuspendingSink(lanes: 3)
        let source = SuspendingSource(batches: 40, rows: 250)
        let report = try await Pipeline(source: source, sink: sink, options: options()).run()
        #expect(report.outcome == .clean && report.recordsOut == 10_000, "\(report.text)")
        #expect(sink.ids.withLock { $0 }.sorted() == (0..<10_000).map(Int64.init))
        // Every lane held its writer from the start to the end of the input, and closed it.
        #expect(sink.opened.withLock { $0 }.sorted() == [0, 1, 2])
        #expect(sink.closed.withLock { $0 }.sorted() == [0, 1, 2])
        let closed = source.closed.load(ordering: .relaxed)
        #expect(closed)
        #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))\n\(report.text)")
        let write = try #require(report.stages.first { $0.name.hasPrefix("write ") })
        #expect(write.threads == 3)
        // Eight batches waited out a retry's back-off: blocked, not busy.
        #expect(write.blockedSeconds > 0, "\(report.text)")
        let read = try #require(report.stages.first { $0.name.hasPrefix("read ") })
        #expect(read.records == 0 || read.busySeconds > 0)
    }

    @Test func cancellingARunOfTasksStopsReadingAndCommitsWhatWasRead() async throws {
        let sink = SuspendingSink(lanes: 2)
        let source = SuspendingSource(batches: nil, rows: 100)
        let pipeline = Pipeline(source: source, sink: sink, options: options())
        let run = Task { try await pipeline.run() }
        while source.produced.load(ordering: .relaxed) < 2_000 { try await Task.sleep(for: .milliseconds(5)) }
        run.cancel()
        let report = try await run.value
        #expect(report.outcome == .interrupted, "\(report.text)")
        // Whatever the reader produced was written, once.
        let written = sink.ids.withLock { $0 }.sorted()
        let produced = source.produced.load(ordering: .relaxed)
        #expect(written.count == produced)
        #expect(written == (0..<Int64(written.count)).map { $0 })
        let closed = source.closed.load(ordering: .relaxed)
        #expect(closed)
    }
}
