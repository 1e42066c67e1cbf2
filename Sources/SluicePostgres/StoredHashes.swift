import Foundation
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceInterfaces
import SluiceReport
import Synchronization

/// The keys and content hashes (their first 16 bytes) of every stored record, read once when an upsert of
/// nested or hashed records opens: batches are then classified new / changed / unchanged in memory, with no
/// lookup round trip, and `--purge-missing` knows which stored keys the run never saw without a table of
/// them. 24 bytes and one bit per stored record.
///
/// Keys the run inserts are not added: a key that is not stored is taken to be new, and if an earlier batch
/// of the run inserted it after all, its `COPY` fails with a unique violation and the batch is classified
/// again against the table. Keys the run changes are remembered with their new hash, so a key repeated later
/// in the input is compared with what the run wrote, not with what was stored before.
final class StoredHashes: @unchecked Sendable {
    private let keys: [Int64]
    private let hashes: [UInt64]
    private var seen: [UInt64]
    private var changed: [Int64: (UInt64, UInt64)] = [:]
    private let lock = NSLock()

    private init(keys: [Int64], hashes: [UInt64]) {
        self.keys = keys
        self.hashes = hashes
        seen = [UInt64](repeating: 0, count: (keys.count + 63) / 64)
    }

    /// Reads every key (and hash) of `table` in key order; nil when it holds more than `limit` records.
    static func load(
        table: String, key: String, hash: String?, source: String? = nil, on s: PostgresSession, limit: Int
    ) async throws -> StoredHashes? {
        let t = SQL.table(table)
        let k = SQL.ident(key)
        let n = try await s.rows("SELECT count(*)::int8 FROM (SELECT 1 FROM \(t) LIMIT \(limit + 1)) x")
        guard let count = try n.first?.decode(Int64.self), count <= limit else { return nil }
        final class Collector: @unchecked Sendable {
            var keys: [Int64] = []
            var hashes: [UInt64] = []
            var sourceKeys: [Int64] = []
            var sources: [Int64] = []
        }
        let c = Collector()
        c.keys.reserveCapacity(Int(count))
        c.hashes.reserveCapacity(Int(count) * 2)
        let h = hash.map { "substring(\($0) from 1 for 16)" } ?? "NULL::bytea"
        let sh = source.map { "\($0)::int8" } ?? "NULL::int8"
        try await s.forEachRow("SELECT \(k)::int8, \(h), \(sh) FROM \(t) ORDER BY \(k)") { row in
            let (key, digest, sourceHash) = try row.decode((Int64, ByteBuffer?, Int64?).self)
            c.keys.append(key)
            if let sourceHash {
                c.sourceKeys.append(key)
                c.sources.append(sourceHash)
            }
            var a: UInt64 = 0
            var b: UInt64 = 0
            if let digest, digest.readableBytes >= 16 {
                digest.withUnsafeReadableBytes { p in
                    a = p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
                    b = p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                }
            }
            c.hashes.append(a)
            c.hashes.append(b)
        }
        let stored = StoredHashes(keys: c.keys, hashes: c.hashes)
        if source != nil { stored.sources = StoredSourceHashes(keys: c.sourceKeys, hashes: c.sources) }
        return stored
    }

    /// The stored source hashes (read with `source`), for decoders to skip unchanged records.
    private(set) var sources: StoredSourceHashes?

    /// Stored records read.
    var count: Int { keys.count }

    private func index(of key: Int64) -> Int? { keys.sortedIndex(of: key) }

    private static func prefix(_ column: Column?, _ row: Int) -> (UInt64, UInt64)? {
        guard let column, !column.isNull(row) else { return nil }
        let b = column.bytes(at: row)
        guard b.count >= 16 else { return nil }
        return (
            b.loadUnaligned(fromByteOffset: 0, as: UInt64.self), b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        )
    }

    /// A batch's rows: new, changed and unchanged (each ascending). Of a key repeated in the batch, only the
    /// last occurrence counts. Marks every stored key of the batch as seen. `hash` nil: every stored record
    /// counts as changed.
    func classify(_ batch: RecordBatch, key: Int, hash: Int?) -> (new: [Int], changed: [Int], unchanged: [Int]) {
        let keyColumn = batch.columns[key]
        let hashColumn = hash.map { batch.columns[$0] }
        var inBatch = Set<Int64>(minimumCapacity: batch.count)
        var new: [Int] = []
        var changedRows: [Int] = []
        var unchanged: [Int] = []
        lock.lock()
        defer { lock.unlock() }
        for row in stride(from: batch.count - 1, through: 0, by: -1) {
            let k = keyColumn.int64(at: row)
            guard inBatch.insert(k).inserted else { continue }
            let mine = Self.prefix(hashColumn, row)
            var stored: (UInt64, UInt64)?
            if let c = changed[k] {
                stored = c
            } else if let i = index(of: k) {
                seen[i >> 6] |= 1 << UInt64(i & 63)
                stored = (hashes[2 * i], hashes[2 * i + 1])
            } else {
                new.append(row)
                continue
            }
            if let mine, let stored, stored != (0, 0), mine == stored {
                unchanged.append(row)
            } else {
                changedRows.append(row)
            }
        }
        return (new.reversed(), changedRows.reversed(), unchanged.reversed())
    }

    /// Notes the hashes the run wrote for `rows` (changed records).
    func remember(_ batch: RecordBatch, rows: [Int], key: Int, hash: Int?) {
        guard let hash, !rows.isEmpty else { return }
        let keyColumn = batch.columns[key]
        let hashColumn = batch.columns[hash]
        lock.lock()
        defer { lock.unlock() }
        for r in rows {
            let k = keyColumn.int64(at: r)
            changed[k] = Self.prefix(hashColumn, r) ?? (0, 0)
            if let i = index(of: k) { seen[i >> 6] |= 1 << UInt64(i & 63) }
        }
    }

    /// Marks the stored keys of `batch` as seen.
    func markSeen(_ batch: RecordBatch, key: Int) {
        let keyColumn = batch.columns[key]
        lock.lock()
        defer { lock.unlock() }
        for r in 0..<batch.count {
            if let i = index(of: keyColumn.int64(at: r)) { seen[i >> 6] |= 1 << UInt64(i & 63) }
        }
    }

    /// Marks `keys` (records skipped as unchanged) as seen.
    func markSeen(keys: [Int64]) {
        lock.lock()
        defer { lock.unlock() }
        for k in keys {
            if let i = index(of: k) { seen[i >> 6] |= 1 << UInt64(i & 63) }
        }
    }

    /// Stored keys the run never saw.
    func unseen() -> [Int64] {
        lock.lock()
        defer { lock.unlock() }
        return keys.indices.filter { seen[$0 >> 6] & (1 << UInt64($0 & 63)) == 0 }.map { keys[$0] }
    }
}
