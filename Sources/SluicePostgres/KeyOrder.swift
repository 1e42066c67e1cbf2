import Foundation
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceReport
import SluiceRuntime
import Synchronization

/// Keeps batches that share keys in input order when several writers upsert or update at once.
///
/// The dispatching thread registers each batch's key hashes in input order (``register(_:sequence:)``). A
/// writer about to run a batch's merge or update waits while an earlier batch that is not done yet shares a
/// key hash with it; ``release(_:)`` (the batch is committed, rejected or failed) wakes the waiters. Waits only
/// ever point at earlier batches, which writers took from the queue first, so they cannot form a cycle. A hash
/// collision only makes a batch wait when it need not.
final class KeyOrder: @unchecked Sendable {
    private let key: [String]
    private let condition = NSCondition()
    private var pending: [Int: Set<UInt64>] = [:]

    init(key: [String]) { self.key = key }

    /// Records the key hashes of batch `sequence`.
    func register(_ batch: RecordBatch, sequence: Int) {
        let columns = key.compactMap { batch.schema.index(of: $0) }.map { batch.columns[$0] }
        let views = columns.map(\.view)
        let isBytes = columns.map { $0.type == .bytes || $0.type == .string }
        var hashes = Set<UInt64>(minimumCapacity: batch.count)
        withExtendedLifetime(batch) {
            for row in 0..<batch.count {
                var h: UInt64 = 0xCBF2_9CE4_8422_2325
                for (c, v) in views.enumerated() {
                    if v.isNull(row) {
                        h = (h ^ 0xFF) &* 0x100_0000_01B3
                    } else if isBytes[c] {
                        let (p, n) = v.bytes(row)
                        for i in 0..<n { h = (h ^ UInt64(p[i])) &* 0x100_0000_01B3 }
                        h = (h ^ UInt64(n)) &* 0x100_0000_01B3
                    } else {
                        h = (h ^ v.slot(row)) &* 0x100_0000_01B3
                    }
                }
                hashes.insert(h)
            }
        }
        condition.lock()
        pending[sequence] = hashes
        condition.unlock()
    }

    /// Blocks while an earlier, unfinished batch shares a key hash with batch `sequence`.
    func waitForEarlierBatchesSharingKeys(_ sequence: Int) {
        condition.lock()
        defer { condition.unlock() }
        while let mine = pending[sequence],
            pending.contains(where: { $0.key < sequence && !$0.value.isDisjoint(with: mine) })
        {
            condition.wait()
        }
    }

    /// Batch `sequence` is done: later batches sharing its keys may go.
    func release(_ sequence: Int) {
        condition.lock()
        if pending.removeValue(forKey: sequence) != nil { condition.broadcast() }
        condition.unlock()
    }
}
