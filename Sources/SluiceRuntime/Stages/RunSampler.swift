import Foundation
import SluiceCore
import SluiceReport
import Synchronization

/// Reads every stage's meter and the run's counters into a ``RunSnapshot``: the one source of the numbers
/// that the progress line, metrics and the final report show.
final class RunSampler: Sendable {
    private let control: RunControl
    private let source: any SourceBase
    private let sink: any SinkBase
    private let reader: ReaderStage
    private let decoders: DecodeStage
    private let dispatcher: DispatchStage
    private let handOff: IOHandOffStage?
    private let writers: WriterStage
    private let chunks: BoundedQueue<(Int, SourceItem)>
    private let decoded: ReorderBuffer<Decoded>
    private let batches: BoundedQueue<(Int, RecordBatch)>

    init(
        control: RunControl, source: any SourceBase, sink: any SinkBase, reader: ReaderStage, decoders: DecodeStage,
        dispatcher: DispatchStage, handOff: IOHandOffStage?, writers: WriterStage,
        chunks: BoundedQueue<(Int, SourceItem)>, decoded: ReorderBuffer<Decoded>,
        batches: BoundedQueue<(Int, RecordBatch)>
    ) {
        self.control = control
        self.source = source
        self.sink = sink
        self.reader = reader
        self.decoders = decoders
        self.dispatcher = dispatcher
        self.handOff = handOff
        self.writers = writers
        self.chunks = chunks
        self.decoded = decoded
        self.batches = batches
    }

    /// The run's figures now.
    @Sendable func snapshot() -> RunSnapshot {
        let elapsed = Double(control.elapsedNanos) / 1e9
        let seen = control.recordsSeen.load(ordering: .relaxed)
        var read = reader.meter.sample
        read.clock.records = seen
        var stages = [read, decoders.meter.sample]
        stages += decoders.transformMeters.map(\.sample)
        stages.append(dispatcher.meter.sample)
        if let handOff { stages += handOff.samples }
        stages.append(writers.meter.sample)
        let st = sink.timings
        for (name, c) in [("encode", st.encode), ("write", st.write), ("commit", st.commit)] where c.busy > 0 {
            stages.append(StageSample(name: name, threads: writers.lanes, clock: c, isDetail: true))
        }
        let p = source.progress
        return RunSnapshot(
            elapsedSeconds: elapsed, recordsIn: seen, recordsOut: control.recordsOut.load(ordering: .relaxed),
            recordsRejected: control.rejected.load(ordering: .relaxed),
            recordsFailed: handOff?.runner.transform.failedRecords ?? 0,
            childRowsOut: control.childRows.load(ordering: .relaxed), bytesRead: p.bytesRead,
            bytesDecoded: p.bytesDecoded,
            // An I/O stage reads all its input long before it is done: no ETA from bytes read.
            totalBytes: handOff != nil ? nil : p.totalBytes, stages: stages,
            queues: [
                QueueSample(name: "chunks", depth: chunks.depth, capacity: chunks.capacity),
                QueueSample(name: "decoded", depth: decoded.depth, capacity: decoded.capacity),
                QueueSample(name: "batches", depth: batches.depth, capacity: batches.capacity),
            ])
    }
}

/// The monitor thread: hands observers a snapshot at the progress interval while the run goes. It sleeps on
/// a semaphore, so stopping it is immediate, and it does not exist when nobody observes.
final class RunMonitor: Sendable {
    private let observers: [any PipelineObserver]
    private let interval: Duration
    private let snapshot: @Sendable () -> RunSnapshot
    private let wake = DispatchSemaphore(value: 0)
    private let done = Atomic<Bool>(false)
    private let thread = JoinOnce()

    init(observers: [any PipelineObserver], interval: Duration, snapshot: @escaping @Sendable () -> RunSnapshot) {
        self.observers = observers
        self.interval = interval
        self.snapshot = snapshot
    }

    /// Tells observers the run started and starts the thread.
    func start() {
        guard !observers.isEmpty else { return }
        let first = snapshot()
        for o in observers { o.runStarted(first) }
        let nanos = max(1_000_000, interval.nanoseconds)
        thread.start(name: "sluice-monitor") { [self] in
            while !done.load(ordering: .relaxed) {
                if wake.wait(timeout: .now() + .nanoseconds(Int(nanos))) == .success { break }
                let s = snapshot()
                for o in observers { o.runProgressed(s) }
            }
        }
    }

    /// Stops the thread (before the final snapshot is taken).
    func stop() {
        done.store(true, ordering: .relaxed)
        wake.signal()
        thread.join()
    }
}
