import CSQLite
import SluiceCore
import SluiceReport
import SluiceRuntime

/// Options of the SQLite sink.
public struct SQLiteSinkOptions: Sendable, Hashable {
    /// `PRAGMA synchronous` during the load. Default: `NORMAL` (a killed process loses nothing committed;
    /// `OFF` is faster but risks the database on power loss).
    public var synchronous: String = "NORMAL"
    /// Page cache size in KiB. Default: 8,192 (8 MiB); appends and ordered upserts touch few pages.
    public var cacheKiB: Int = 8_192
    /// Rows bound per `INSERT` statement (fewer statement executions). Default: 32.
    public var rowsPerStatement: Int = 32

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
    /// Per-phase timings.
    public private(set) var timings = SinkTimings()

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
                throw SinkError(.fatal, "column '\(name)' is not in the input schema (\(schema))")
            }
            return "?\(i + 1)"
        }
        guard !set.isEmpty else { throw SinkError(.fatal, "update needs at least one column to set") }
        var sql = "UPDATE \(q(table)) SET " + (try set.map { "\(q($0)) = \(try param($0))" }.joined(separator: ", "))
        sql += " WHERE " + (try key.map { "\(q($0)) = \(try param($0))" }.joined(separator: " AND "))
        if let filter { sql += " AND (\(filter))" }
        return sql
    }

    /// Opens the database, sets bulk pragmas, creates the table if needed and prepares the insert.
    public func open(schema: Schema) throws {
        self.schema = schema
        guard schema.count <= 64 else { throw SinkError(.fatal, "the SQLite sink takes at most 64 columns") }
        let db: SQLiteConnection
        do {
            db = try SQLiteConnection(path: path)
            try db.exec(
                "PRAGMA synchronous=\(options.synchronous); PRAGMA cache_size=-\(options.cacheKiB); PRAGMA temp_store=MEMORY;"
            )
        } catch let e as SQLiteError { throw SinkError(.fatal, e.description) }
        connection = db
        let q = SQLiteConnection.quote
        for k in key where schema.index(of: k) == nil {
            throw SinkError(.fatal, "key column '\(k)' is not in the schema (\(schema))")
        }
        do {
            if case .replace = mode {
                writeTable = table + "__sluice_replace"
                try db.exec("DROP TABLE IF EXISTS \(q(writeTable))")
                try db.exec(Self.createTableSQL(writeTable, schema: schema, key: []))
            } else {
                let existing = try db.query("SELECT name FROM pragma_table_info(\(sqlString(table)))").compactMap {
                    $0[0]
                }
                var needed = schema.fields.map(\.name)
                if case .update(let k, let set, _) = mode {
                    guard !existing.isEmpty else {
                        throw SinkError(.fatal, "update mode needs an existing table; \(table) is not in \(path)")
                    }
                    needed = k + set
                }
                if existing.isEmpty {
                    try db.exec(Self.createTableSQL(table, schema: schema, key: key))
                } else {
                    let missing = needed.filter { !existing.contains($0) }
                    if !missing.isEmpty {
                        throw SinkError(
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
                throw SinkError(
                    .fatal,
                    "upsert needs a PRIMARY KEY or UNIQUE index on (\(key.joined(separator: ", "))) in table \(table): \(e.message)"
                )
            }
            begin = try db.prepare("BEGIN")
            commit = try db.prepare("COMMIT")
        } catch let e as SQLiteError {
            throw SinkError(.fatal, e.description)
        }
    }

    private func sqlString(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }

    private func run(_ stmt: SQLiteStatement) throws {
        let rc = sqlite3_step(stmt.handle)
        sqlite3_reset(stmt.handle)
        if rc != SQLITE_DONE {
            let e = connection!.lastError(rc, sql: stmt.sql)
            throw SinkError(e.isTransient ? .transient : .fatal, e.description)
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
            throw SinkError(.fatal, "the SQLite sink is not open")
        }
        try run(begin)
        let views = batch.columns.map(\.view)
        let types = schema.fields.map(\.type)
        let n = batch.count
        let width = Int32(schema.count)
        var rejected: [(row: Int, reason: String)] = []
        var bindSample: UInt64 = 0
        var stepSample: UInt64 = 0
        let t0 = MonotonicClock.now()
        let failure: SinkError? = withExtendedLifetime(batch) {
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
                        if !e.isConstraint { return SinkError(e.isTransient ? .transient : .fatal, e.description) }
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
                                return SinkError(e1.isTransient ? .transient : .fatal, e1.description)
                            }
                            rejected.append((row + k, e1.message))
                        }
                        row += group
                    }
                    return nil
                }
            }
        }
        if let failure {
            _ = try? db.exec("ROLLBACK")
            throw failure
        }
        let t1 = MonotonicClock.now()
        do {
            try run(commit)
        } catch let e as SinkError {
            _ = try? db.exec("ROLLBACK")
            throw e
        }
        let t2 = MonotonicClock.now()
        let loop = t1 - t0
        let encodeShare = bindSample + stepSample > 0 ? Double(bindSample) / Double(bindSample + stepSample) : 0
        let encode = UInt64(Double(loop) * encodeShare)
        timings.encode.busy += encode
        timings.encode.records += Int64(n)
        timings.write.busy += loop - encode
        timings.write.records += Int64(n)
        timings.commit.busy += t2 - t1
        timings.commit.records += Int64(n)
        timings.commit.batches += 1
        return SinkWriteOutcome(written: n - rejected.count, rejected: rejected)
    }

    /// Ends the run; for `replace`, swaps the staging table in if the run was complete, else drops it.
    public func finish(complete: Bool) throws {
        guard let db = connection else { return }
        defer {
            insert = nil
            insertMany = nil
            begin = nil
            commit = nil
            connection = nil
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
                throw SinkError(.fatal, e.description)
            }
        }
    }
}
