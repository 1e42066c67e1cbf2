import SluiceCore
import SluiceReport
import Synchronization

/// The I/O stage's hand-off: one thread that passes the runner's output batches (completion order) through
/// ``IOTransform/willEmit(_:)`` to the writers' queue. The stage's slots are accounted by the runner in
/// slot-time (its own row); this thread's time is a detail row under it.
final class IOHandOffStage: Sendable {
    let runner: IOStageRunner
    private let sink: any SinkBase
    private let output: BoundedQueue<(Int, RecordBatch)>
    private let control: RunControl
    private let thread = JoinOnce()

    init(runner: IOStageRunner, sink: any SinkBase, output: BoundedQueue<(Int, RecordBatch)>, control: RunControl) {
        self.runner = runner
        self.sink = sink
        self.output = output
        self.control = control
    }

    /// Starts the thread.
    func start() { thread.start(name: "sluice-io") { [self] in run() } }

    private func run() {
        var seq = 0
        let error = runner.runHandOff { batch in
            sink.willWrite(batch, sequence: seq)
            var waited: UInt64 = 0
            let ok = output.push((seq, batch), waited: &waited)
            if !ok { sink.didWrite(sequence: seq) }
            seq += 1
            return ok
        }
        if let error { control.fail(RunFailure(.stage, error)) }
    }

    /// Ends the stage once the dispatcher has fed everything: waits for the records in flight (cancelled,
    /// at once), closes the transform and stops the slot clock.
    func finish() {
        if control.aborted { runner.cancel() }
        runner.inputFinished()
        // Cancelled, the hand-off returns at once; closing then fails what is still in flight.
        thread.join()
        runner.transform.close()
        runner.waitIdle()
        runner.stopAccounting()
    }

    /// The stage's rows: slot-time, and the hand-off thread's time when it did any work.
    var samples: [StageSample] {
        var out = [
            StageSample(name: runner.transform.name, threads: runner.transform.concurrency, clock: runner.stageClock)
        ]
        let h = runner.handOffClock
        if h.busy > 0 {
            out.append(StageSample(name: "\(runner.transform.name) hand-off", threads: 1, clock: h, isDetail: true))
        }
        return out
    }
}
