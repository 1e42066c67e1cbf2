import CSQLite
import SluiceCore
import SluiceInterfaces
import SluiceReport
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

// Nested records and content hashes: lookups of stored keys and hashes, child rows, the seen table for
// --purge-missing, stored source hashes.
extension SQLiteSink {
    /// Creates missing child tables and prepares the per-record statements, when records are nested or
    /// carry a hash to compare.
    func openNested(_ db: SQLiteConnection) throws {
        let tracking = options.changes
        guard !schema.children.isEmpty || tracking.skipUnchanged || tracking.purgeMissing else { return }
        let q = SQLiteConnection.quote
        let keyName = mode.keyColumns.first
        var deletes: [SQLiteStatement] = []
        var inserts: [SQLiteStatement] = []
        for child in schema.children {
            let link = child.linkField.name
            let existing = try db.query("SELECT name FROM pragma_table_info(\(sqlString(child.name)))").compactMap {
                $0[0]
            }
            if existing.isEmpty {
                try db.exec(
                    Self.createTableSQL(child.name, schema: child.schema, key: [link, "position"]) + " WITHOUT ROWID")
            } else {
                let missing = child.schema.fields.map(\.name).filter { !existing.contains($0) }
                if !missing.isEmpty {
                    throw TableConventions.missingColumns("child table \(child.name)", in: path, missing: missing)
                }
            }
            let cols = child.schema.fields.map { q($0.name) }.joined(separator: ", ")
            let marks = Array(repeating: "?", count: child.schema.count).joined(separator: ", ")
            inserts.append(try db.prepare("INSERT INTO \(q(child.name)) (\(cols)) VALUES (\(marks))"))
            if keyName != nil { deletes.append(try db.prepare("DELETE FROM \(q(child.name)) WHERE \(q(link)) = ?")) }
        }
        var lookup: SQLiteStatement?
        var seen: SQLiteStatement?
        var refresh: SQLiteStatement?
        let hashName = tracking.hashColumn.flatMap { schema.index(of: $0) != nil ? $0 : nil }
        let sourceName =
            tracking.skipUnchanged && hashName != nil
            ? tracking.sourceHashColumn.flatMap { schema.index(of: $0) != nil ? $0 : nil } : nil
        if let keyName {
            var what = hashName.map(q) ?? "1"
            if let sourceName {
                what += ", \(q(sourceName))"
                refresh = try db.prepare(
                    "UPDATE \(q(table)) SET \(q(sourceName)) = ? WHERE \(q(keyName)) = ?")
            }
            lookup = try db.prepare("SELECT \(what) FROM \(q(table)) WHERE \(q(keyName)) = ?")
            if tracking.purgeMissing {
                try db.exec("CREATE TEMP TABLE IF NOT EXISTS sluice_seen (k PRIMARY KEY) WITHOUT ROWID")
                try db.exec("DELETE FROM temp.sluice_seen")
                seen = try db.prepare("INSERT OR IGNORE INTO temp.sluice_seen (k) VALUES (?)")
            }
        }
        countsChanges = lookup != nil
        if let keyName, tracking.skipUnchanged, let sh = tracking.sourceHashColumn, schema.index(of: sh) != nil,
            let k = schema.index(of: keyName), schema.fields[k].type == .int64
        {
            let read = try db.prepare(
                "SELECT \(q(keyName)), \(q(sh)) FROM \(q(table)) WHERE \(q(sh)) IS NOT NULL AND typeof(\(q(keyName))) = 'integer'"
            )
            var keys: [Int64] = []
            var hashes: [Int64] = []
            while sqlite3_step(read.handle) == SQLITE_ROW {
                keys.append(sqlite3_column_int64(read.handle, 0))
                hashes.append(sqlite3_column_int64(read.handle, 1))
            }
            sqlite3_reset(read.handle)
            sources = StoredSourceHashes(keys: keys, hashes: hashes)
        }
        nested = Nested(
            lookup: lookup, deleteChildren: deletes, insertChild: inserts, seen: seen,
            keyColumn: keyName.flatMap { schema.index(of: $0) } ?? -1,
            hashColumn: tracking.hashColumn.flatMap { schema.index(of: $0) },
            sourceHashColumn: refresh != nil ? sourceName.flatMap { schema.index(of: $0) } : nil,
            refreshSource: refresh)
    }

