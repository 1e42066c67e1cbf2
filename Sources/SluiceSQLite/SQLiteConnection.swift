import CSQLite
import SluiceCore

/// An error from SQLite, with its result code.
public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    /// The extended result code.
    public var code: Int32
    /// SQLite's message.
    public var message: String
    /// The statement, if any.
    public var sql: String?
    /// The database file, named in the description of errors about the file itself (disk full, I/O, cannot
    /// open, read-only).
    public var path: String?

    /// Creates an error.
    public init(code: Int32, message: String, sql: String? = nil, path: String? = nil) {
        self.code = code
        self.message = message
        self.sql = sql
        self.path = path
    }

    /// Whether the error is about the database file rather than a statement or a row.
    public var isAboutTheFile: Bool {
        [SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_NOTADB].contains(
            code & 0xFF)
    }

    /// Whether the code is a constraint violation (the row is at fault).
    public var isConstraint: Bool { code & 0xFF == SQLITE_CONSTRAINT || code & 0xFF == SQLITE_MISMATCH }
    /// Whether retrying may help.
    public var isTransient: Bool { code & 0xFF == SQLITE_BUSY || code & 0xFF == SQLITE_LOCKED }

    /// `message (code N) in: SQL`, after `path: ` for an error about the file (`/data/x.db: database or disk is
    /// full (SQLite code 13) in: COMMIT`).
    public var description: String {
        (isAboutTheFile ? path.map { "\($0): " } ?? "" : "") + "\(message) (SQLite code \(code))"
            + (sql.map { " in: \($0)" } ?? "")
    }
}

/// A thin wrapper over a `sqlite3*` handle. Not thread-safe: use it from one thread at a time.
public final class SQLiteConnection: @unchecked Sendable {
    /// The raw handle.
    public let handle: OpaquePointer
    /// The database path.
    public let path: String

    private static let configured: Bool = {
        _ = sluice_sqlite_configure()
        return true
    }()

    /// Opens (creating if needed) the database at `path`.
    public init(path: String) throws {
        _ = Self.configured
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: rc, message: "cannot open \(path): \(msg)")
        }
        handle = db
        self.path = path
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, 5_000)
    }

    deinit { sqlite3_close_v2(handle) }

    /// The last error on this connection.
    public func lastError(_ rc: Int32, sql: String? = nil) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle)), sql: sql, path: path)
    }

    /// Executes one or more statements without results.
    public func exec(_ sql: String) throws {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        if rc != SQLITE_OK { throw lastError(rc, sql: sql) }
    }

    /// Prepares a statement for reuse.
    public func prepare(_ sql: String) throws -> SQLiteStatement {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw lastError(rc, sql: sql) }
        return SQLiteStatement(stmt, connection: self, sql: sql)
    }

    /// Runs a query and returns every row as text values (nil for NULL). For small queries only.
    public func query(_ sql: String) throws -> [[String?]] {
        let stmt = try prepare(sql)
        var rows: [[String?]] = []
        while true {
            let rc = sqlite3_step(stmt.handle)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw lastError(rc, sql: sql) }
            let n = sqlite3_column_count(stmt.handle)
            rows.append(
                (0..<n).map { i in
                    sqlite3_column_type(stmt.handle, i) == SQLITE_NULL
                        ? nil : String(cString: sqlite3_column_text(stmt.handle, i))
                })
        }
        return rows
    }

    /// Quotes an identifier for SQL.
    public static func quote(_ identifier: String) -> String {
        "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// A prepared statement, finalized when released.
public final class SQLiteStatement {
    /// The raw handle.
    public let handle: OpaquePointer
    /// The SQL text.
    public let sql: String
    private let connection: SQLiteConnection

    init(_ handle: OpaquePointer, connection: SQLiteConnection, sql: String) {
        self.handle = handle
        self.connection = connection
        self.sql = sql
    }

    deinit { sqlite3_finalize(handle) }
}

extension String {
    func replacingOccurrences(of a: String, with b: String) -> String {
        split(separator: Character(a), omittingEmptySubsequences: false).joined(separator: b)
    }
}
