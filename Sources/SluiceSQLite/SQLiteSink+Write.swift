import CSQLite
import SluiceCore
import SluiceInterfaces
import SluiceReport
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

// The hot path: binding values straight from the column buffers into one prepared multi-row INSERT, a
// failed group redone row by row; resume reads.
extension SQLiteSink {
    /// Reads the named columns of the stored table (before this run's writes commit, in `replace` mode the
    /// old table). A table that does not exist has no rows.
    /// - Throws: ``SluiceError`` when the table lacks a column.
    public func readStored(columns: [String], _ body: ([String?]) throws -> Void) throws -> Bool {
        guard let db = connection else { return false }
        let q = SQLiteConnection.quote
        do {
            let existing = try db.query("SELECT name FROM pragma_table_info(\(sqlString(table)))").compactMap { $0[0] }
            if existing.isEmpty { return true }
            let missing = columns.filter { !existing.contains($0) }
            guard missing.isEmpty else {
                throw TableConventions.missingColumns(
                    "table \(table)", in: path, missing: missing, purpose: "to resume from")
            }
            let stmt = try db.prepare("SELECT \(columns.map(q).joined(separator: ", ")) FROM \(q(table))")
            while true {
                let rc = sqlite3_step(stmt.handle)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else { throw db.lastError(rc, sql: stmt.sql) }
                try body(
                    (0..<Int32(columns.count)).map { i in
                        sqlite3_column_type(stmt.handle, i) == SQLITE_NULL
                            ? nil : String(cString: sqlite3_column_text(stmt.handle, i))
                    })
            }
        } catch let e as SQLiteError { throw SluiceError.sink(.fatal, e.description) }
        return true
    }

    func sqlString(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }

    func run(_ stmt: SQLiteStatement) throws {
        let rc = sqlite3_step(stmt.handle)
        sqlite3_reset(stmt.handle)
        if rc != SQLITE_DONE {
            let e = connection!.lastError(rc, sql: stmt.sql)
            throw SluiceError.sink(e.isTransient ? .retry : .fatal, e.description)
        }
    }

    /// Binds row `row` of `views` to `stmt` starting at parameter `first`.
    @inline(__always)
    func bind(
        _ stmt: OpaquePointer, _ first: Int32, _ row: Int, _ views: UnsafeBufferPointer<ColumnView>,
        _ types: UnsafeBufferPointer<FieldType>
    ) {
        for c in 0..<views.count {
            let v = views[c]
            let idx = first + Int32(c)
            if v.hasNulls && v.isNull(row) {
                sqlite3_bind_null(stmt, idx)
                continue
            }
            switch types[c] {
            case .int64: sqlite3_bind_int64(stmt, idx, v.int64(row))
            case .bool: sqlite3_bind_int64(stmt, idx, v.slot(row) != 0 ? 1 : 0)
            case .float64: sqlite3_bind_double(stmt, idx, v.double(row))
            case .string, .json:
                let (p, n) = v.bytes(row)
                p.withMemoryRebound(to: CChar.self, capacity: max(n, 1)) {
                    _ = sluice_bind_text_static(stmt, idx, $0, Int32(n))
                }
            case .bytes:
                let (p, n) = v.bytes(row)
                sluice_bind_blob_static(stmt, idx, p, Int32(n))
            case .timestamp:
                // Each bound row of a multi-row statement needs its own text until the step.
                let out = scratch + (Int(idx) - 1) * 32
                Timestamp.format(micros: v.int64(row), into: out)
                out.withMemoryRebound(to: CChar.self, capacity: 32) {
                    _ = sluice_bind_text_static(stmt, idx, $0, Int32(Timestamp.formattedLength))
                }
            }
        }
    }

    /// Inserts the batch in one transaction, `rowsPerStatement` rows per statement; a statement that hits a
    /// constraint is redone row by row so that only the offending rows are rejected.
    public func write(_ batch: RecordBatch, context: WriteContext) throws -> SinkWriteOutcome {
        guard let single = insert, let multi = insertMany, let begin, let commit, let db = connection else {
            throw SluiceError.sink(.fatal, "the SQLite sink is not open")
        }
        if let nested { return try writeNested(batch, nested, db) }
        try run(begin)
        let views = batch.columns.map(\.view)
        let types = schema.fields.map(\.type)
        let n = batch.count
        let width = Int32(schema.count)
        var rejected: [(row: Int, reason: String)] = []
        var bindSample: UInt64 = 0
        var stepSample: UInt64 = 0
        let t0 = MonotonicClock.now()
        let failure: SluiceError? = withExtendedLifetime(batch) {
            views.withUnsafeBufferPointer { views in
                types.withUnsafeBufferPointer { types in
                    var row = 0
                    var statements = 0
                    while row < n {
                        let group = n - row >= rowsPerStatement ? rowsPerStatement : 1
                        let stmt = group > 1 ? multi.handle : single.handle
                        let sampled = statements & 7 == 0
                        statements += 1
                        let a = sampled ? MonotonicClock.now() : 0
                        for k in 0..<group { bind(stmt, Int32(k) * width + 1, row + k, views, types) }
                        let b = sampled ? MonotonicClock.now() : 0
                        let rc = sqlite3_step(stmt)
                        if sampled {
                            bindSample += b - a
                            stepSample += MonotonicClock.now() - b
                        }
                        sqlite3_reset(stmt)
                        if rc == SQLITE_DONE {
                            row += group
                            continue
                        }
                        let e = db.lastError(rc, sql: group > 1 ? multi.sql : single.sql)
                        if !e.isConstraint { return SluiceError.sink(e.isTransient ? .retry : .fatal, e.description) }
                        if group == 1 {
                            rejected.append((row, e.message))
                            row += 1
                            continue
                        }
                        // Redo this group row by row; SQLite undid the failed statement only.
                        for k in 0..<group {
                            bind(single.handle, 1, row + k, views, types)
                            let rc1 = sqlite3_step(single.handle)
                            sqlite3_reset(single.handle)
                            if rc1 == SQLITE_DONE { continue }
                            let e1 = db.lastError(rc1, sql: single.sql)
                            if !e1.isConstraint {
                                return SluiceError.sink(e1.isTransient ? .retry : .fatal, e1.description)
                            }
                            rejected.append((row + k, e1.message))
                        }
                        row += group
                    }
                    return nil
                }
            }
        }
        let t1 = MonotonicClock.now()
        try finishTransaction(failure, db, commit)
        let t2 = MonotonicClock.now()
        let loop = t1 - t0
        let encodeShare = bindSample + stepSample > 0 ? Double(bindSample) / Double(bindSample + stepSample) : 0
        let encode = UInt64(Double(loop) * encodeShare)
        timingBox.withLock { timings in
            timings.encode.busy += encode
            timings.encode.records += Int64(n)
            timings.write.busy += loop - encode
            timings.write.records += Int64(n)
            timings.commit.busy += t2 - t1
            timings.commit.records += Int64(n)
            timings.commit.batches += 1
        }
        return SinkWriteOutcome(written: n - rejected.count, rejected: rejected)
    }
}
