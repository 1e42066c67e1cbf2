import Foundation
import SluiceCore
import SluiceReport

/// The writers: one thread per sink writer (lane), each popping batches and writing them with retries and
/// bisection; after a commit it records sink rejects, counts the rows and tells the commit tracker.
///
/// Booking: the sink's write (encode, write, commit, and the retries' attempts) is busy, a retry's back-off is
/// blocked (waiting for the store to accept again), waiting for a batch is starved, the bookkeeping after a
/// commit is overhead. The sink's finish at the end of the run is booked as busy by ``finish(complete:clean:)``.
final class WriterStage: Sendable {
    let meter: StageMeter
    /// Threads writing at once.
    let lanes: Int
    private let sink: any BatchSink
    private let input: BoundedQueue<(Int, RecordBatch)>
    private let rejects: SharedRejects
    private let tracker: CommitTracker?
    private let control: RunControl
    private let options: PipelineOptions
    private let observers: [any PipelineObserver]
    private let threads = JoinOnce()

    init(
        sink: any BatchSink, input: BoundedQueue<(Int, RecordBatch)>, rejects: SharedRejects,
        tracker: CommitTracker?, control: RunControl, options: PipelineOptions, observers: [any PipelineObserver]
    ) {
        self.sink = sink
        self.input = input
        self.rejects = rejects
        self.tracker = tracker
        self.control = control
        self.options = options
        self.observers = observers
        lanes = max(1, sink.writers)
        meter = StageMeter(name: "write \(sink.target)", threads: lanes)
    }

    /// Starts the threads.
    func start() {
        for lane in 0..<lanes { threads.start(name: "sluice-write\(lane)") { [self] in run(lane: lane) } }
    }

    /// Waits for every thread to end.
    func join() { threads.join() }

    /// Ends the sink's run (after every writer ended); its time is the write row's busy time.
    func finish(complete: Bool, clean: Bool) {
        let a = MonotonicClock.now()
        do {
            try sink.finish(RunEnd(complete: complete, clean: clean))
        } catch {
            control.fail(RunFailure(.write, error))
        }
        meter.add(.busy, MonotonicClock.now() - a)
    }

    private func run(lane: Int) {
        var timer = ThreadTimer()
        while true {
            var starved: UInt64 = 0
            guard let (seq, batch) = input.pop(waited: &starved) else { break }
            timer.mark(waited: starved, as: .starved)
            let started = MonotonicClock.now()
            do {
                defer { sink.didWrite(sequence: seq) }
                let result = try write(batch, lane: lane, sequence: seq, timer: &timer)
                let committed = timer.mark(.busy)
                for o in observers { o.batchWritten(rows: result.written, seconds: Double(committed - started) / 1e9) }
                timer.clock.records += Int64(result.written)
                timer.clock.batches += 1
                if result.childRows > 0 { control.childRows.add(Int64(result.childRows), ordering: .relaxed) }
                control.recordsOut.add(Int64(result.written), ordering: .relaxed)
                for r in result.rejected {
                    try rejects.write(Self.sinkReject(batch, row: r.row, reason: r.reason))
                }
                tracker?.done(seq, batch)
                let total = control.rejected.add(Int64(result.rejected.count), ordering: .relaxed).newValue
                control.checkRejectLimit(
                    options.maxErrors, total: total, seen: control.recordsSeen.load(ordering: .relaxed), final: false)
                timer.mark(.overhead)
            } catch {
                timer.mark(.busy)
                control.fail(RunFailure(.write, error))
            }
            meter.publish(&timer)
        }
        timer.mark(.overhead)
        meter.publish(&timer)
    }

    /// Writes a batch as its ``WriteAttemptStateMachine`` says: retrying transient failures after a back-off
    /// (booked as blocked), bisecting batches the sink refuses.
    private func write(
        _ batch: RecordBatch, lane: Int, sequence: Int, timer: inout ThreadTimer
    ) throws -> WriteAttemptStateMachine.Outcome {
        var machine = WriteAttemptStateMachine(rows: batch.count, policy: options.retry)
        var action = machine.start()
        while true {
            switch action {
            case .write(let rows):
                let part = rows.count == batch.count ? batch : batch.slice(rows)
                do {
                    let o = try sink.write(part, context: WriteContext(writer: lane, sequence: sequence))
                    action = machine.succeeded(written: o.written, refused: o.rejected, childRows: o.childRows)
                } catch let e as SluiceError {
                    action = machine.failed(e, unit: Double.random(in: 0...1))
                } catch {
                    action = machine.failed(SluiceError(.sink, "\(error)"), unit: 0)
                }
            case .sleep(let d):
                timer.mark(.busy)
                usleep(UInt32(min(d.nanoseconds / 1000, 60_000_000)))
                timer.mark(.blocked)
                action = machine.resume()
            case .done(let outcome):
                return outcome
            case .fail(let error):
                throw error
            }
        }
    }

    /// The rejects-file record for row `row` of `batch`, refused by the sink.
    static func sinkReject(_ batch: RecordBatch, row: Int, reason: String) -> RejectedRecord {
        let pos = batch.position(ofRow: row)
        let values = batch.row(row).map { v -> String in
            switch v {
            case .null: return "null"
            case .int64, .float64, .bool: return v.description
            default: return JSONText.quoted(v.description)
            }
        }
        return RejectedRecord(
            file: pos.file, line: pos.line, offset: pos.offset, stage: "sink", reason: reason,
            raw: "[" + values.joined(separator: ",") + "]")
    }
}
