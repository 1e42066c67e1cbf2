import Foundation
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceInterfaces
import SluiceReport
import Synchronization

// Nested records and content hashes: classify a batch against the stored keys and hashes, copy new records,
// merge changed ones and their child rows, skip unchanged ones, note keys for --purge-missing.
extension PostgresSink {
    /// Nested records and content hashes, one transaction per batch: looks up the batch's keys and stored
    /// hashes, copies new records straight in, merges changed ones, replaces their child rows, skips unchanged
    /// ones (`--skip-unchanged`) and notes every key for `--purge-missing`. A value the target cannot hold makes
    /// the batch a data error, which the runtime bisects, so a bad record is rejected whole with its children.
    func writeNested(
        _ batch: RecordBatch, _ n: Nested, _ s: PostgresSession, _ lane: Lane, _ sequence: Int?, _ t: inout SinkTimings
    ) async throws -> SinkWriteOutcome {
        if let sequence { await keyOrder?.waitForEarlierBatchesSharingKeys(sequence) }
        if let stored = n.stored {
            let a = MonotonicClock.now()
            let c = stored.classify(
                batch, key: n.keyIndex, hash: options.changes.skipUnchanged ? n.hashIndex : nil)
            t.encode.busy += MonotonicClock.now() - a
            var local = ChangeCounts()
            local.unchanged = Int64(c.unchanged.count)
            local.inserted = Int64(c.new.count)
            local.updated = Int64(c.changed.count)
            if c.new.isEmpty && c.changed.isEmpty {
                try await refreshSourceHashes(batch, rows: c.unchanged, n, s, lane, &t)
                addCounts(local)
                return SinkWriteOutcome(written: batch.count)
            }
            do {
                let kids = try await writeRows(batch, n, s, lane, new: c.new, changed: c.changed, &t)
                stored.remember(batch, rows: c.changed, key: n.keyIndex, hash: n.hashIndex)
                try await refreshSourceHashes(batch, rows: c.unchanged, n, s, lane, &t)
                addCounts(local)
                return SinkWriteOutcome(written: batch.count, childRows: kids)
            } catch let f as SluiceError where f.sqlState == "23505" {
                // A key new to the stored set was inserted earlier in this run: classify this batch against the
                // table itself.
                try await s.execute("ROLLBACK")
            }
        }
        return try await writeNestedLookingUp(batch, n, s, lane, &t)
    }

    /// Gives unchanged records of `rows` whose stored source hash differs the hash of the bytes they were
    /// just decoded from (one statement; rows already equal are not rewritten). A record that was only
    /// reformatted, or whose stored hash a decoder of another version wrote, is then skipped by the next update
    /// run without being decoded. Outside the batch's transaction: a kill before it costs one more decode.
    func refreshSourceHashes(
        _ batch: RecordBatch, rows: [Int], _ n: Nested, _ s: PostgresSession, _ lane: Lane, _ t: inout SinkTimings
    ) async throws {
        guard let sql = n.refreshSource, let sc = n.sourceColumn, let kc = n.keyColumn, n.sourceIndex >= 0 else {
            return
        }
        let hashes = batch.columns[n.sourceIndex]
        let rows = rows.filter { !hashes.isNull($0) }
        guard !rows.isEmpty else { return }
        let a = MonotonicClock.now()
        var binds = PostgresBindings()
        binds.append(try arrayParameter(batch, column: n.keyIndex, as: kc, rows: rows, lane.encoder))
        binds.append(try arrayParameter(batch, column: n.sourceIndex, as: sc, rows: rows, lane.encoder))
        try await s.execute(sql, binds)
        t.write.busy += MonotonicClock.now() - a
    }

    func addCounts(_ c: ChangeCounts) {
        timingLock.withLock {
            counts.add(c)
        }
    }

