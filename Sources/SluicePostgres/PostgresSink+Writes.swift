import Foundation
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceInterfaces
import SluiceReport
import Synchronization

// The write paths of flat batches: binary COPY (append), COPY into a staging table and one merge (upsert),
// `unnest` arrays (update), and the encoding of a batch as binary COPY tuples.
extension PostgresSink {
    /// COPY into the session's staging table, then one merge statement, in one transaction.
    func writeStaged(
        _ batch: RecordBatch, _ s: PostgresSession, _ lane: Lane, _ sequence: Int?, _ t: inout SinkTimings
    ) async throws -> SinkWriteOutcome {
        let a = MonotonicClock.now()
        let (data, rejected) = encodeCopy(batch, lane.encoder, ordinal: true)
        let b = MonotonicClock.now()
        t.encode.busy += b - a
        if !lane.stageReady {
            try await s.execute("SET temp_buffers = \(SQL.literal(options.tempBuffers))")
            try await s.execute(statements.createStage)
            lane.stageReady = true
        }
        try await s.execute("BEGIN")
        try await s.copyIn(statement: statements.copyStage, data: data)
        if let sequence { await keyOrder?.waitForEarlierBatchesSharingKeys(sequence) }
        do {
            try await s.execute(statements.merge)
        } catch let f as SluiceError where f.sqlState == "21000" && !statements.mergeDedup.isEmpty {
            // A key repeats inside the batch: merge its last occurrence only.
            try await s.execute("ROLLBACK")
            try await s.execute("BEGIN")
            try await s.copyIn(statement: statements.copyStage, data: data)
            try await s.execute(statements.mergeDedup)
        }
        let c = MonotonicClock.now()
        t.write.busy += c - b
        try await commit(s, sequence: sequence, from: c, &t)
        return SinkWriteOutcome(written: batch.count - rejected.count, rejected: rejected)
    }

    /// Commits the lane's transaction; with several writers appending, only once every earlier batch is done
    /// (``CommitOrder``). The wait is the commit's blocked time, the `COMMIT` its busy time, from `start`.
    func commit(_ s: PostgresSession, sequence: Int?, from start: UInt64, _ t: inout SinkTimings) async throws {
        var c = start
        if let sequence, let commitOrder {
            await commitOrder.waitForEarlierBatches(sequence)
            let now = MonotonicClock.now()
            t.commit.blocked += now - c
            c = now
        }
        try await s.execute("COMMIT")
        t.commit.busy += MonotonicClock.now() - c
    }

    /// Encodes the batch as binary COPY data (with a leading row-ordinal column for staging); rows with a
    /// value the target type cannot hold are left out and returned.
    func encodeCopy(
        _ batch: RecordBatch, _ e: PostgresBinaryEncoder, ordinal: Bool
    ) -> (ByteBuffer, [(row: Int, reason: String)]) {
        encodeCopy(batch, e, ordinal: ordinal, columns: columns, inputIndex: inputIndex)
    }

    func encodeCopy(
        _ batch: RecordBatch, _ e: PostgresBinaryEncoder, ordinal: Bool, columns: [PostgresColumn], inputIndex: [Int]
    ) -> (ByteBuffer, [(row: Int, reason: String)]) {
        e.reset()
        e.putCopyHeader()
        var rejected: [(row: Int, reason: String)] = []
        let views = inputIndex.map { batch.columns[$0].view }
        let fieldCount = Int16(columns.count + (ordinal ? 1 : 0))
        withExtendedLifetime(batch) {
            columns.withUnsafeBufferPointer { cols in
                views.withUnsafeBufferPointer { views in
                    for row in 0..<batch.count {
                        let start = e.count
                        e.put16(fieldCount)
                        if ordinal {
                            e.put32(4)
                            e.put32(Int32(truncatingIfNeeded: row))
                        }
                        for c in 0..<cols.count {
                            if let reason = e.putValue(views[c], row, cols[c]) {
                                rejected.append((row, reason))
                                e.rewind(to: start)
                                break
                            }
                        }
                    }
                }
            }
        }
        e.putCopyTrailer()
        var buffer = ByteBufferAllocator().buffer(capacity: e.count)
        buffer.writeBytes(e.bytes)
        return (buffer, rejected)
    }

