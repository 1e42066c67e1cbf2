import CSQLite
import SluiceCore
import SluiceReport
import SluiceRuntime
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Options of the SQLite sink.
public struct SQLiteSinkOptions: Sendable, Hashable {
    /// `PRAGMA synchronous` during the load. Default: `NORMAL` (a killed process loses nothing committed;
    /// `OFF` is faster but risks the database on power loss).
    public var synchronous: String = "NORMAL"
    /// Page cache size in KiB. Default: 8,192 (8 MiB); appends and ordered upserts touch few pages.
    public var cacheKiB: Int = 8_192
    /// Rows bound per `INSERT` statement (fewer statement executions). Default: 32.
    public var rowsPerStatement: Int = 32
    /// Content-hash use: skip unchanged records, purge missing ones.
    public var changes = ChangeTracking()

    /// Default options.
    public init() {}
}

/// Writes batches into a SQLite table through one reused prepared statement, one transaction per batch,
/// binding values straight from the column buffers (text and blobs without copying).
///
/// - `append`: `INSERT`.
/// - `upsert(key)`: `INSERT … ON CONFLICT(key) DO UPDATE SET …` (the table needs a primary key or unique
///   index on the key; a table Sluice creates has it).
/// - `replace`: rows go to a staging table that replaces the target only after a complete run.
/// - `update(key, set, filter)`: `UPDATE … SET … WHERE key = … [AND filter]` per row, in the batch's
///   transaction; the table must exist.
///
/// Created tables map `int64`/`bool` → `INTEGER`, `float64` → `REAL`, `string`/`json` → `TEXT`,
/// `timestamp` → `TEXT` in RFC 3339 with microseconds (`2024-05-01T12:00:00.000000Z`, sortable), `bytes` →
/// `BLOB`. A row that violates a constraint is rejected on its own (SQLite undoes only that statement)
/// while the rest of the batch commits.
public final class SQLiteSink: BatchSink, @unchecked Sendable {
    /// The database file.
    public let path: String
    /// The table.
    public let table: String
    /// The write mode.
    public let mode: WriteMode
    /// Options.
    public let options: SQLiteSinkOptions

    private var connection: SQLiteConnection?
    private var insert: SQLiteStatement?
    private var insertMany: SQLiteStatement?
    private var rowsPerStatement: Int
    private var begin: SQLiteStatement?
    private var commit: SQLiteStatement?
    private var schema = Schema([])
    private var writeTable: String
    private var columnIndex: [Int] = []
    private var scratch: UnsafeMutablePointer<UInt8>
    private var nested: Nested?
    private var counts = ChangeCounts()
    private var countsChanges = false
    private var sources: StoredSourceHashes?
    /// Keys of records the decoders skipped as unchanged, not yet in the seen table, and how many were skipped.
    private let skipped = Mutex<(keys: [Int64], count: Int64)>(([], 0))
    /// Per-phase timings, written by the writer thread once per batch and read by the run's monitor.
    private let timingBox = Mutex(SinkTimings())
    /// Per-phase timings so far.
    public var timings: SinkTimings { timingBox.withLock { $0 } }

    /// Creates a sink for `table` in the database at `path`.
    public init(
        path: String, table: String, mode: WriteMode = .append, options: SQLiteSinkOptions = SQLiteSinkOptions()
    ) {
        self.path = path
        self.table = table
        self.mode = mode
        self.options = options
        writeTable = table
        rowsPerStatement = max(1, options.rowsPerStatement)
        scratch = .allocate(capacity: 32_768 * 32)
    }

    deinit { scratch.deallocate() }

    /// `sqlite:PATH table T (mode)`.
    public var target: String { "sqlite:\(path) table \(table) (\(mode))" }

    /// The SQL type for a field type.
    public static func sqlType(_ t: FieldType) -> String {
        switch t {
        case .int64, .bool: return "INTEGER"
        case .float64: return "REAL"
        case .string, .json, .timestamp: return "TEXT"
        case .bytes: return "BLOB"
        }
    }

