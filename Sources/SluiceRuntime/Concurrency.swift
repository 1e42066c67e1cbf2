import Foundation
import SluiceReport

#if canImport(Glibc)
    import Glibc
#endif

/// A dedicated OS thread that can be joined. The runtime's hot stages run on these rather than on the
/// cooperative pool, so that blocking I/O (file reads, SQLite writes) never starves Swift concurrency.
final class NativeThread: @unchecked Sendable {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    private var handle = pthread_t()

    /// Starts `body` on a new thread.
    init(name _: String, _ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(
            &handle, nil,
            { arg in
                let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
                box.body()
                return nil
            }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    /// Waits for the thread to finish.
    func join() { pthread_join(handle, nil) }

    /// Starts `body` on a thread nobody joins: its resources are released when it ends.
    static func detached(name: String, _ body: @escaping @Sendable () -> Void) {
        let t = NativeThread(name: name, body)
        pthread_detach(t.handle)
    }
}

/// A bounded FIFO between threads. `push` blocks while full, `pop` while empty; both report how long they
/// waited, which the stage clocks book as blocked or starved time.
final class BoundedQueue<Element>: @unchecked Sendable {
    private let condition = NSCondition()
    /// A ring of `capacity` slots; a slot is cleared as soon as it is popped, so nothing outlives its hand-off.
    private var slots: [Element?]
    private var head = 0
    private var count = 0
    /// Items the queue holds at most.
    let capacity: Int
    private var closed = false
    private var cancelled = false

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        slots = Array(repeating: nil, count: self.capacity)
    }

    /// Adds an item; returns false (dropping it) if the queue was cancelled. `waited` gets the blocked time.
    func push(_ item: consuming Element, waited: inout UInt64) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if count >= capacity && !cancelled {
            let t0 = MonotonicClock.now()
            while count >= capacity && !cancelled { condition.wait() }
            waited &+= MonotonicClock.now() - t0
        }
        if cancelled { return false }
        slots[(head + count) % capacity] = item
        count += 1
        condition.broadcast()
        return true
    }

    /// Takes the oldest item, or nil once closed and drained (or cancelled). `waited` gets the starved time.
    func pop(waited: inout UInt64) -> Element? {
        condition.lock()
        defer { condition.unlock() }
        if count == 0 && !closed && !cancelled {
            let t0 = MonotonicClock.now()
            while count == 0 && !closed && !cancelled { condition.wait() }
            waited &+= MonotonicClock.now() - t0
        }
        if cancelled || count == 0 { return nil }
        let item = slots[head].take()
        head = (head + 1) % capacity
        count -= 1
        condition.broadcast()
        return item
    }

    /// Items queued now.
    var depth: Int {
        condition.lock()
        defer { condition.unlock() }
        return count
    }

    /// No more items will be pushed; consumers drain what is queued.
    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    /// Drops queued items and wakes everybody.
    func cancel() {
        condition.lock()
        cancelled = true
        for i in 0..<slots.count { slots[i] = nil }
        count = 0
        condition.broadcast()
        condition.unlock()
    }
}

/// Restores sequence order after parallel workers: `put` blocks while an item is too far ahead of the
/// next expected one (bounding memory), `take` returns items strictly in sequence.
final class ReorderBuffer<Element>: @unchecked Sendable {
    private let condition = NSCondition()
    private var pending: [Int: Element] = [:]
    private var next = 0
    private let window: Int
    /// Items held at most (the reorder window).
    var capacity: Int { window }
    private var producers: Int
    private var cancelled = false

    init(window: Int, producers: Int) {
        self.window = max(1, window)
        self.producers = producers
    }

    /// Adds item `sequence`; returns false if cancelled. `waited` gets the blocked time.
    func put(_ sequence: Int, _ item: Element, waited: inout UInt64) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if sequence >= next + window && !cancelled {
            let t0 = MonotonicClock.now()
            while sequence >= next + window && !cancelled { condition.wait() }
            waited &+= MonotonicClock.now() - t0
        }
        if cancelled { return false }
        pending[sequence] = item
        condition.broadcast()
        return true
    }

    /// Items waiting to be taken now.
    var depth: Int {
        condition.lock()
        defer { condition.unlock() }
        return pending.count
    }

    /// One producer has finished.
    func producerFinished() {
        condition.lock()
        producers -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// The next item in sequence, or nil when every producer has finished and nothing is pending.
    func take(waited: inout UInt64) -> Element? {
        condition.lock()
        defer { condition.unlock() }
        if pending[next] == nil && producers > 0 && !cancelled {
            let t0 = MonotonicClock.now()
            while pending[next] == nil && producers > 0 && !cancelled { condition.wait() }
            waited &+= MonotonicClock.now() - t0
        }
        if cancelled { return nil }
        guard let item = pending.removeValue(forKey: next) else { return nil }
        next += 1
        condition.broadcast()
        return item
    }

    /// Drops everything and wakes everybody.
    func cancel() {
        condition.lock()
        cancelled = true
        pending.removeAll()
        condition.broadcast()
        condition.unlock()
    }
}
