import SluiceCore
import SluiceReport

/// The reader: one thread that pulls the source (reading, decompressing, framing) and pushes its items, in
/// sequence, onto the chunk queue.
///
/// Booking: the source's own work is busy, the time a source reports waiting for input to arrive (a pipe)
/// is starved, the wait for room in the queue is blocked, and the hand-off around it is overhead.
final class ReaderStage: Sendable {
    let meter: StageMeter
    private let source: any Source
    private let output: BoundedQueue<(Int, SourceItem)>
    private let control: RunControl
    private let thread = JoinOnce()

    init(source: any Source, output: BoundedQueue<(Int, SourceItem)>, control: RunControl) {
        self.source = source
        self.output = output
        self.control = control
        meter = StageMeter(name: "read \(source.name)", threads: 1)
    }

    /// Starts the thread.
    func start() { thread.start(name: "sluice-read") { [self] in run() } }

    /// Waits for the thread to end.
    func join() { thread.join() }

    private func run() {
        var timer = ThreadTimer()
        var seq = 0
        let progress = source.progress
        while !control.shouldStopReading {
            let waitedBefore = progress.waitNanos
            let item: SourceItem?
            do { item = try source.next() } catch {
                timer.mark(.busy)
                control.fail(RunFailure(.read, (error as? SluiceError) ?? SluiceError(.io, "\(error)")))
                break
            }
            // Waiting for a pipe to deliver is starvation, not work.
            timer.mark(waited: progress.waitNanos &- waitedBefore, as: .starved, rest: .busy)
            guard let item else { break }
            timer.clock.batches += 1
            var waited: UInt64 = 0
            let ok = output.push((seq, item), waited: &waited)
            timer.mark(waited: waited, as: .blocked)
            meter.publish(&timer)
            seq += 1
            if !ok { break }
        }
        output.close()
        timer.mark(.overhead)
        meter.publish(&timer)
    }
}

/// A native thread started once and joined once, held by a stage that is itself `Sendable`.
final class JoinOnce: @unchecked Sendable {
    private var threads: [NativeThread] = []

    /// Starts `body` on a new thread (called from the wiring thread only, before any join).
    func start(name: String, _ body: @escaping @Sendable () -> Void) {
        threads.append(NativeThread(name: name, body))
    }

    /// Joins every started thread (from the wiring thread only).
    func join() {
        for t in threads { t.join() }
        threads.removeAll()
    }
}