    /// Writes new rows (copied in) and changed rows (merged, their old children deleted), then the children of
    /// both, and with a seen table the batch's keys, in one transaction. Returns the child rows written.
    func writeRows(
        _ batch: RecordBatch, _ n: Nested, _ s: PostgresSession, _ lane: Lane, new newRows: [Int],
        changed changedRows: [Int],
        _ t: inout SinkTimings
    ) async throws -> Int {
        if !changedRows.isEmpty && !deferredKeys.isEmpty {
            // Deleting a record's old child rows needs the key the load would otherwise build at the end.
            try await buildDeferredKeys(on: s)
        }
        if newRows.count + changedRows.count <= Self.fewRows && directCopy && n.seenTable == nil
            && n.keyColumn != nil && isUpsert
        {
            return try await writeFewRows(batch, n, s, lane, new: newRows, changed: changedRows, &t)
        }
        let b = MonotonicClock.now()
        try await s.execute("BEGIN")
        var childRows = 0
        let all = newRows.count == batch.count
        if !newRows.isEmpty && directCopy {
            let part = all ? batch : batch.select(rows: newRows)
            let (data, rejected) = encodeCopy(part, lane.encoder, ordinal: false)
            if let r = rejected.first { throw SluiceError.sink(.bisect, r.reason) }
            try await s.copyIn(statement: statements.copy, data: data)
        }
        let merged = directCopy ? changedRows : (newRows + changedRows).sorted()
        if !merged.isEmpty {
            if !lane.stageReady {
                try await s.execute("SET temp_buffers = \(SQL.literal(options.tempBuffers))")
                try await s.execute(statements.createStage)
                lane.stageReady = true
            }
            let (data, rejected) = encodeCopy(batch.select(rows: merged), lane.encoder, ordinal: true)
            if let r = rejected.first { throw SluiceError.sink(.bisect, r.reason) }
            try await s.copyIn(statement: statements.copyStage, data: data)
            try await s.execute(statements.merge)
        }
        if !changedRows.isEmpty, let kc = n.keyColumn {
            var binds = PostgresBindings()
            binds.append(try arrayParameter(batch, column: n.keyIndex, as: kc, rows: changedRows, lane.encoder))
            for child in n.children { try await s.execute(child.delete, binds) }
        }
        let written = all ? batch : batch.select(rows: (newRows + changedRows).sorted())
        for (c, child) in n.children.enumerated() where written.children[c].count > 0 {
            let (data, rejected) = encodeCopy(
                written.children[c], lane.encoder, ordinal: false, columns: child.columns, inputIndex: child.inputIndex)
            if let r = rejected.first { throw SluiceError.sink(.bisect, "\(child.table): \(r.reason)") }
            try await s.copyIn(statement: child.copy, data: data)
            childRows += written.children[c].count
        }
        if n.seenTable != nil, let kc = n.keyColumn {
            let keyOnly = RecordBatch(
                schema: Schema([Field("k", kc.input)]), columns: [batch.columns[n.keyIndex]], count: batch.count)
            let (data, _) = encodeCopy(keyOnly, lane.encoder, ordinal: false, columns: [kc], inputIndex: [0])
            try await s.copyIn(statement: n.copySeen, data: data)
        }
        let c = MonotonicClock.now()
        t.write.busy += c - b
        try await s.execute("COMMIT")
        t.commit.busy += MonotonicClock.now() - c
        return childRows
    }

    /// Up to this many records of a batch are written with array parameters (a handful of statements for
    /// all tables) rather than a `COPY` per table: an update run writes a few records per batch.
    static let fewRows = 512

    /// `$i::type[]` placeholders for `columns`, numbered from `first`.
    static func arrays(_ columns: [PostgresColumn], from first: Int) -> String {
        columns.enumerated().map { "$\(first + $0.offset)::\($0.element.sqlType)[]" }.joined(separator: ", ")
    }

