import Foundation
import SluiceCore
import SluiceReport

/// The writers: one lane per sink writer, each popping batches and writing them with retries and bisection;
/// after a commit it records sink rejects, counts the rows and tells the commit tracker. A lane of a blocking
/// ``BatchSink`` is a thread of its own; a lane of an ``AsyncBatchSink`` is a task that holds its writer (its
/// connection) from its first batch to the end of the input (``AsyncBatchSink/withWriter(_:_:)``), started by
/// ``run()`` in the run's task group.
///
/// Booking, the same for both: the sink's write (encode, write, commit, and the retries' attempts) is busy, a
/// retry's back-off is blocked (waiting for the store to accept again), waiting for a batch is starved, the
/// bookkeeping after a commit is overhead. The sink's finish at the end of the run is booked as busy by
/// ``finish(complete:clean:)``.
final class WriterStage: Sendable {
    let meter: StageMeter
    /// Writers at once.
    let lanes: Int
    private let sink: any SinkBase
    private let input: BoundedQueue<(Int, RecordBatch)>
    private let rejects: SharedRejects
    private let tracker: CommitTracker?
    let control: RunControl
    private let options: PipelineOptions
    private let observers: [any PipelineObserver]
    private let threads = JoinOnce()

    init(
        sink: any SinkBase, input: BoundedQueue<(Int, RecordBatch)>, rejects: SharedRejects,
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

    /// Starts the threads of a blocking sink (an async sink's lanes are tasks: ``run()``).
    func start() {
        guard case .blocking(let sink) = sink.kind else { return }
        for lane in 0..<lanes { threads.start(name: "sluice-write\(lane)") { [self] in run(sink, lane: lane) } }
    }

    /// Waits for every thread to end.
    func join() { threads.join() }

    /// Runs the lanes of an async sink as child tasks, each holding its writer, until the input ends.
    func run() async {
        guard case .async(let sink) = sink.kind else { return }
        await withTaskGroup(of: Void.self) { group in
            for lane in 0..<lanes {
                group.addTask { [self] in
                    var timer = ThreadTimer()
                    do {
                        try await sink.withWriter(lane) { writer in await run(writer, lane: lane, timer: &timer) }
                    } catch {
                        // The writer could not be opened, or failed to close: the run cannot write.
                        timer.mark(.busy)
                        control.fail(RunFailure(.write, error))
                    }
                    timer.mark(.overhead)
                    meter.publish(&timer)
                }
            }
        }
    }

    /// Ends the sink's run (after every writer ended); its time is the write row's busy time.
    func finish(complete: Bool, clean: Bool) async {
        let a = MonotonicClock.now()
        let end = RunEnd(complete: complete, clean: clean)
        do {
            switch sink.kind {
            case .blocking(let sink): try await Blocking.run("sluice-finish") { try sink.finish(end) }
            case .async(let sink): try await sink.finish(end)
            }
        } catch {
            control.fail(RunFailure(.write, error))
        }
        meter.add(.busy, MonotonicClock.now() - a)
    }

    /// A blocking sink's lane: its thread's loop.
    private func run(_ sink: any BatchSink, lane: Int) {
        var timer = ThreadTimer()
        while true {
            var starved: UInt64 = 0
            guard let (seq, batch) = input.pop(waited: &starved) else { break }
            timer.mark(waited: starved, as: .starved)
            var attempts = BatchAttempts(batch, sequence: seq, policy: options.retry)
            while let step = attempts.next(self, timer: &timer) {
                switch step {
                case .write(let part):
                    do {
                        attempts.wrote(try sink.write(part, context: WriteContext(writer: lane, sequence: seq)))
                    } catch {
                        attempts.failed(error)
                    }
                case .sleep(let d):
                    usleep(UInt32(d.nanoseconds / 1000))
                    attempts.slept(timer: &timer)
                }
            }
            sink.didWrite(sequence: seq)
            meter.publish(&timer)
        }
        timer.mark(.overhead)
        meter.publish(&timer)
    }

    /// An async sink's lane: the body of its task while it holds its writer.
    private func run(_ writer: any AsyncSinkWriter, lane: Int, timer: inout ThreadTimer) async {
        while true {
            let (next, starved) = await input.pop()
            guard let (seq, batch) = next else { break }
            timer.mark(waited: starved, as: .starved)
            var attempts = BatchAttempts(batch, sequence: seq, policy: options.retry)
            while let step = attempts.next(self, timer: &timer) {
                switch step {
                case .write(let part):
                    do { attempts.wrote(try await writer.write(part, sequence: seq)) } catch { attempts.failed(error) }
                case .sleep(let d):
                    // The run's tasks are never cancelled (a stop finishes what was read), so this sleeps `d`.
                    try? await Task.sleep(for: d)
                    attempts.slept(timer: &timer)
                }
            }
            sink.didWrite(sequence: seq)
            meter.publish(&timer)
        }
    }

    /// One batch's way through its ``WriteAttemptStateMachine``, shared by both kinds of lane: the lane
    /// performs the writes and back-offs it is asked for and reports back; the outcome and a failure are
    /// handled here. Booking: the attempts are busy, a back-off is blocked.
    private struct BatchAttempts {
        /// What the lane does next.
        enum Step {
            /// Write this part of the batch.
            case write(RecordBatch)
            /// Wait this long (at most a minute), then report ``slept(timer:)``.
            case sleep(Duration)
        }

        let batch: RecordBatch
        let sequence: Int
        let started = MonotonicClock.now()
        var machine: WriteAttemptStateMachine
        var action: WriteAttemptStateMachine.Action

        init(_ batch: RecordBatch, sequence: Int, policy: RetryPolicy) {
            self.batch = batch
            self.sequence = sequence
            machine = WriteAttemptStateMachine(rows: batch.count, policy: policy)
            action = machine.start()
        }

        /// The next step, or nil once the batch is done (its outcome counted, or the run failed).
        mutating func next(_ stage: WriterStage, timer: inout ThreadTimer) -> Step? {
            switch action {
            case .write(let rows):
                return .write(rows.count == batch.count ? batch : batch.slice(rows))
            case .sleep(let d):
                timer.mark(.busy)
                return .sleep(min(d, .seconds(60)))
            case .done(let outcome):
                stage.committed(outcome, sequence, batch, started: started, timer: &timer)
                return nil
            case .fail(let error):
                timer.mark(.busy)
                stage.control.fail(RunFailure(.write, error))
                return nil
            }
        }

        /// The write succeeded (possibly refusing some rows).
        mutating func wrote(_ o: SinkWriteOutcome) {
            action = machine.succeeded(written: o.written, refused: o.rejected, childRows: o.childRows)
        }

        /// The write threw.
        mutating func failed(_ error: any Error) {
            if let e = error as? SluiceError {
                action = machine.failed(e, unit: Double.random(in: 0...1))
            } else {
                action = machine.failed(SluiceError(.sink, "\(error)"), unit: 0)
            }
        }

        /// The back-off is over (booked as blocked).
        mutating func slept(timer: inout ThreadTimer) {
            timer.mark(.blocked)
            action = machine.resume()
        }
    }

    /// After a batch is done: books the write as busy, tells the observers, counts, writes the sink's
    /// rejects, tells the commit tracker and checks the reject limit (overhead).
    fileprivate func committed(
        _ result: WriteAttemptStateMachine.Outcome, _ seq: Int, _ batch: RecordBatch, started: UInt64,
        timer: inout ThreadTimer
    ) {
        let done = timer.mark(.busy)
        for o in observers { o.batchWritten(rows: result.written, seconds: Double(done - started) / 1e9) }
        timer.clock.records += Int64(result.written)
        timer.clock.batches += 1
        if result.childRows > 0 { control.childRows.add(Int64(result.childRows), ordering: .relaxed) }
        control.recordsOut.add(Int64(result.written), ordering: .relaxed)
        do {
            for r in result.rejected { try rejects.write(Self.sinkReject(batch, row: r.row, reason: r.reason)) }
        } catch {
            control.fail(RunFailure(.write, error))
        }
        tracker?.done(seq, batch)
        let total = control.rejected.add(Int64(result.rejected.count), ordering: .relaxed).newValue
        control.checkRejectLimit(
            options.maxErrors, total: total, seen: control.recordsSeen.load(ordering: .relaxed), final: false)
        timer.mark(.overhead)
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
