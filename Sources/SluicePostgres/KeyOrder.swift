import Foundation
import SluiceCore
import SluiceInterfaces

/// Keeps batches that share keys in input order when several writers upsert or update at once: the
/// ``KeyOrderStateMachine`` under a lock. The dispatching thread registers each batch
/// (``register(_:sequence:)``) before any writer sees it; a writer lane about to run a batch's merge or update
/// suspends while the machine says an earlier batch sharing a key is not done; ``release(_:)`` (the batch is
/// committed, rejected or failed) resumes the waiters, which look again.
final class KeyOrder: Sendable {
    private let key: [String]
    private let state = Locked<(machine: KeyOrderStateMachine, waiters: [CheckedContinuation<Void, Never>])>(
        (KeyOrderStateMachine(), []))

    init(key: [String]) { self.key = key }

    /// Records the key hashes of batch `sequence`.
    func register(_ batch: RecordBatch, sequence: Int) {
        let hashes = KeyOrderStateMachine.keyHashes(batch, columns: key)
        state.withLock { $0.machine.register(sequence, keyHashes: hashes) }
    }

    /// Suspends while an earlier, unfinished batch shares a key hash with batch `sequence`.
    func waitForEarlierBatchesSharingKeys(_ sequence: Int) async {
        while !state.withLock({ $0.machine.mayRun(sequence) }) {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { st -> Bool in
                    if st.machine.mayRun(sequence) { return true }
                    st.waiters.append(c)
                    return false
                }
                if ready { c.resume() }
            }
        }
    }

    /// Batch `sequence` is done: later batches sharing its keys may go.
    func release(_ sequence: Int) {
        let wake = state.withLock { st -> [CheckedContinuation<Void, Never>] in
            guard st.machine.release(sequence), !st.waiters.isEmpty else { return [] }
            let w = st.waiters
            st.waiters.removeAll()
            return w
        }
        for w in wake { w.resume() }
    }
}
