import SluiceCore

/// The order of batches that share keys when several writers upsert or update at once, as a pure state
/// machine: batches register their key hashes in input order; a batch may run once no earlier batch that is
/// not done shares a hash with it; a batch that is done — committed, rejected or failed — releases the ones
/// waiting on it. Waits only ever point at earlier batches, so they cannot form a cycle; a hash collision
/// only makes a batch wait when it need not.
public struct KeyOrderStateMachine: Sendable {
    private var pending: [Int: Set<Int>] = [:]

    /// An empty machine.
    public init() {}

    /// Batch `sequence` (registered in input order) has rows with these key hashes.
    public mutating func register(_ sequence: Int, keyHashes: Set<Int>) { pending[sequence] = keyHashes }

    /// Whether batch `sequence` may run now: no earlier batch still pending shares a key hash with it.
    public func mayRun(_ sequence: Int) -> Bool {
        guard let mine = pending[sequence] else { return true }
        return !pending.contains { $0.key < sequence && !$0.value.isDisjoint(with: mine) }
    }

    /// Batch `sequence` is done for good. Returns whether any batch was pending behind it (the waiters should
    /// look again).
    public mutating func release(_ sequence: Int) -> Bool { pending.removeValue(forKey: sequence) != nil }

    /// The key hashes of a batch's rows for `columns` (stdlib `Hasher`: never persisted).
    public static func keyHashes(_ batch: RecordBatch, columns key: [String]) -> Set<Int> {
        let columns = key.compactMap { batch.schema.index(of: $0) }.map { batch.columns[$0] }
        let views = columns.map(\.view)
        let isBytes = columns.map { $0.type == .bytes || $0.type == .string || $0.type == .json }
        var hashes = Set<Int>(minimumCapacity: batch.count)
        if views.count == 1 && !isBytes[0] {
            // One fixed-width key (the common case): the value is its own exact hash.
            let v = views[0]
            withExtendedLifetime(batch) {
                for row in 0..<batch.count {
                    hashes.insert(v.isNull(row) ? Int.min : Int(truncatingIfNeeded: v.slot(row)))
                }
            }
            return hashes
        }
        withExtendedLifetime(batch) {
            for row in 0..<batch.count {
                var h = Hasher()
                for (c, v) in views.enumerated() {
                    if v.isNull(row) {
                        h.combine(0 as UInt8)
                    } else if isBytes[c] {
                        let (p, n) = v.bytes(row)
                        h.combine(1 as UInt8)
                        h.combine(bytes: UnsafeRawBufferPointer(start: p, count: n))
                        h.combine(n)
                    } else {
                        h.combine(2 as UInt8)
                        h.combine(v.slot(row))
                    }
                }
                hashes.insert(h.finalize())
            }
        }
        return hashes
    }
}