    /// Writes a batch record by record: looks the key up, skips an unchanged record (same hash), upserts the
    /// parent row, replaces its child rows. Any constraint failure rolls the batch back as data to bisect,
    /// so a bad record is rejected whole, with its children.
    func writeNested(_ batch: RecordBatch, _ nested: Nested, _ db: SQLiteConnection) throws -> SinkWriteOutcome {
        guard let single = insert, let begin, let commit else {
            throw SluiceError.sink(.fatal, "the SQLite sink is not open")
        }
        let t0 = MonotonicClock.now()
        try run(begin)
        do { try recordSkippedKeys(db) } catch {
            _ = try? db.exec("ROLLBACK")
            throw error
        }
        let views = batch.columns.map(\.view)
        let types = schema.fields.map(\.type)
        let childViews = batch.children.map { $0.columns.map(\.view) }
        let childTypes = schema.children.map { $0.schema.fields.map(\.type) }
        var local = ChangeCounts()
        var childRows = 0
        let keyView = nested.keyColumn >= 0 ? [views[nested.keyColumn]] : []
        let keyType = nested.keyColumn >= 0 ? [types[nested.keyColumn]] : []
        let skip = options.changes.skipUnchanged
        func fail(_ rc: Int32, _ stmt: SQLiteStatement) -> SluiceError {
            let e = db.lastError(rc, sql: stmt.sql)
            if e.isConstraint { return SluiceError.sink(.bisect, e.message) }
            return SluiceError.sink(e.isTransient ? .retry : .fatal, e.description)
        }
        func step(_ stmt: SQLiteStatement) -> Int32 {
            let rc = sqlite3_step(stmt.handle)
            sqlite3_reset(stmt.handle)
            return rc
        }
        let failure: SluiceError? = withExtendedLifetime(batch) {
            keyView.withUnsafeBufferPointer { kv in
                keyType.withUnsafeBufferPointer { kt in
                    views.withUnsafeBufferPointer { views in
                        types.withUnsafeBufferPointer { types in
                            for row in 0..<batch.count {
                                var exists = false
                                if let lookup = nested.lookup {
                                    bind(lookup.handle, 1, row, kv, kt)
                                    let rc = sqlite3_step(lookup.handle)
                                    if rc == SQLITE_ROW {
                                        exists = true
                                        if skip, let h = nested.hashColumn, !views[h].isNull(row) {
                                            let (p, n) = views[h].bytes(row)
                                            let m = Int(sqlite3_column_bytes(lookup.handle, 0))
                                            if m == n, let stored = sqlite3_column_blob(lookup.handle, 0),
                                                memcmp(stored, p, n) == 0
                                            {
                                                let refresh = nested.sourceHashColumn.flatMap { sc in
                                                    views[sc].isNull(row)
                                                        || sqlite3_column_type(lookup.handle, 1) == SQLITE_INTEGER
                                                            && sqlite3_column_int64(lookup.handle, 1)
                                                                == views[sc].int64(row)
                                                        ? nil : sc
                                                }
                                                sqlite3_reset(lookup.handle)
                                                local.unchanged += 1
                                                if let sc = refresh, let update = nested.refreshSource {
                                                    sqlite3_bind_int64(update.handle, 1, views[sc].int64(row))
                                                    bind(update.handle, 2, row, kv, kt)
                                                    let rc = step(update)
                                                    if rc != SQLITE_DONE { return fail(rc, update) }
                                                }
                                                if let seen = nested.seen {
                                                    bind(seen.handle, 1, row, kv, kt)
                                                    let rc = step(seen)
                                                    if rc != SQLITE_DONE { return fail(rc, seen) }
                                                }
                                                continue
                                            }
                                        }
                                    } else if rc != SQLITE_DONE {
                                        sqlite3_reset(lookup.handle)
                                        return fail(rc, lookup)
                                    }
                                    sqlite3_reset(lookup.handle)
                                }
                                bind(single.handle, 1, row, views, types)
                                var rc = step(single)
                                if rc != SQLITE_DONE { return fail(rc, single) }
                                if exists {
                                    for d in nested.deleteChildren {
                                        bind(d.handle, 1, row, kv, kt)
                                        rc = step(d)
                                        if rc != SQLITE_DONE { return fail(rc, d) }
                                    }
                                }
                                for (c, child) in batch.children.enumerated() {
                                    let ins = nested.insertChild[c]
                                    let range = child.rows(ofParents: row..<(row + 1))
                                    childRows += range.count
                                    let failed: SluiceError? = childViews[c].withUnsafeBufferPointer { cv in
                                        childTypes[c].withUnsafeBufferPointer { ct in
                                            for r in range {
                                                bind(ins.handle, 1, r, cv, ct)
                                                let rc = step(ins)
                                                if rc != SQLITE_DONE { return fail(rc, ins) }
                                            }
                                            return nil
                                        }
                                    }
                                    if let failed { return failed }
                                }
                                if let seen = nested.seen {
                                    bind(seen.handle, 1, row, kv, kt)
                                    rc = step(seen)
                                    if rc != SQLITE_DONE { return fail(rc, seen) }
                                }
                                if exists { local.updated += 1 } else { local.inserted += 1 }
                            }
                            return nil
                        }
                    }
                }
            }
        }
        let t1 = MonotonicClock.now()
        try finishTransaction(failure, db, commit)
        let t2 = MonotonicClock.now()
        counts.add(local)
        timingBox.withLock { timings in
            timings.write.busy += t1 - t0
            timings.write.records += Int64(batch.count)
            timings.commit.busy += t2 - t1
            timings.commit.records += Int64(batch.count)
            timings.commit.batches += 1
        }
        return SinkWriteOutcome(written: batch.count, childRows: childRows)
    }

    /// Rolls the batch's transaction back and throws `failure`, or commits it (rolling back if that fails).
    func finishTransaction(_ failure: SluiceError?, _ db: SQLiteConnection, _ commit: SQLiteStatement) throws {
        if let failure {
            _ = try? db.exec("ROLLBACK")
            throw failure
        }
        do {
            try run(commit)
        } catch let e as SluiceError {
            _ = try? db.exec("ROLLBACK")
            throw e
        }
    }
}
