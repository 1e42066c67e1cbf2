import DequeModule
import Foundation
import SluiceCore

/// A push source: producers hand it batches with ``send(_:)`` and learn when each one is committed.
///
/// `send` suspends while the inlet's bounded queue is full (backpressure: a server awaiting it stops reading
/// its request bodies instead of buffering them), and returns only after the batch's transaction committed
/// in the sink — the acknowledgement a server may answer with. It throws when the run ends before the batch
/// committed (the run was stopped or aborted): the producer must not report such a batch as stored.
///
/// The run ends its reading when ``finish()`` is called (or the run is cancelled); batches queued but not
/// yet read then fail their `send`. Batches commit in the order they were queued. An inlet serves one run,
/// without an I/O stage (whose output order is not input order).
///
/// ```swift
/// let inlet = IngestInlet(schema: schema)
/// async let report = Pipeline(source: inlet, sink: sink).run()
/// try await inlet.send(batch)     // returns once committed
/// inlet.finish()
/// print(try await report.text)
/// ```
public final class IngestInlet: Source, @unchecked Sendable {
    /// The schema every batch must have.
    public let schema: Schema
    /// Batches queued at most before ``send(_:)`` waits.
    public let capacity: Int
    /// The name in reports.
    public let name: String
    /// Progress counters: bytes are the batches' `inputBytes`.
    public let progress = SourceProgress()

    private typealias Ack = CheckedContinuation<Void, any Error>
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var queued = Deque<(RecordBatch, Ack)>()
    private var reserved = 0
    private var waitingForRoom = Deque<Ack>()
    private var awaitingCommit = Deque<Ack>()
    private var finished = false
    private var ended = false
    private var isCancelled: @Sendable () -> Bool = { false }

    /// Creates an inlet for batches of `schema`, holding at most `capacity` batches before senders wait.
    public init(schema: Schema, capacity: Int = 4, name: String = "inlet") {
        self.schema = schema
        self.capacity = max(1, capacity)
        self.name = name
    }

    /// Queues `batch` for the run, waiting while the queue is full, and returns once its transaction has
    /// committed. An empty batch returns at once.
    ///
    /// - Throws: ``SluiceError`` (`.config`) when the batch's schema is not the inlet's; (`.interrupted`)
    ///   when the run ended, or the inlet was finished, before the batch committed.
    public func send(_ batch: RecordBatch) async throws {
        guard batch.schema == schema else {
            throw SluiceError(.config, "\(name): a batch of \(batch.schema) does not match the inlet's \(schema)")
        }
        guard batch.count > 0 else { return }
        try await withCheckedThrowingContinuation { (room: Ack) in
            condition.lock()
            if ended || finished {
                condition.unlock()
                room.resume(throwing: Self.notCommitted(name))
            } else if queued.count + reserved < capacity {
                reserved += 1
                condition.unlock()
                room.resume()
            } else {
                waitingForRoom.append(room)
                condition.unlock()
            }
        }
        try await withCheckedThrowingContinuation { (ack: Ack) in
            condition.lock()
            reserved -= 1
            if ended || finished {
                let next = grantRoom()
                condition.unlock()
                next?.resume()
                ack.resume(throwing: Self.notCommitted(name))
                return
            }
            queued.append((batch, ack))
            condition.broadcast()
            condition.unlock()
        }
    }

    /// No more batches: the run reads what is queued, then ends. Senders waiting for room fail.
    public func finish() {
        condition.lock()
        finished = true
        let waiting = Array(waitingForRoom)
        waitingForRoom.removeAll()
        condition.broadcast()
        condition.unlock()
        for w in waiting { w.resume(throwing: Self.notCommitted(name)) }
    }

    private static func notCommitted(_ name: String) -> SluiceError {
        SluiceError(.interrupted, "\(name): the run ended before this batch was committed")
    }

    /// Gives a freed place to the first sender waiting for room. Caller holds `condition`.
    private func grantRoom() -> Ack? {
        guard queued.count + reserved < capacity, let next = waitingForRoom.popFirst() else { return nil }
        reserved += 1
        return next
    }

    // MARK: Source

    /// Returns the schema.
    public func open(context: SourceContext) throws -> Schema {
        condition.lock()
        isCancelled = context.isCancelled
        condition.unlock()
        return schema
    }

    /// The next queued batch, waiting for one (booked as waiting for input); nil once finished and drained,
    /// or when the run is stopping.
    public func next() throws -> SourceItem? {
        condition.lock()
        let t0 = MonotonicClock.now()
        while queued.isEmpty && !finished && !isCancelled() {
            _ = condition.wait(until: Date(timeIntervalSinceNow: 0.1))
        }
        progress.addWait(MonotonicClock.now() - t0)
        guard !isCancelled(), let (batch, ack) = queued.popFirst() else {
            condition.unlock()
            return nil
        }
        awaitingCommit.append(ack)
        let next = grantRoom()
        condition.unlock()
        next?.resume()
        progress.add(read: Int64(batch.inputBytes), decoded: Int64(batch.inputBytes))
        return .batch(batch)
    }

    /// Acknowledges the oldest batch read (batches commit in input order).
    public func committed(_ batch: RecordBatch) {
        condition.lock()
        let ack = awaitingCommit.popFirst()
        condition.unlock()
        ack?.resume()
    }

    /// Fails every batch not committed, and every sender still waiting.
    public func runEnded(committedAll: Bool) {
        condition.lock()
        ended = true
        let failing = Array(awaitingCommit) + queued.map(\.1) + Array(waitingForRoom)
        awaitingCommit.removeAll()
        queued.removeAll()
        waitingForRoom.removeAll()
        condition.broadcast()
        condition.unlock()
        for f in failing { f.resume(throwing: Self.notCommitted(name)) }
    }
}
