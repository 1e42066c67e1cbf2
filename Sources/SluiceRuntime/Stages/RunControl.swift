import Foundation
import SluiceCore
import SluiceReport
import Synchronization

/// The state the stages of one run share: whether to stop, the first failure, and the run's counters.
///
/// Stopping comes in two strengths. A *stop* (``requestStop()``: SIGINT, task cancellation) or a failure to
/// read ends the reading; what was read still flows through and is committed. An *abort* (``fail(_:)`` with
/// any other kind) cancels every queue at once; only batches already committed stay.
final class RunControl: Sendable {
    private let stop = Atomic<Bool>(false)
    private let abortFlag = Atomic<Bool>(false)
    private let firstFailure = Locked<RunFailure?>(nil)
    private let onAbort = Locked<[@Sendable () -> Void]>([])
    private let onStop = Locked<[@Sendable () -> Void]>([])

    /// Records read (dispatched in input order), good and rejected.
    let recordsSeen = Atomic<Int64>(0)
    /// Records written (and records skipped as unchanged).
    let recordsOut = Atomic<Int64>(0)
    /// Records rejected (parse and sink).
    let rejected = Atomic<Int64>(0)
    /// Child-table rows written.
    let childRows = Atomic<Int64>(0)
    /// The run's start.
    let startedAt = MonotonicClock.now()

    /// Whether a stop was requested (SIGINT, cancellation).
    var stopRequested: Bool { stop.load(ordering: .relaxed) }
    /// Whether the run failed in a way that cancels everything.
    var aborted: Bool { abortFlag.load(ordering: .relaxed) }
    /// Whether the reader should stop: a stop, an abort, or a read failure.
    var shouldStopReading: Bool { stopRequested || aborted || firstFailure.withLock { $0 != nil } }
    /// The first failure, if any.
    var failure: RunFailure? { firstFailure.withLock { $0 } }

    /// Runs `action` when the run aborts (cancels a queue).
    func whenAborted(_ action: @escaping @Sendable () -> Void) { onAbort.withLock { $0.append(action) } }

    /// Runs `action` when a stop is requested (tells an I/O stage at once).
    func whenStopRequested(_ action: @escaping @Sendable () -> Void) {
        let already = stopRequested
        onStop.withLock { $0.append(action) }
        if already { action() }
    }

    /// Asks the run to stop reading; what was read is still written.
    func requestStop() {
        guard !stop.exchange(true, ordering: .relaxed) else { return }
        for a in onStop.withLock({ $0 }) { a() }
    }

    /// Records a failure (the first one wins). A read failure stops reading and lets what was read through;
    /// every other kind aborts the run at once.
    func fail(_ failure: RunFailure) {
        firstFailure.withLock { if $0 == nil { $0 = failure } }
        if failure.kind != .read { abort() }
    }

    /// Cancels every queue, whatever the failure was.
    func abort() {
        guard !abortFlag.exchange(true, ordering: .relaxed) else { return }
        for a in onAbort.withLock({ $0 }) { a() }
    }

    /// Checks the rejects limit after `total` rejects among `seen` records; aborts when it is exceeded.
    func checkRejectLimit(_ limit: ErrorLimit?, total: Int64, seen: Int64, final: Bool) {
        guard let limit, limit.exceeded(rejected: total, seen: seen, final: final) else { return }
        fail(RunFailure(.tooManyRejects, "too many rejected records: \(total) of \(seen) (--max-errors \(limit))"))
    }

    /// Nanoseconds since the run started.
    var elapsedNanos: UInt64 { MonotonicClock.now() &- startedAt }
}

/// A stage's shared clock: each of its threads adds what its ``ThreadTimer`` booked, once per unit of work, so
/// the figures can be read while the run goes.
final class StageMeter: Sendable {
    /// The stage's name in the report.
    let name: String
    /// Threads (or slots) that run the stage.
    let threads: Int
    private let total = Locked(StageClock())

    init(name: String, threads: Int) {
        self.name = name
        self.threads = threads
    }

    /// Moves what `timer` booked into the stage's clock.
    @inline(__always)
    func publish(_ timer: inout ThreadTimer) {
        let c = timer.take()
        total.withLock { $0.merge(c) }
    }

    /// Adds `nanos` in `state` (work done on the run's own thread on the stage's behalf, such as the sink's
    /// finish after its writers ended).
    func add(_ state: StageState, _ nanos: UInt64) { total.withLock { $0.add(state, nanos) } }

    /// The stage's figures so far.
    var clock: StageClock { total.withLock { $0 } }

    /// The stage's figures as a report sample.
    var sample: StageSample { StageSample(name: name, threads: threads, clock: clock) }
}

/// The rejects writer, shared by the dispatching thread and the writer threads.
final class SharedRejects: @unchecked Sendable {
    private let lock = NSLock()
    private let writer: RejectsWriter?

    init(_ writer: RejectsWriter?) { self.writer = writer }

    func write(_ r: RejectedRecord) throws {
        guard let writer else { return }
        lock.lock()
        defer { lock.unlock() }
        try writer.write(r)
    }

    func close() throws {
        lock.lock()
        defer { lock.unlock() }
        try writer?.close()
    }
}

/// Tells the source which batches are committed, in input order, however the writers finish them.
final class CommitTracker: @unchecked Sendable {
    private let lock = NSLock()
    private let source: any SourceBase
    private var next = 0
    private var finished: [Int: RecordBatch] = [:]

    init(source: any SourceBase) { self.source = source }

    func done(_ seq: Int, _ batch: RecordBatch) {
        lock.lock()
        defer { lock.unlock() }
        finished[seq] = batch
        while let b = finished.removeValue(forKey: next) {
            source.committed(b)
            next += 1
        }
    }
}
