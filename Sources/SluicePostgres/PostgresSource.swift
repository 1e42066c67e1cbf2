import Foundation
import Logging
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceInterfaces
import Synchronization

/// Reads the rows of a query page by page with keyset pagination:
/// `SELECT … FROM (query) q WHERE q.key > $last ORDER BY q.key LIMIT n`, never `OFFSET` and never a
/// server-side cursor, so each page is an index range scan and no transaction stays open between pages.
///
/// The key column must be unique in the query's result and of an orderable type (integer, text,
/// timestamp). Rows committed behind the current position while the run goes on are not seen; rows ahead
/// of it are. With `checkpoint` set, the key of the last row the sink committed is written to that file
/// after every batch, and a later run with the same file starts after it (resume).
///
/// Types: integers → `int64`, `real`/`double precision` → `float64`, `boolean` → `bool`, `bytea` → `bytes`,
/// `timestamp`/`timestamptz`/`date` → `timestamp`, `json`/`jsonb` → `json`, everything else (text, `numeric`,
/// `uuid`, enums, …) → `string` in PostgreSQL's text form.
///
/// An ``AsyncSource``: its one connection is opened by ``open(context:)`` and closed by ``close()`` (the reader
/// task's end) or once the last page is read.
public final class PostgresSource: AsyncSource, @unchecked Sendable {
    /// The server.
    public let location: PostgresLocation
    /// The query whose rows are read.
    public let query: String
    /// The key column.
    public let key: String
    /// Rows per page; nil means the run's batch size.
    public let pageRows: Int?
    /// Start after this key value (text form); nil means from the start (or from the checkpoint).
    public let startAfter: String?
    /// File recording the last committed key.
    public let checkpoint: String?
    /// Progress counters.
    public let progress = SourceProgress()

    private var session: PostgresSession?
    private var schema = Schema([])
    private var selectList = ""
    private var keyIndex = 0
    private var keyType = ""
    private var last: String?
    private var limit = 10_000
    private var done = false
    private var records: Int64 = 0
    private var kinds: [CellKind] = []
    private let committedKey = Locked<String?>(nil)

    /// Where its connection logs.
    public let logger: Logger

    /// Creates a source whose connection logs to `logger`.
    /// - Throws: ``SluiceError`` (`.config`) for a bad URL.
    public init(
        url: String, query: String, key: String, pageRows: Int? = nil, startAfter: String? = nil,
        checkpoint: String? = nil, logger: Logger = Logger(label: "sluice.postgres")
    ) throws {
        location = try PostgresLocation(url: url)
        self.logger = logger
        self.query = query
        self.key = key
        self.pageRows = pageRows
        self.startAfter = startAfter
        self.checkpoint = checkpoint
    }

    /// `postgres query (keyset on key)`.
    public var name: String { "\(location) query (keyset on \(key))" }

    /// The key of the last row the sink committed, in text form.
    public var lastCommittedKey: String? { committedKey.withLock { $0 } }

    /// How a result cell becomes a value.
    private enum CellKind {
        case int2, int4, int8, float4, float8, bool, bytes, text, timestamp, date, jsonb
    }

    /// Connects and learns the query's columns.
    public func open(context: SourceContext) async throws -> Schema {
        let s: PostgresSession
        do { s = try await PostgresSession.connect(location, logger: logger) } catch let f as SluiceError
            where f.fromPostgres
        {
            throw SluiceError(.io, f.message)
        }
        session = s
        do { return try await settle(on: s, context: context) } catch {
            await close()
            throw error
        }
    }

    /// Learns the query's columns and builds the page query's select list.
    private func settle(on s: PostgresSession, context: SourceContext) async throws -> Schema {
        limit = max(1, pageRows ?? min(context.maxRows, 50_000))
        let columns: [(String, Int64, String)]
        do {
            try await s.execute("CREATE OR REPLACE TEMP VIEW sluice_source_probe AS \(query)")
            let rows = try await s.rows(
                """
                SELECT a.attname::text, a.atttypid::int8, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                WHERE a.attrelid = 'sluice_source_probe'::regclass AND a.attnum > 0 ORDER BY a.attnum
                """)
            columns = try rows.map { try $0.decode((String, Int64, String).self) }
            try await s.execute("DROP VIEW sluice_source_probe")
        } catch let f as SluiceError where f.fromPostgres {
            throw SluiceError(.config, "source query: \(f.description)")
        }
        guard let k = columns.firstIndex(where: { $0.0 == key }) else {
            throw SluiceError(
                .config,
                "source key '\(key)' is not a column of the query (it has \(columns.map(\.0).joined(separator: ", ")))")
        }
        keyIndex = k
        keyType = columns[k].2
        var fields: [Field] = []
        var select: [String] = []
        kinds = []
        for (name, oid, _) in columns {
            let col = "q.\(SQL.ident(name))"
            let (type, kind, expr): (FieldType, CellKind, String)
            switch UInt32(oid) {
            case PostgresOID.int2: (type, kind, expr) = (.int64, .int2, col)
            case PostgresOID.int4: (type, kind, expr) = (.int64, .int4, col)
            case PostgresOID.int8: (type, kind, expr) = (.int64, .int8, col)
            case PostgresOID.float4: (type, kind, expr) = (.float64, .float4, col)
            case PostgresOID.float8: (type, kind, expr) = (.float64, .float8, col)
            case PostgresOID.bool: (type, kind, expr) = (.bool, .bool, col)
            case PostgresOID.bytea: (type, kind, expr) = (.bytes, .bytes, col)
            case PostgresOID.timestamp, PostgresOID.timestamptz: (type, kind, expr) = (.timestamp, .timestamp, col)
            case PostgresOID.date: (type, kind, expr) = (.timestamp, .date, col)
            case PostgresOID.json: (type, kind, expr) = (.json, .text, col)
            case PostgresOID.jsonb: (type, kind, expr) = (.json, .jsonb, col)
            case PostgresOID.text, PostgresOID.varchar, PostgresOID.name: (type, kind, expr) = (.string, .text, col)
            default: (type, kind, expr) = (.string, .text, "\(col)::text")
            }
            fields.append(Field(name, type))
            kinds.append(kind)
            select.append(expr)
        }
        switch fields[k].type {
        case .int64, .string, .timestamp: break
        default:
            throw SluiceError(
                .config,
                "source key '\(key)' has type \(keyType); keyset paging needs an integer, text or timestamp key")
        }
        selectList = select.joined(separator: ", ")
        schema = Schema(fields)
        last = startAfter
        if last == nil, let checkpoint, let saved = try? String(contentsOfFile: checkpoint, encoding: .utf8),
            !saved.isEmpty
        {
            last = saved.hasSuffix("\n") ? String(saved.dropLast()) : saved
        }
        return schema
    }

