import Foundation
import SluiceCore
import SluiceReport
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Runs an ``IOTransform``. The pipeline's dispatching thread queues input batches (``feed(_:)``); a record
/// is started by whichever thread frees a slot — usually the transform's own thread finishing the previous
/// record, so no thread hand-off sits between one request and the next. A hand-off thread passes output
/// batches on (``runHandOff(emit:)``).
///
/// Accounting is by slot-time: at every event the slots' time since the previous event is booked as busy
/// (in flight), or, for free slots, as starved (no input queued), blocked (output not taken fast enough) or
/// overhead (input queued but not yet started — the framework's own latency).
final class IOStageRunner: @unchecked Sendable {
    let transform: any IOTransform
    private let inputFields: Int
    private let addedFields: Int
    private let maxRows: Int
    private let maxReady = 2
    private let maxQueuedBatches = 2
    private let isCancelled: @Sendable () -> Bool
    /// Guards the state below; the dispatching thread waits on it for queue space.
    private let cond = NSCondition()
    /// Wakes the hand-off thread (batch ready, input done, cancelled).
    private let handOffSignal = NSCondition()
    private let interruptSent = Atomic<Bool>(false)
    private var handOffPending = false

    // Guarded by `cond`.
    private var slotBatch: [RecordBatch?]
    private var slotRow: [Int]
    private var free: [Int]
    private var inFlight = 0
    private var queue: [RecordBatch] = []
    private var cursor = 0
    private var feederWaiting = false
    private let builder: RecordBatchBuilder
    /// When to cut the open output batch (rows or latency): the same decision as every other batch's.
    private var batcher: Batcher
    private var file = "-"
    private var ready: [RecordBatch] = []
    private var inputDone = false
    private var cancelled = false
    private var lastEvent: UInt64
    private var clock = StageClock()
    private var emitClock = StageClock()
    private var accountingStopped = false

    init(
        transform: any IOTransform, input: Schema, output: Schema, batching: BatchingPolicy,
        isCancelled: @escaping @Sendable () -> Bool
    ) {
        self.transform = transform
        inputFields = input.count
        addedFields = output.count - input.count
        maxRows = max(1, batching.maxRows)
        batcher = Batcher(policy: BatchingPolicy(maxRows: maxRows, maxBytes: .max, maxLatency: batching.maxLatency))
        self.isCancelled = isCancelled
        let n = max(1, transform.concurrency)
        slotBatch = Array(repeating: nil, count: n)
        slotRow = Array(repeating: 0, count: n)
        free = Array((0..<n).reversed())
        builder = RecordBatchBuilder(schema: output, rowCapacity: min(maxRows, 4096), trackOrigins: true)
        lastEvent = MonotonicClock.now()
    }

    /// Books the slots' time since the last event. Caller holds `cond`.
    private func account(_ now: UInt64) {
        if accountingStopped { return }
        let dt = now &- lastEvent
        lastEvent = now
        let idle = UInt64(slotBatch.count - inFlight)
        clock.busy &+= UInt64(inFlight) &* dt
        if queue.isEmpty {
            clock.starved &+= idle &* dt
        } else if ready.count >= maxReady {
            clock.blocked &+= idle &* dt
        } else {
            clock.overhead &+= idle &* dt
        }
    }

    /// Takes a free slot and the next queued row, if both exist and the stage may start records. Caller
    /// holds `cond`.
    private func takeWork() -> (slot: Int, batch: RecordBatch, row: Int)? {
        guard !cancelled, !free.isEmpty, let batch = queue.first, ready.count < maxReady else { return nil }
        if isCancelled() {
            // The run is stopping: nothing more starts; what is in flight finishes and is written.
            queue.removeAll()
            cursor = 0
            wakeFeeder()
            return nil
        }
        let row = cursor
        cursor += 1
        if cursor >= batch.count {
            queue.removeFirst()
            cursor = 0
            wakeFeeder()
        }
        let slot = free.removeLast()
        inFlight += 1
        slotBatch[slot] = batch
        slotRow[slot] = row
        return (slot, batch, row)
    }

