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

/// A bounded FIFO between stages. `push` blocks while full, `pop` while empty; both report how long they
/// waited, which the stage clocks book as blocked or starved time. A task uses ``push(_:)`` and ``pop()``,
/// which suspend instead of blocking, so that a stage running as tasks (PostgreSQL writers, an async reader)
/// never holds a thread of Swift's cooperative pool while it waits; both kinds of ends mix freely.
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
    /// Tasks suspended in ``pop()`` (waiting for an item) and in ``push(_:)`` (waiting for room), resumed when
    /// the state they wait on changes; they look again on resumption.
    private var waitingForItems: [CheckedContinuation<Void, Never>] = []
    private var waitingForRoom: [CheckedContinuation<Void, Never>] = []

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        slots = Array(repeating: nil, count: self.capacity)
    }

    /// Adds an item; returns false (dropping it) if the queue was cancelled. `waited` gets the blocked time.
    func push(_ item: consuming Element, waited: inout UInt64) -> Bool {
        condition.lock()
        if count >= capacity && !cancelled {
            let t0 = MonotonicClock.now()
            while count >= capacity && !cancelled { condition.wait() }
            waited &+= MonotonicClock.now() - t0
        }
        if cancelled {
            condition.unlock()
            return false
        }
        appendAndUnlock(item)
        return true
    }

    /// Adds an item from a task, suspending while the queue is full; returns false (dropping it) if the queue
    /// was cancelled, with the time it waited.
    func push(_ item: sending Element) async -> (ok: Bool, waited: UInt64) {
        var pending: Element? = item
        return await suspend(forRoom: true) { offer(&pending) }
    }

    /// Retries `attempt` until it gives a result, suspending between tries until the queue may have room
    /// (`forRoom`) or an item; returns the result and the time spent suspended.
    private func suspend<R>(forRoom: Bool, _ attempt: () -> R?) async -> (R, UInt64) {
        var t0: UInt64?
        while true {
            if let r = attempt() { return (r, t0.map { MonotonicClock.now() - $0 } ?? 0) }
            if t0 == nil { t0 = MonotonicClock.now() }
            await withCheckedContinuation { park($0, forRoom: forRoom) }
        }
    }

    /// Adds `pending` if there is room: true, false if cancelled, nil if full.
    private func offer(_ pending: inout Element?) -> Bool? {
        condition.lock()
        if cancelled {
            condition.unlock()
            return false
        }
        guard count < capacity else {
            condition.unlock()
            return nil
        }
        appendAndUnlock(pending.take()!)
        return true
    }

    /// Registers a suspended task to be resumed when there may be room (or an item), unless there is already.
    private func park(_ c: CheckedContinuation<Void, Never>, forRoom: Bool) {
        condition.lock()
        let ready = cancelled || (forRoom ? count < capacity : count > 0 || closed)
        if !ready {
            if forRoom { waitingForRoom.append(c) } else { waitingForItems.append(c) }
        }
        condition.unlock()
        if ready { c.resume() }
    }

    /// Takes the oldest item, or nil once closed and drained (or cancelled). `waited` gets the starved time.
    func pop(waited: inout UInt64) -> Element? {
        condition.lock()
        if count == 0 && !closed && !cancelled {
            let t0 = MonotonicClock.now()
            while count == 0 && !closed && !cancelled { condition.wait() }
            waited &+= MonotonicClock.now() - t0
        }
        if cancelled || count == 0 {
            condition.unlock()
            return nil
        }
        return removeFirstAndUnlock()
    }

    /// Takes the oldest item from a task, suspending while the queue is empty; nil once closed and drained (or
    /// cancelled), with the time it waited.
    func pop() async -> (item: Element?, waited: UInt64) {
        await suspend(forRoom: false) { poll() }
    }

    /// The oldest item (`.some(item)`), the end (`.some(nil)`: closed and drained, or cancelled), or nil when
    /// the queue is empty and open.
    private func poll() -> Element?? {
        condition.lock()
        if cancelled || (count == 0 && closed) {
            condition.unlock()
            return .some(nil)
        }
        guard count > 0 else {
            condition.unlock()
            return nil
        }
        return .some(removeFirstAndUnlock())
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
        let wake = takeWaiters(&waitingForItems)
        condition.broadcast()
        condition.unlock()
        for w in wake { w.resume() }
    }

    /// Drops queued items and wakes everybody.
    func cancel() {
        condition.lock()
        cancelled = true
        for i in 0..<slots.count { slots[i] = nil }
        count = 0
        let wake = takeWaiters(&waitingForItems) + takeWaiters(&waitingForRoom)
        condition.broadcast()
        condition.unlock()
        for w in wake { w.resume() }
    }

    /// Stores `item` at the tail, unlocks, and wakes blocked threads and suspended consumers (called with the
    /// lock held, room checked).
    private func appendAndUnlock(_ item: consuming Element) {
        slots[(head + count) % capacity] = item
        count += 1
        condition.broadcast()
        let wake = takeWaiters(&waitingForItems)
        condition.unlock()
        for w in wake { w.resume() }
    }

    /// Takes the head item, unlocks, and wakes blocked threads and suspended producers (called with the lock
    /// held, an item present).
    private func removeFirstAndUnlock() -> Element? {
        let item = slots[head].take()
        head = (head + 1) % capacity
        count -= 1
        condition.broadcast()
        let wake = takeWaiters(&waitingForRoom)
        condition.unlock()
        for w in wake { w.resume() }
        return item
    }

    /// The suspended tasks to resume, emptied (called with the lock held; resumed after unlocking). Empty —
    /// no allocation — when no task waits, which is always so between threads.
    private func takeWaiters(_ list: inout [CheckedContinuation<Void, Never>]) -> [CheckedContinuation<Void, Never>] {
        if list.isEmpty { return [] }
        let w = list
        list.removeAll(keepingCapacity: true)
        return w
    }
}

/// Runs blocking work on a thread of its own and suspends the calling task until it ends, so that blocking
/// calls (a SQLite sink's open and finish, joining the stage threads) never hold a thread of Swift's
/// cooperative pool. One thread per call: used a few times per run, never per batch.
enum Blocking {
    /// Runs `body` on a new thread and returns what it returns.
    static func run<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            NativeThread.detached(name: name) {
                do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
            }
        }
    }

    /// Runs `body`, which cannot fail, on a new thread.
    static func run(_ name: String, _ body: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            NativeThread.detached(name: name) {
                body()
                c.resume()
            }
        }
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