    /// Writes a few records in one transaction of two statements, with array parameters: the parents merged
    /// (only rows whose values differ are rewritten), then the child rows of every table at once. A new
    /// record's children are inserted. A changed record's children are merged by (link, position): a row
    /// whose values are the same is left alone, and rows past its new count are deleted. Most changes touch
    /// one part of a record, so most child rows are not rewritten.
    func writeFewRows(
        _ batch: RecordBatch, _ n: Nested, _ s: PostgresSession, _ lane: Lane, new newRows: [Int],
        changed changedRows: [Int],
        _ t: inout SinkTimings
    ) async throws -> Int {
        let a = MonotonicClock.now()
        let rows = (newRows + changedRows).sorted()
        let written = batch.select(rows: rows)
        let e = lane.encoder
        // Parents.
        var parentBinds = PostgresBindings(capacity: columns.count)
        for (i, c) in columns.enumerated() {
            if let reason = firstUnrepresentable(written, column: inputIndex[i], as: c) {
                throw SluiceError.sink(.bisect, reason)
            }
            parentBinds.append(try arrayParameter(written, column: inputIndex[i], as: c, rows: nil, e))
        }
        let t0 = SQL.table(table)
        let names = columns.map { SQL.ident($0.name) }.joined(separator: ", ")
        let conflict = statements.conflict
        var parentSQL =
            "INSERT INTO \(t0) (\(names)) SELECT * FROM unnest(\(Self.arrays(columns, from: 1)))\(conflict)"
        // Tables without a unique (link, position) key: the changed records' old children are deleted first.
        let replaced = n.children.enumerated().filter { !$0.element.mergeable }
        if !changedRows.isEmpty && !replaced.isEmpty, let kc = n.keyColumn {
            parentBinds.append(try arrayParameter(batch, column: n.keyIndex, as: kc, rows: changedRows, e))
            let k = "$\(columns.count + 1)"
            let deletes = replaced.map { i, c in
                "d\(i) AS (DELETE FROM \(SQL.table(c.table)) WHERE \(SQL.ident(c.columns[0].name)) = ANY(\(k)))"
            }
            parentSQL = "WITH " + deletes.joined(separator: ", ") + " " + parentSQL
        }
        // Children, every table in one statement.
        var childBinds = PostgresBindings()
        var parts: [String] = []
        var next = 1
        var childRows = 0
        let groups: [(rows: [Int], changed: Bool)] = [(newRows, false), (changedRows, true)]
        var changedKeys: Int?
        for (rowsOfGroup, changed) in groups where !rowsOfGroup.isEmpty {
            let part = batch.select(rows: rowsOfGroup)
            if changed, let kc = n.keyColumn {
                childBinds.append(try arrayParameter(batch, column: n.keyIndex, as: kc, rows: rowsOfGroup, e))
                changedKeys = next
                next += 1
            }
            for (c, child) in n.children.enumerated() {
                let kids = part.children[c]
                let tc = SQL.table(child.table)
                if kids.count > 0 {
                    for (i, col) in child.columns.enumerated() {
                        if let reason = firstUnrepresentable(kids, column: child.inputIndex[i], as: col) {
                            throw SluiceError.sink(.bisect, "\(child.table): \(reason)")
                        }
                        childBinds.append(try arrayParameter(kids, column: child.inputIndex[i], as: col, rows: nil, e))
                    }
                    let cols = child.columns.map { SQL.ident($0.name) }.joined(separator: ", ")
                    var sql =
                        "INSERT INTO \(tc) (\(cols)) SELECT * FROM unnest(\(Self.arrays(child.columns, from: next)))"
                    if changed && child.mergeable { sql += Self.childConflict(child, table: tc) }
                    parts.append("\(changed ? "u" : "i")\(c) AS (\(sql))")
                    next += child.columns.count
                    childRows += kids.count
                }
                if changed && child.mergeable, let k = changedKeys {
                    // Rows past each changed record's new count of children in this table.
                    var counts: [Int64] = []
                    counts.reserveCapacity(part.count)
                    for r in 0..<part.count { counts.append(Int64(kids.rows(ofParents: r..<(r + 1)).count)) }
                    childBinds.append(counts)
                    let link = SQL.ident(child.columns[0].name)
                    parts.append(
                        "d\(c) AS (DELETE FROM \(tc) sluice_c USING unnest($\(k)::\(n.keyColumn!.sqlType)[], $\(next)::int8[]) AS x(k, n) "
                            + "WHERE sluice_c.\(link) = x.k AND sluice_c.\(SQL.ident("position")) > x.n)")
                    next += 1
                }
            }
        }
        let b = MonotonicClock.now()
        t.encode.busy += b - a
        try await s.execute("BEGIN")
        try await s.execute(parentSQL, parentBinds)
        if !parts.isEmpty { try await s.execute("WITH " + parts.joined(separator: ", ") + " SELECT 1", childBinds) }
        let c = MonotonicClock.now()
        t.write.busy += c - b
        try await s.execute("COMMIT")
        t.commit.busy += MonotonicClock.now() - c
        return childRows
    }

    /// `ON CONFLICT (link, position) DO UPDATE …` for a changed record's child rows: a row is rewritten only
    /// when one of its values differs.
    static func childConflict(_ child: ChildTarget, table: String) -> String {
        SQL.onConflict(
            key: child.columns.prefix(2).map(\.name), others: Array(child.columns.dropFirst(2)), table: table)
    }