    private func wakeFeeder() { if feederWaiting { cond.broadcast() } }

    /// Marks threads inside ``startAvailable()``: a record finished from within ``IOTransform/start`` (on the
    /// same thread) must not start the next one recursively — the outer loop does.
    private static let startingKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Starts records while slots and rows are free, on the calling thread. Call without holding `cond`.
    private func startAvailable() {
        guard pthread_getspecific(Self.startingKey) == nil else { return }
        pthread_setspecific(Self.startingKey, UnsafeRawPointer(bitPattern: 1))
        defer { pthread_setspecific(Self.startingKey, nil) }
        while true {
            cond.lock()
            account(MonotonicClock.now())
            let work = takeWork()
            let stopping = cancelled || isCancelled()
            cond.unlock()
            if stopping && !interruptSent.exchange(true, ordering: .relaxed) { transform.interrupt() }
            guard let (slot, batch, row) = work else { return }
            if transform.start(batch, row: row, completion: IOCompletion { [self] in finish(slot: slot, values: $0) }) {
                continue
            }
            cond.lock()
            account(MonotonicClock.now())
            slotBatch[slot] = nil
            free.append(slot)
            inFlight -= 1
            let drained = inputDone && inFlight == 0 && queue.isEmpty
            cond.unlock()
            if drained { signalHandOff() }
        }
    }

    /// Queues `batch` and starts what the free slots allow, waiting while earlier batches still fill the
    /// queue. Returns false once the stage is cancelled or the run is stopping (rows not started are not
    /// written).
    func feed(_ batch: RecordBatch) -> Bool {
        cond.lock()
        account(MonotonicClock.now())
        if file == "-" { file = batch.origin.file }
        feederWaiting = true
        while queue.count >= maxQueuedBatches && !cancelled && !isCancelled() {
            cond.wait()
            account(MonotonicClock.now())
        }
        feederWaiting = false
        let stop = cancelled || isCancelled()
        if !stop { queue.append(batch) }
        cond.unlock()
        if stop { return false }
        startAvailable()
        return true
    }

    /// A started record finished: its row goes to the output, and this thread starts the next record.
    func finish(slot: Int, values: [Value]) {
        precondition(values.count == addedFields, "\(transform.name): \(values.count) values for \(addedFields) fields")
        cond.lock()
        let now = MonotonicClock.now()
        account(now)
        guard let batch = slotBatch[slot] else {
            cond.unlock()
            return
        }
        let row = slotRow[slot]
        let cols = builder.columns
        for c in 0..<inputFields { cols[c].append(from: batch.columns[c], at: row) }
        for (k, v) in values.enumerated() {
            // The transform's values must match the output schema it declared: a mismatch is its bug.
            do { try cols[inputFields + k].append(v) } catch { preconditionFailure("\(transform.name): \(error)") }
        }
        let pos = batch.position(ofRow: row)
        builder.finishRow(
            line: UInt32(clamping: max(0, pos.line ?? 0)), offset: UInt32(clamping: max(0, pos.offset ?? 0)))
        let first = batcher.openedAt == nil
        let decision = batcher.add(rows: 1, bytes: 0, now: now)
        slotBatch[slot] = nil
        free.append(slot)
        inFlight -= 1
        clock.records += 1
        let cut = decision == .flush(.rows)
        if cut { cutBatch() }
        let drained = inputDone && inFlight == 0 && queue.isEmpty
        cond.unlock()
        if cut || first || drained { signalHandOff() }
        startAvailable()
    }

    /// Moves the open output batch to the ready list. Caller holds `cond`.
    private func cutBatch() {
        ready.append(builder.build(origin: BatchOrigin(file: file, firstLine: 0, firstOffset: 0)))
        batcher.reset()
        clock.batches += 1
    }

    private func signalHandOff() {
        handOffSignal.lock()
        handOffPending = true
        handOffSignal.signal()
        handOffSignal.unlock()
    }