    /// `CREATE TABLE` for `schema`, with the key as primary key.
    public static func createTableSQL(_ table: String, schema: Schema, key: [String]) -> String {
        let q = SQLiteConnection.quote
        let singleIntKey = key.count == 1 && schema.fields.first { $0.name == key[0] }?.type == .int64
        var cols = schema.fields.map { f -> String in
            var c = "\(q(f.name)) \(sqlType(f.type))"
            if singleIntKey && f.name == key[0] { c += " PRIMARY KEY" } else if !f.nullable { c += " NOT NULL" }
            return c
        }
        if !key.isEmpty && !singleIntKey { cols.append("PRIMARY KEY (\(key.map(q).joined(separator: ", ")))") }
        return "CREATE TABLE \(q(table)) (\(cols.joined(separator: ", ")))"
    }

    private var key: [String] {
        if case .upsert(let k) = mode { return k }
        return []
    }

    /// `UPDATE t SET c = ?N … WHERE k = ?M [AND (filter)]`, with `?N` the column's position in the schema, so
    /// rows bind exactly as for inserts.
    private func updateSQL(key: [String], set: [String], filter: String?) throws -> String {
        let q = SQLiteConnection.quote
        func param(_ name: String) throws -> String {
            guard let i = schema.index(of: name) else {
                throw SluiceError.sink(.fatal, "column '\(name)' is not in the input schema (\(schema))")
            }
            return "?\(i + 1)"
        }
        guard !set.isEmpty else { throw SluiceError.sink(.fatal, "update needs at least one column to set") }
        var sql = "UPDATE \(q(table)) SET " + (try set.map { "\(q($0)) = \(try param($0))" }.joined(separator: ", "))
        sql += " WHERE " + (try key.map { "\(q($0)) = \(try param($0))" }.joined(separator: " AND "))
        if let filter { sql += " AND (\(filter))" }
        return sql
    }

    /// Statements of the record-by-record path (child tables, content hashes).
    private final class Nested {
        /// `SELECT hash FROM t WHERE key = ?` (or `SELECT 1 …` without a hash column).
        let lookup: SQLiteStatement?
        let deleteChildren: [SQLiteStatement]
        let insertChild: [SQLiteStatement]
        let seen: SQLiteStatement?
        let keyColumn: Int
        let hashColumn: Int?

        init(
            lookup: SQLiteStatement?, deleteChildren: [SQLiteStatement], insertChild: [SQLiteStatement],
            seen: SQLiteStatement?, keyColumn: Int, hashColumn: Int?
        ) {
            self.lookup = lookup
            self.deleteChildren = deleteChildren
            self.insertChild = insertChild
            self.seen = seen
            self.keyColumn = keyColumn
            self.hashColumn = hashColumn
        }
    }

    /// Inserted / updated / unchanged / purged counts (upserts of nested or hashed records).
    public var changes: ChangeCounts? {
        guard countsChanges else { return nil }
        var c = counts
        let n = skipped.withLock { $0.count }
        c.unchanged += n
        if n > 0 { c.undecoded = n }
        return c
    }

    /// The stored records' source hashes, read at open with `--skip-unchanged` (an integer key and a
    /// source-hash column in the input).
    public var storedSourceHashes: StoredSourceHashes? { sources }

    /// Counts records the decoders skipped as unchanged; their keys join the seen set (for `--purge-missing`)
    /// with the next transaction.
    public func noteUnchanged(keys: [Int64]) {
        let purging = nested?.seen != nil
        skipped.withLock {
            $0.count += Int64(keys.count)
            if purging { $0.keys += keys }
        }
    }

    /// Adds the skipped records' keys to the seen table (inside the caller's transaction).
    private func recordSkippedKeys(_ db: SQLiteConnection) throws {
        guard let seen = nested?.seen else { return }
        let keys = skipped.withLock { s -> [Int64] in
            defer { s.keys = [] }
            return s.keys
        }
        for k in keys {
            sqlite3_bind_int64(seen.handle, 1, k)
            let rc = sqlite3_step(seen.handle)
            sqlite3_reset(seen.handle)
            if rc != SQLITE_DONE { throw SluiceError.sink(.fatal, db.lastError(rc, sql: seen.sql).description) }
        }
    }

