import CSQLite
import SluiceCore
import SluiceInterfaces
import SluiceReport
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

    var connection: SQLiteConnection?
    var insert: SQLiteStatement?
    var insertMany: SQLiteStatement?
    var rowsPerStatement: Int
    var begin: SQLiteStatement?
    var commit: SQLiteStatement?
    var schema = Schema([])
    var writeTable: String
    var columnIndex: [Int] = []
    var scratch: UnsafeMutablePointer<UInt8>
    var nested: Nested?
    var counts = ChangeCounts()
    var countsChanges = false
    var sources: StoredSourceHashes?
    /// Keys of records the decoders skipped as unchanged, not yet in the seen table, and how many were skipped.
    let skipped = Locked<(keys: [Int64], count: Int64)>(([], 0))
    /// Per-phase timings, written by the writer thread once per batch and read by the run's monitor.
    let timingBox = Locked(SinkTimings())
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

    var key: [String] {
        if case .upsert(let k) = mode { return k }
        return []
    }

    /// `UPDATE t SET c = ?N … WHERE k = ?M [AND (filter)]`, with `?N` the column's position in the schema, so
    /// rows bind exactly as for inserts.
    func updateSQL(key: [String], set: [String], filter: String?) throws -> String {
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
    final class Nested {
        /// `SELECT hash FROM t WHERE key = ?` (or `SELECT 1 …` without a hash column).
        let lookup: SQLiteStatement?
        let deleteChildren: [SQLiteStatement]
        let insertChild: [SQLiteStatement]
        let seen: SQLiteStatement?
        let keyColumn: Int
        let hashColumn: Int?
        /// With `--skip-unchanged` and a source-hash column: its index, the lookup's second result column.
        let sourceHashColumn: Int?
        /// `UPDATE t SET source_hash = ? WHERE key = ?`: an unchanged record decoded from other bytes (a
        /// reformatted record, or a decoder version that hashes differently) gets the hash of its new bytes, so
        /// the next update run skips it without decoding it.
        let refreshSource: SQLiteStatement?

        init(
            lookup: SQLiteStatement?, deleteChildren: [SQLiteStatement], insertChild: [SQLiteStatement],
            seen: SQLiteStatement?, keyColumn: Int, hashColumn: Int?, sourceHashColumn: Int? = nil,
            refreshSource: SQLiteStatement? = nil
        ) {
            self.lookup = lookup
            self.deleteChildren = deleteChildren
            self.insertChild = insertChild
            self.seen = seen
            self.keyColumn = keyColumn
            self.hashColumn = hashColumn
            self.sourceHashColumn = sourceHashColumn
            self.refreshSource = refreshSource
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
    func recordSkippedKeys(_ db: SQLiteConnection) throws {
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
                writeTable = TableConventions.replaceTable(for: table)
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
                        throw TableConventions.missingColumns(
                            "table \(table)", in: path, missing: missing, existing: existing
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

}