    /// No more input: the hand-off side flushes once the records in flight finish. When the run is stopping,
    /// the transform is told to end what waits on purpose (``IOTransform/interrupt()``).
    func inputFinished() {
        cond.lock()
        account(MonotonicClock.now())
        inputDone = true
        let stopping = cancelled || isCancelled()
        cond.unlock()
        if stopping && !interruptSent.exchange(true, ordering: .relaxed) { transform.interrupt() }
        signalHandOff()
    }

    /// The run was asked to stop (SIGINT): start nothing more, and let the transform end what waits on
    /// purpose; records in flight finish and are written.
    func stopRequested() {
        cond.lock()
        queue.removeAll()
        cursor = 0
        cond.broadcast()
        cond.unlock()
        if !interruptSent.exchange(true, ordering: .relaxed) { transform.interrupt() }
        signalHandOff()
    }

    /// Stops starting records and handing off batches.
    func cancel() {
        cond.lock()
        cancelled = true
        cond.broadcast()
        cond.unlock()
        signalHandOff()
    }

    /// Waits until no record is in flight (so the transform can be closed safely).
    func waitIdle() {
        while true {
            cond.lock()
            let n = inFlight
            account(MonotonicClock.now())
            cond.unlock()
            if n == 0 { return }
            usleep(1000)
        }
    }

    /// The hand-off loop: passes each output batch through ``IOTransform/willEmit(_:)`` and `emit` (which
    /// returns false once the sink side is gone), until the input is done and every record has finished.
    /// Returns the first error of `willEmit`, if any.
    func runHandOff(emit: (RecordBatch) -> Bool) -> (any Error)? {
        while true {
            var next: RecordBatch?
            var wait: UInt64? = nil
            var done = false
            cond.lock()
            while true {
                if cancelled {
                    done = true
                    break
                }
                if !ready.isEmpty {
                    next = ready.removeFirst()
                    break
                }
                let drained = inputDone && inFlight == 0 && queue.isEmpty
                if builder.count > 0, drained || batcher.tick(now: MonotonicClock.now()) != .wait {
                    account(MonotonicClock.now())
                    cutBatch()
                    continue
                }
                if drained {
                    done = true
                } else if builder.count > 0, let deadline = batcher.deadline {
                    let now = MonotonicClock.now()
                    wait = deadline > now ? deadline - now : 0
                }
                break
            }
            cond.unlock()
            if next != nil {
                // A slot may have waited for room in the ready list.
                startAvailable()
            } else if done {
                return nil
            } else {
                handOffSignal.lock()
                if !handOffPending {
                    if let wait {
                        _ = handOffSignal.wait(until: Date(timeIntervalSinceNow: max(0.001, Double(wait) / 1e9)))
                    } else {
                        handOffSignal.wait()
                    }
                }
                handOffPending = false
                handOffSignal.unlock()
                continue
            }
            guard let batch = next else { return nil }
            let a = MonotonicClock.now()
            do { try transform.willEmit(batch) } catch {
                cancel()
                return error
            }
            let b = MonotonicClock.now()
            let ok = emit(batch)
            cond.lock()
            emitClock.busy &+= b - a
            emitClock.blocked &+= MonotonicClock.now() - b
            emitClock.records += Int64(batch.count)
            emitClock.batches += 1
            cond.unlock()
            if !ok {
                cancel()
                return nil
            }
        }
    }

    /// Ends the slot accounting: the stage is done, and time after this is not the stage's.
    func stopAccounting() {
        cond.lock()
        account(MonotonicClock.now())
        accountingStopped = true
        cond.unlock()
    }

    /// The stage's slot accounting so far.
    var stageClock: StageClock {
        cond.lock()
        defer { cond.unlock() }
        account(MonotonicClock.now())
        return clock
    }

    /// The hand-off side's time: `busy` in ``IOTransform/willEmit(_:)``, `blocked` waiting for the sink.
    var handOffClock: StageClock {
        cond.lock()
        defer { cond.unlock() }
        return emitClock
    }
}