    /// One `UPDATE … FROM unnest(arrays)` statement for the batch.
    ///
    /// The one write path without an explicit `BEGIN` / `COMMIT`: a single statement is its own transaction,
    /// and the server answers it only after it committed (unlike a `COPY` in an implicit transaction, whose
    /// completion came before the commit, commit `785a169`), so an answered statement is a stored batch. A retry
    /// after a lost answer is harmless: `UPDATE … SET` to the same values is idempotent, and rows whose values
    /// already match are not written.
    func writeUpdate(
        _ batch: RecordBatch, _ s: PostgresSession, _ lane: Lane, _ t: inout SinkTimings
    ) async throws -> SinkWriteOutcome {
        let a = MonotonicClock.now()
        let e = lane.encoder
        var rejected: [(row: Int, reason: String)] = []
        var skip = Set<Int>()
        var binds = PostgresBindings(capacity: columns.count)
        // First pass: find rows with unrepresentable values so every array leaves them out.
        for (c, col) in columns.enumerated() {
            for (row, reason) in unrepresentable(batch, column: inputIndex[c], as: col, e) where !skip.contains(row) {
                skip.insert(row)
                rejected.append((row, reason))
            }
        }
        let rows = batch.count - skip.count
        let kept = skip.isEmpty ? nil : (0..<batch.count).filter { !skip.contains($0) }
        for (c, col) in columns.enumerated() {
            binds.append(try arrayParameter(batch, column: inputIndex[c], as: col, rows: kept, e))
        }
        let b = MonotonicClock.now()
        t.encode.busy += b - a
        try await s.execute(statements.update, binds)
        t.write.busy += MonotonicClock.now() - b
        return SinkWriteOutcome(written: rows, rejected: rejected)
    }

    /// With a `clean` run, runs `deleting` (which returns the count of parent rows it deleted) in one
    /// transaction and records the count; otherwise records why purging was skipped.
    func purge(
        on s: PostgresSession, clean: Bool, complete: Bool, _ deleting: () async throws -> [PostgresRow]
    ) async throws {
        guard clean else {
            timingLock.withLock {
                counts.purgeSkipped = TableConventions.purgeSkippedReason(complete: complete)
            }
            return
        }
        try await s.execute("BEGIN")
        let purged = try await deleting().first?.decode(Int64.self) ?? 0
        try await s.execute("COMMIT")
        timingLock.withLock {
            counts.purged = purged
        }
    }

    /// A one-dimensional binary array parameter of column `col` of `batch`, for `= ANY($1)`.
    func arrayParameter(
        _ batch: RecordBatch, column index: Int, as col: PostgresColumn, rows: [Int]?, _ e: PostgresBinaryEncoder
    )
        throws -> PostgresData
    {
        let v = batch.columns[index].view
        e.reset()
        e.put32(1)
        e.put32(v.hasNulls ? 1 : 0)
        e.put32(Int32(bitPattern: col.wireOID))
        e.put32(Int32(rows?.count ?? batch.count))
        e.put32(1)
        withExtendedLifetime(batch) {
            if let rows {
                for r in rows { _ = e.putValue(v, r, col) }
            } else {
                for r in 0..<batch.count { _ = e.putValue(v, r, col) }
            }
        }
        var buffer = ByteBufferAllocator().buffer(capacity: e.count)
        buffer.writeBytes(e.bytes)
        guard let arrayOID = PostgresOID.array(of: col.wireOID) else {
            throw SluiceError.sink(.fatal, "no array type for column \(col.name) (\(col.sqlType))")
        }
        return PostgresData(type: PostgresDataType(arrayOID), formatCode: .binary, value: buffer)
    }
}
