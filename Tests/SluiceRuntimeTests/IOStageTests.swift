import Foundation
import SluiceCore
import SluiceReport
import SluiceRuntime
import SluiceTesting
import Synchronization
import Testing

/// An I/O stage that "works" on each record for a little while on a dispatch queue, doubling its id; it
/// drops ids divisible by 10 as already done, and records how many records were in flight at most.
final class SlowDoubler: IOTransform, @unchecked Sendable {
    let concurrency: Int
    let inFlight = Atomic<Int>(0)
    let maxInFlight = Atomic<Int>(0)
    let emitted = Atomic<Int>(0)
    let closed = Atomic<Bool>(false)
    let delayMicros: ClosedRange<Int>

    init(concurrency: Int, delayMicros: ClosedRange<Int> = 200...3000) {
        self.concurrency = concurrency
        self.delayMicros = delayMicros
    }

    var name: String { "slow" }

    func outputSchema(for input: Schema) throws -> Schema {
        var s = input
        s.fields.append(Field("doubled", .int64))
        return s
    }

    func open(stored: StoredRows) async throws {}

    func start(_ batch: RecordBatch, row: Int, completion: IOCompletion) -> Bool {
        let id = batch.columns[0].int64(at: row)
        if id % 10 == 0 { return false }
        let now = inFlight.add(1, ordering: .relaxed).newValue
        var seen = maxInFlight.load(ordering: .relaxed)
        while now > seen {
            let (done, current) = maxInFlight.compareExchange(expected: seen, desired: now, ordering: .relaxed)
            if done { break }
            seen = current
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + .microseconds(Int.random(in: delayMicros))) {
            self.inFlight.subtract(1, ordering: .relaxed)
            completion.finish([.int64(id * 2)])
        }
        return true
    }

    func willEmit(_ batch: RecordBatch) throws { emitted.add(batch.count, ordering: .relaxed) }
    func close() { closed.store(true, ordering: .relaxed) }
    var reportLines: [ReportLine] { [ReportLine(label: "slow", text: "done", counts: ["done": 1])] }
}

@Suite struct IOStageTests {
    @Test func recordsFlowThroughBoundedSlotsIntoBatchesInCompletionOrder() async throws {
        let ids = Array(1...1000)
        let source = ArraySource(
            schema: try Schema.parse("id:int64,name:string"),
            rows: ids.map { [.int64(Int64($0)), .string("n\($0)")] }, batchSize: 7)
        let sink = CollectingSink()
        let io = SlowDoubler(concurrency: 4)
        var options = PipelineOptions()
        options.batching = BatchingPolicy(maxRows: 50, maxBytes: 1 << 20, maxLatency: .milliseconds(100))
        let report = try await Pipeline(source: source, io: io, sink: sink, options: options).run()

        #expect(report.outcome == .clean)
        let expected = ids.filter { $0 % 10 != 0 }
        let rows = sink.rows
        #expect(rows.count == expected.count)
        #expect(Set(rows.map { $0[0] }) == Set(expected.map { Value.int64(Int64($0)) }), "each record once")
        for r in rows {
            guard case .int64(let id) = r[0] else { continue }
            #expect(r[1] == .string("n\(id)") && r[2] == .int64(id * 2))
        }
        #expect(io.maxInFlight.load(ordering: .relaxed) <= 4)
        #expect(io.maxInFlight.load(ordering: .relaxed) >= 2, "records overlap")
        #expect(io.emitted.load(ordering: .relaxed) == expected.count)
        #expect(io.closed.load(ordering: .relaxed) == true)
        // Batches of at most 50 rows; never one per record.
        #expect(sink.writeCalls >= expected.count / 50 && sink.writeCalls < expected.count / 10)
        let stage = try #require(report.stages.first { $0.name == "slow" })
        #expect(stage.threads == 4 && stage.records == Int64(expected.count) && stage.busySeconds > 0)
        #expect(report.recordsIn == 1000 && report.recordsOut == Int64(expected.count))
        #expect(report.notes == [ReportLine(label: "slow", text: "done", counts: ["done": 1])])
        #expect(report.text.contains("  slow       done\n"))
    }

    @Test func aFailingSinkStopsTheStageAndTheRunAborts() async throws {
        let source = ArraySource(
            schema: try Schema.parse("id:int64,name:string"),
            rows: (1...300).map { [.int64(Int64($0)), .string("x")] }, batchSize: 10)
        let sink = CollectingSink(refuseFatally: { $0[0] == .int64(77) })
        let io = SlowDoubler(concurrency: 8, delayMicros: 100...500)
        var options = PipelineOptions()
        options.batching = BatchingPolicy(maxRows: 20, maxBytes: 1 << 20, maxLatency: .milliseconds(50))
        let report = try await Pipeline(source: source, io: io, sink: sink, options: options).run()
        #expect(report.outcome == .aborted)
        #expect(io.inFlight.load(ordering: .relaxed) == 0, "the stage waits for its records before closing")
        #expect(io.closed.load(ordering: .relaxed) == true)
    }
}