    /// The next page as one batch, or nil when a page came back short.
    public func next() async throws -> SourceItem? {
        guard !done, let s = session else { return nil }
        var sql = "SELECT \(selectList) FROM (\(query)) AS q"
        var binds = PostgresBindings()
        if let last {
            sql += " WHERE q.\(SQL.ident(key)) > $1::\(keyType)"
            binds.append(last)
        }
        sql += " ORDER BY q.\(SQL.ident(key)) LIMIT \(limit)"
        let builder = RecordBatchBuilder(schema: schema, rowCapacity: limit)
        let kinds = self.kinds
        var read: Int64 = 0
        do {
            try await s.forEachRow(sql, binds) { row in
                for (c, cell) in row.enumerated() {
                    read += Int64(cell.bytes?.readableBytes ?? 0)
                    try Self.append(cell, kind: kinds[c], to: builder.columns[c])
                }
                builder.finishRow()
            }
        } catch let f as SluiceError where f.fromPostgres {
            throw SluiceError(.io, "source query: \(f.description)")
        }
        let batch = builder.build(
            origin: BatchOrigin(file: "postgres query", firstLine: 0, firstOffset: 0, firstRecord: records + 1))
        progress.add(read: read, decoded: read)
        records += Int64(batch.count)
        if batch.count < limit { done = true }
        if batch.count == 0 {
            await close()
            return nil
        }
        last = Self.keyText(batch.columns[keyIndex], at: batch.count - 1)
        if done { await close() }
        return .batch(batch)
    }

    /// Closes the connection (the reader task's end, or after the last page).
    public func close() async {
        let s = session
        session = nil
        await s?.close()
    }

    /// Records the last key of `batch` (committed) in the checkpoint file.
    public func committed(_ batch: RecordBatch) {
        guard batch.count > 0, let k = batch.schema.index(of: key) else { return }
        let text = Self.keyText(batch.columns[k], at: batch.count - 1)
        committedKey.withLock { $0 = text }
        if let checkpoint {
            let tmp = checkpoint + ".tmp"
            if (try? (text + "\n").write(toFile: tmp, atomically: false, encoding: .utf8)) != nil {
                rename(tmp, checkpoint)
            }
        }
    }

    private static func keyText(_ c: Column, at i: Int) -> String {
        switch c.type {
        case .timestamp: return Timestamp.format(micros: c.int64(at: i))
        default: return c.value(at: i).description
        }
    }

    private static func append(_ cell: PostgresCell, kind: CellKind, to col: Column) throws {
        guard var b = cell.bytes else {
            col.appendNull()
            return
        }
        func bad() -> SluiceError {
            SluiceError(.io, "source column \(cell.columnName): unexpected \(b.readableBytes)-byte value for \(kind)")
        }
        switch kind {
        case .int2:
            guard let v = b.readInteger(as: Int16.self) else { throw bad() }
            col.append(int64: Int64(v))
        case .int4:
            guard let v = b.readInteger(as: Int32.self) else { throw bad() }
            col.append(int64: Int64(v))
        case .int8:
            guard let v = b.readInteger(as: Int64.self) else { throw bad() }
            col.append(int64: v)
        case .float4:
            guard let v = b.readInteger(as: UInt32.self) else { throw bad() }
            col.append(double: Double(Float(bitPattern: v)))
        case .float8:
            guard let v = b.readInteger(as: UInt64.self) else { throw bad() }
            col.append(double: Double(bitPattern: v))
        case .bool:
            guard let v = b.readInteger(as: UInt8.self) else { throw bad() }
            col.append(bool: v != 0)
        case .timestamp:
            guard let v = b.readInteger(as: Int64.self) else { throw bad() }
            col.append(int64: v &+ PostgresBinaryEncoder.postgresEpochMicros)
        case .date:
            guard let v = b.readInteger(as: Int32.self) else { throw bad() }
            col.append(int64: (Int64(v) + 10_957) * 86_400_000_000)
        case .jsonb:
            guard b.readInteger(as: UInt8.self) == 1 else { throw bad() }
            b.withUnsafeReadableBytes { col.append(bytes: $0) }
        case .bytes, .text:
            b.withUnsafeReadableBytes { col.append(bytes: $0) }
        }
    }
}