    /// Opens the database, sets bulk pragmas, creates the table if needed and prepares the insert.
    public func open(schema: Schema) throws {
        self.schema = schema
        do { try options.changes.validate(mode: mode, schema: schema) } catch let e as SluiceError { throw e }
        guard schema.count <= 64 else { throw SluiceError.sink(.fatal, "the SQLite sink takes at most 64 columns") }
        let db: SQLiteConnection
        do {
            db = try SQLiteConnection(path: path)
            try db.exec(
                "PRAGMA synchronous=\(options.synchronous); PRAGMA cache_size=-\(options.cacheKiB); PRAGMA temp_store=MEMORY;"
            )
        } catch let e as SQLiteError { throw SluiceError.sink(.fatal, e.description) }
        connection = db
        let q = SQLiteConnection.quote
        for k in key where schema.index(of: k) == nil {
            throw SluiceError.sink(.fatal, "key column '\(k)' is not in the schema (\(schema))")
        }
        do {
            if case .replace = mode {
                writeTable = table + "__sluice_replace"
                try db.exec("DROP TABLE IF EXISTS \(q(writeTable))")
                try db.exec(Self.createTableSQL(writeTable, schema: schema, key: []))
            } else {
                var existing = try db.query("SELECT name FROM pragma_table_info(\(sqlString(table)))").compactMap {
                    $0[0]
                }
                var needed = schema.fields.map(\.name)
                if case .update(let k, let set, _) = mode {
                    guard !existing.isEmpty else {
                        throw SluiceError.sink(
                            .fatal, "update mode needs an existing table; \(table) is not in \(path)")
                    }
                    needed = k + set
                }
                if existing.isEmpty {
                    try db.exec(Self.createTableSQL(table, schema: schema, key: key))
                } else {
                    if let sh = options.changes.sourceHashColumn, schema.index(of: sh) != nil, !existing.contains(sh) {
                        // A table from before source hashes: add the column.
                        try db.exec("ALTER TABLE \(q(table)) ADD COLUMN \(q(sh)) INTEGER")
                        existing.append(sh)
                    }
                    let missing = needed.filter { !existing.contains($0) }
                    if !missing.isEmpty {
                        throw SluiceError.sink(
                            .fatal,
                            "table \(table) in \(path) has no column(s) \(missing.joined(separator: ", ")) (it has \(existing.joined(separator: ", ")))"
                        )
                    }
                }
            }
            func insertSQL(rows: Int) -> String {
                var sql =
                    "INSERT INTO \(q(writeTable)) (\(schema.fields.map { q($0.name) }.joined(separator: ", "))) VALUES "
                let tuple = "(" + Array(repeating: "?", count: schema.count).joined(separator: ", ") + ")"
                sql += Array(repeating: tuple, count: rows).joined(separator: ", ")
                if !key.isEmpty {
                    let others = schema.fields.map(\.name).filter { !key.contains($0) }
                    sql += " ON CONFLICT (\(key.map(q).joined(separator: ", "))) DO "
                    sql +=
                        others.isEmpty
                        ? "NOTHING"
                        : "UPDATE SET " + others.map { "\(q($0)) = excluded.\(q($0))" }.joined(separator: ", ")
                }
                return sql
            }
            rowsPerStatement = min(options.rowsPerStatement, max(1, 32_000 / max(schema.count, 1)))
            let perStatement = rowsPerStatement
            do {
                if case .update(let k, let set, let filter) = mode {
                    // One row per statement: each row updates its own key.
                    rowsPerStatement = 1
                    insert = try db.prepare(try updateSQL(key: k, set: set, filter: filter))
                    insertMany = insert
                } else {
                    insert = try db.prepare(insertSQL(rows: 1))
                    insertMany = try db.prepare(insertSQL(rows: perStatement))
                }
            } catch let e as SQLiteError where !key.isEmpty && e.message.contains("ON CONFLICT") {
                throw SluiceError.sink(
                    .fatal,
                    "upsert needs a PRIMARY KEY or UNIQUE index on (\(key.joined(separator: ", "))) in table \(table): \(e.message)"
                )
            }
            begin = try db.prepare("BEGIN")
            commit = try db.prepare("COMMIT")
            try openNested(db)
        } catch let e as SQLiteError {
            throw SluiceError.sink(.fatal, e.description)
        }
    }

