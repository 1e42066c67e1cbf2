import CSluiceSupport
import SluiceCore
import SluiceReport

/// The dispatcher: one thread that takes decoded chunks in input order, numbers their lines, writes their
/// parse rejects, checks the rejects limit and hands each batch on — to the writers' queue, or to the I/O
/// stage when there is one.
///
/// Booking (its own report row): writing rejects and telling the sink about skipped records is busy, waiting
/// for the next chunk in order is starved, waiting for the writers (or the I/O stage) to take a batch is
/// blocked, the rest is overhead.
final class DispatchStage: Sendable {
    let meter = StageMeter(name: "dispatch", threads: 1)
    private let input: ReorderBuffer<Decoded>
    private let output: BoundedQueue<(Int, RecordBatch)>
    private let io: IOStageRunner?
    private let sink: any SinkBase
    private let rejects: SharedRejects
    private let control: RunControl
    private let maxErrors: ErrorLimit?
    private let thread = JoinOnce()
    /// The shortest time between two returns of freed memory to the OS (nanoseconds).
    static let trimInterval: UInt64 = 50_000_000

    init(
        input: ReorderBuffer<Decoded>, output: BoundedQueue<(Int, RecordBatch)>, io: IOStageRunner?,
        sink: any SinkBase, rejects: SharedRejects, control: RunControl, maxErrors: ErrorLimit?
    ) {
        self.input = input
        self.output = output
        self.io = io
        self.sink = sink
        self.rejects = rejects
        self.control = control
        self.maxErrors = maxErrors
    }

    /// Starts the thread.
    func start() { thread.start(name: "sluice-dispatch") { [self] in run() } }

    /// Waits for the thread to end.
    func join() { thread.join() }

    private func run() {
        var timer = ThreadTimer()
        var nextLine = 1
        var currentFile = -1
        var seen: Int64 = 0
        var batchSeq = 0
        var lastTrim: UInt64 = 0
        loop: while true {
            var starved: UInt64 = 0
            guard let item = input.take(waited: &starved) else { break }
            timer.mark(waited: starved, as: .starved)
            if item.fileIndex != currentFile {
                currentFile = item.fileIndex
                nextLine = item.startLine ?? 1
            } else if let s = item.startLine {
                nextLine = s
            }
            let baseLine = nextLine
            nextLine += item.lines
            seen += item.records
            control.recordsSeen.store(seen, ordering: .relaxed)
            if let error = item.error {
                control.fail(RunFailure(.decode, error))
                break
            }
            do {
                for r in item.rejects {
                    try rejects.write(
                        RejectedRecord(
                            file: item.file, line: baseLine + r.relativeLine,
                            offset: item.fileOffset + Int64(r.relativeOffset),
                            stage: "parse", reason: r.reason, bytes: r.raw))
                }
            } catch {
                control.fail(RunFailure(.rejects, error))
                break
            }
            timer.mark(.busy)
            for var batch in item.batches where batch.count > 0 {
                batch.origin.firstLine = baseLine
                let handedOff: Bool
                if let io {
                    // Starting records is the I/O stage's work, booked in its slot-time; for this thread it is
                    // the wait for the stage downstream to take the batch.
                    handedOff = io.feed(batch)
                    timer.mark(.blocked)
                } else {
                    var waited: UInt64 = 0
                    sink.willWrite(batch, sequence: batchSeq)
                    handedOff = output.push((batchSeq, batch), waited: &waited)
                    timer.mark(waited: waited, as: .blocked)
                    if !handedOff { sink.didWrite(sequence: batchSeq) }
                    batchSeq += 1
                }
                if !handedOff { break loop }
            }
            if !item.unchanged.isEmpty {
                sink.noteUnchanged(keys: item.unchanged)
                control.recordsOut.add(Int64(item.unchanged.count), ordering: .relaxed)
                timer.mark(.busy)
            }
            // Give freed batch memory back to the OS: batches are allocated on decoder threads and freed
            // on writer threads, which otherwise leaves glibc arenas holding pages (RSS would not track live
            // memory). A trim walks every arena, so its cost grows with the heap: at most one per interval.
            let now = MonotonicClock.now()
            if now &- lastTrim >= Self.trimInterval {
                sluice_release_free_memory()
                lastTrim = now
            }
            let total = control.rejected.add(Int64(item.rejects.count), ordering: .relaxed).newValue
            control.checkRejectLimit(maxErrors, total: total, seen: seen, final: false)
            timer.clock.records += Int64(item.batches.reduce(0) { $0 + $1.count })
            timer.clock.batches += 1
            timer.mark(.overhead)
            meter.publish(&timer)
            if control.aborted { break }
        }
        timer.mark(.overhead)
        meter.publish(&timer)
    }
}
