import SluiceCore
import SluiceReport

/// The reader: one thread that pulls a blocking ``Source`` (reading, decompressing, framing), or one task that
/// pulls an ``AsyncSource`` (a query over the network), and pushes its items, in sequence, onto the chunk queue.
///
/// Booking: the source's own work is busy, the time a source reports waiting for input to arrive (a pipe)
/// is starved, the wait for room in the queue is blocked, and the hand-off around it is overhead.
final class ReaderStage: Sendable {
    let meter: StageMeter
    private let source: any SourceBase
    private let output: BoundedQueue<(Int, SourceItem)>
    private let control: RunControl
    private let thread = JoinOnce()

    init(source: any SourceBase, output: BoundedQueue<(Int, SourceItem)>, control: RunControl) {
        self.source = source
        self.output = output
        self.control = control
        meter = StageMeter(name: "read \(source.name)", threads: 1)
    }

    /// Starts the thread, for a blocking source (an async source is read by ``run()``, as a task).
    func start() {
        guard case .blocking(let source) = source.kind else { return }
        thread.start(name: "sluice-read") { [self] in run(source) }
    }

    /// Waits for the thread to end.
    func join() { thread.join() }

    private func run(_ source: any Source) {
        var timer = ThreadTimer()
        var seq = 0
        let progress = source.progress
        while !control.shouldStopReading {
            let waitedBefore = progress.waitNanos
            let item: SourceItem?
            do { item = try source.next() } catch {
                timer.mark(.busy)
                fail(error)
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

    /// Reads an async source to its end (or until the run stops), as the reader task; booked as the thread's
    /// loop is (the source's awaits are its work: busy).
    func run() async {
        guard case .async(let source) = source.kind else { return }
        var timer = ThreadTimer()
        var seq = 0
        while !control.shouldStopReading {
            let item: SourceItem?
            do { item = try await source.next() } catch {
                timer.mark(.busy)
                fail(error)
                break
            }
            timer.mark(.busy)
            guard let item else { break }
            timer.clock.batches += 1
            let (ok, waited) = await output.push((seq, item))
            timer.mark(waited: waited, as: .blocked)
            meter.publish(&timer)
            seq += 1
            if !ok { break }
        }
        await source.close()
        output.close()
        timer.mark(.overhead)
        meter.publish(&timer)
    }

    private func fail(_ error: any Error) {
        control.fail(RunFailure(.read, (error as? SluiceError) ?? SluiceError(.io, "\(error)")))
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