    /// Creates missing child tables and prepares the per-record statements, when records are nested or
    /// carry a hash to compare.
    private func openNested(_ db: SQLiteConnection) throws {
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
                    throw SluiceError.sink(
                        .fatal,
                        "child table \(child.name) in \(path) has no column(s) \(missing.joined(separator: ", "))")
                }
            }
            let cols = child.schema.fields.map { q($0.name) }.joined(separator: ", ")
            let marks = Array(repeating: "?", count: child.schema.count).joined(separator: ", ")
            inserts.append(try db.prepare("INSERT INTO \(q(child.name)) (\(cols)) VALUES (\(marks))"))
            if keyName != nil { deletes.append(try db.prepare("DELETE FROM \(q(child.name)) WHERE \(q(link)) = ?")) }
        }
        var lookup: SQLiteStatement?
        var seen: SQLiteStatement?
        if let keyName {
            let what = tracking.hashColumn.flatMap { schema.index(of: $0) != nil ? q($0) : nil } ?? "1"
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
            hashColumn: tracking.hashColumn.flatMap { schema.index(of: $0) })
    }

    /// Writes a batch record by record: looks the key up, skips an unchanged record (same hash), upserts the
    /// parent row, replaces its child rows. Any constraint failure rolls the batch back as data to bisect,
    /// so a bad record is rejected whole, with its children.
    private func writeNested(_ batch: RecordBatch, _ nested: Nested, _ db: SQLiteConnection) throws -> SinkWriteOutcome
    {
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
                                                sqlite3_reset(lookup.handle)
                                                local.unchanged += 1
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
    private func finishTransaction(_ failure: SluiceError?, _ db: SQLiteConnection, _ commit: SQLiteStatement) throws {
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
                throw SluiceError.sink(
                    .fatal,
                    "table \(table) in \(path) has no column(s) \(missing.joined(separator: ", ")) to resume from")
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

    private func sqlString(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }

    private func run(_ stmt: SQLiteStatement) throws {
        let rc = sqlite3_step(stmt.handle)
        sqlite3_reset(stmt.handle)
        if rc != SQLITE_DONE {
            let e = connection!.lastError(rc, sql: stmt.sql)
            throw SluiceError.sink(e.isTransient ? .retry : .fatal, e.description)
        }
    }

    /// Binds row `row` of `views` to `stmt` starting at parameter `first`.
    @inline(__always)
    private func bind(
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
    public func write(_ batch: RecordBatch) throws -> SinkWriteOutcome {
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

    /// Ends the run; for `replace`, swaps the staging table in if the run was complete, else drops it.
    public func finish(complete: Bool) throws { try finish(complete: complete, clean: false) }

    /// Ends the run: purges records the run did not contain if asked and the run was `clean`; for `replace`,
    /// swaps the staging table in if the run was complete, else drops it.
    public func finish(complete: Bool, clean: Bool) throws {
        guard let db = connection else { return }
        defer {
            nested = nil
            insert = nil
            insertMany = nil
            begin = nil
            commit = nil
            connection = nil
        }
        if options.changes.purgeMissing, let keyName = mode.keyColumns.first {
            if clean {
                let q = SQLiteConnection.quote
                do {
                    try db.exec("BEGIN")
                    try recordSkippedKeys(db)
                    for child in schema.children {
                        try db.exec(
                            "DELETE FROM \(q(child.name)) WHERE \(q(child.linkField.name)) NOT IN (SELECT k FROM temp.sluice_seen)"
                        )
                    }
                    try db.exec("DELETE FROM \(q(table)) WHERE \(q(keyName)) NOT IN (SELECT k FROM temp.sluice_seen)")
                    counts.purged = Int64(sqlite3_changes(db.handle))
                    try db.exec("COMMIT; DROP TABLE temp.sluice_seen")
                } catch {
                    _ = try? db.exec("ROLLBACK")
                    throw SluiceError.sink(.fatal, "purging missing records: \(error)")
                }
            } else {
                counts.purgeSkipped =
                    complete
                    ? "some records were rejected, so absent keys may only be unreadable" : "the run did not complete"
                _ = try? db.exec("DROP TABLE IF EXISTS temp.sluice_seen")
            }
        }
        if case .replace = mode {
            let q = SQLiteConnection.quote
            do {
                if complete {
                    try db.exec(
                        "BEGIN; DROP TABLE IF EXISTS \(q(table)); ALTER TABLE \(q(writeTable)) RENAME TO \(q(table)); COMMIT;"
                    )
                } else {
                    try db.exec("DROP TABLE IF EXISTS \(q(writeTable))")
                }
            } catch let e as SQLiteError {
                _ = try? db.exec("ROLLBACK")
                throw SluiceError.sink(.fatal, e.description)
            }
        }
    }
}