    /// Why a value of `column` cannot be written as `col` (an integer out of range), for the first such row.
    func firstUnrepresentable(_ batch: RecordBatch, column: Int, as col: PostgresColumn) -> String? {
        unrepresentable(batch, column: column, as: col, PostgresBinaryEncoder(), first: true).first?.reason
    }

    /// The rows of `column` whose values cannot be written as `col` (an integer out of range for `integer`, a
    /// malformed UUID), with the reason; only the first with `first`.
    func unrepresentable(
        _ batch: RecordBatch, column: Int, as col: PostgresColumn, _ e: PostgresBinaryEncoder, first: Bool = false
    ) -> [(row: Int, reason: String)] {
        guard col.encoding == .int4 || col.encoding == .int2 || col.encoding == .uuid else { return [] }
        let v = batch.columns[column].view
        var found: [(row: Int, reason: String)] = []
        withExtendedLifetime(batch) {
            for row in 0..<batch.count {
                e.reset()
                if let reason = e.putValue(v, row, col) {
                    found.append((row, reason))
                    if first { return }
                }
            }
        }
        return found
    }

    /// ``writeNested`` classifying the batch with a lookup of its keys in the table.
    func writeNestedLookingUp(
        _ batch: RecordBatch, _ n: Nested, _ s: PostgresSession, _ lane: Lane, _ t: inout SinkTimings
    ) async throws -> SinkWriteOutcome {
        let a = MonotonicClock.now()
        var local = ChangeCounts()
        var newRows: [Int] = []
        var changedRows: [Int] = []
        var unchangedRows: [Int] = []
        if let lookup = n.lookup, let kc = n.keyColumn {
            var binds = PostgresBindings()
            binds.append(try arrayParameter(batch, column: n.keyIndex, as: kc, rows: nil, lane.encoder))
            let found = try await s.rows(lookup, binds)
            let keys = batch.columns[n.keyIndex]
            let skip = options.changes.skipUnchanged
            let hashes = n.hashIndex.map { batch.columns[$0] }
            func same(_ stored: ByteBuffer?, _ row: Int) -> Bool {
                guard skip, let stored, let hashes, !hashes.isNull(row) else { return false }
                let mine = hashes.bytes(at: row)
                return stored.readableBytes == mine.count
                    && stored.withUnsafeReadableBytes { $0.elementsEqual(mine) }
            }
            var keep = [Bool](repeating: false, count: batch.count)
            var existing = [Bool](repeating: false, count: batch.count)
            var unchanged = [Bool](repeating: false, count: batch.count)
            /// Marks, for each key's last occurrence in the batch, whether it is stored and unchanged.
            func mark<K: Hashable>(_ decode: (PostgresRow) throws -> (K, ByteBuffer?), _ key: (Int) -> K) throws {
                var stored = [K: ByteBuffer?](minimumCapacity: found.count)
                for r in found {
                    let (k, h) = try decode(r)
                    stored[k] = h
                }
                var seen = Set<K>(minimumCapacity: batch.count)
                for row in stride(from: batch.count - 1, through: 0, by: -1) {
                    let k = key(row)
                    guard seen.insert(k).inserted else { continue }
                    keep[row] = true
                    if let h = stored[k] {
                        existing[row] = true
                        unchanged[row] = same(h, row)
                    }
                }
            }
            if kc.input == .int64 {
                try mark({ try $0.decode((Int64, ByteBuffer?).self) }, { keys.int64(at: $0) })
            } else {
                try mark({ try $0.decode((String, ByteBuffer?).self) }, { keys.string(at: $0) })
            }
            for row in 0..<batch.count where keep[row] {
                if unchanged[row] {
                    local.unchanged += 1
                    unchangedRows.append(row)
                } else if existing[row] {
                    changedRows.append(row)
                } else {
                    newRows.append(row)
                }
            }
            local.inserted = Int64(newRows.count)
            local.updated = Int64(changedRows.count)
        } else {
            newRows = Array(0..<batch.count)
        }
        t.encode.busy += MonotonicClock.now() - a
        n.stored?.markSeen(batch, key: n.keyIndex)
        let childRows = try await writeRows(batch, n, s, lane, new: newRows, changed: changedRows, &t)
        try await refreshSourceHashes(batch, rows: unchangedRows, n, s, lane, &t)
        if n.lookup != nil {
            n.stored?.remember(batch, rows: changedRows, key: n.keyIndex, hash: n.hashIndex)
            addCounts(local)
        }
        return SinkWriteOutcome(written: batch.count, childRows: childRows)
    }
}
