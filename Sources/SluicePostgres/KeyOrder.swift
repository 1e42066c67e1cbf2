import Foundation
import SluiceCore
import SluiceInterfaces

/// Keeps batches that share keys in input order when several writers upsert or update at once: the
/// ``KeyOrderStateMachine`` under a condition variable. The dispatching thread registers each batch
/// (``register(_:sequence:)``) before any writer sees it; a writer about to run a batch's merge or update
/// waits while the machine says an earlier batch sharing a key is not done; ``release(_:)`` (the batch is
/// committed, rejected or failed) wakes the waiters.
final class KeyOrder: @unchecked Sendable {
    private let key: [String]
    private let condition = NSCondition()
    private var machine = KeyOrderStateMachine()

    init(key: [String]) { self.key = key }

    /// Records the key hashes of batch `sequence`.
    func register(_ batch: RecordBatch, sequence: Int) {
        let hashes = KeyOrderStateMachine.keyHashes(batch, columns: key)
        condition.lock()
        machine.register(sequence, keyHashes: hashes)
        condition.unlock()
    }

    /// Blocks while an earlier, unfinished batch shares a key hash with batch `sequence`.
    func waitForEarlierBatchesSharingKeys(_ sequence: Int) {
        condition.lock()
        defer { condition.unlock() }
        while !machine.mayRun(sequence) { condition.wait() }
    }

    /// Batch `sequence` is done: later batches sharing its keys may go.
    func release(_ sequence: Int) {
        condition.lock()
        if machine.release(sequence) { condition.broadcast() }
        condition.unlock()
    }
}
