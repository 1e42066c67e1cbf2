import SluiceCore

/// Keeps appended batches' commits in input order when several writers append at once: a lane that has
/// copied batch `n` waits before its `COMMIT` until every earlier batch is done (committed, rejected or
/// failed for good). The copies still run side by side; only the commits line up, so what a kill leaves in
/// the table is always a prefix of the input, in whole batches, as with one writer.
///
/// ``release(_:)`` comes from the sink's `didWrite(sequence:)`, which the runtime calls for every batch it
/// numbered — written or not — so a waiter is always released.
final class CommitOrder: Sendable {
    private struct State {
        /// The lowest batch not done yet.
        var next = 0
        /// Batches done out of order (above `next`).
        var done: Set<Int> = []
        var waiters: [(sequence: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }
    private let state = Locked(State())

    /// Suspends until every batch before `sequence` is done.
    func waitForEarlierBatches(_ sequence: Int) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { st -> Bool in
                if st.next >= sequence { return true }
                st.waiters.append((sequence, c))
                return false
            }
            if ready { c.resume() }
        }
    }

    /// Batch `sequence` is done: later batches whose predecessors are all done may commit.
    func release(_ sequence: Int) {
        let wake = state.withLock { st -> [CheckedContinuation<Void, Never>] in
            if sequence == st.next {
                st.next += 1
                while st.done.remove(st.next) != nil { st.next += 1 }
            } else if sequence > st.next {
                st.done.insert(sequence)
            }
            guard !st.waiters.isEmpty else { return [] }
            let next = st.next
            let ready = st.waiters.filter { $0.sequence <= next }.map(\.continuation)
            st.waiters.removeAll { $0.sequence <= next }
            return ready
        }
        for c in wake { c.resume() }
    }

    /// The lowest batch not done yet (for tests).
    var next: Int { state.withLock { $0.next } }
}
