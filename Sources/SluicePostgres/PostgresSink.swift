import Foundation
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceReport
import SluiceRuntime
import Synchronization

/// Options of the PostgreSQL sink.
public struct PostgresSinkOptions: Sendable, Hashable {
    /// Writer connections working in parallel, each committing its own batches. Nil means the default:
    /// ``defaultWriters``.
    public var writers: Int?
    /// `temp_buffers` for the staging table of each writer session. Default: `64MB`.
    public var tempBuffers = "64MB"
    /// Content-hash use: skip unchanged records, purge missing ones.
    public var changes = ChangeTracking()

    /// Stored records whose keys and hashes an upsert of nested or hashed records reads into memory at open
    /// (24 bytes each), so that batches need no lookup round trip; larger tables are looked up batch by batch.
    public static let storedHashLimit = 8_000_000

    /// The default number of writers: 2 (measured on 2 cores against a local server: two connections keep
    /// the server busy while the other prepares its next batch; see `docs/BENCHMARKS.md`).
    public static let defaultWriters = 2

    /// Default options.
    public init() {}
}

/// Writes batches into a PostgreSQL table over a pool of connections opened for the run.
///
/// - `append`: binary `COPY` straight from the column buffers (one transaction per batch).
/// - `upsert(key)`: binary `COPY` into a temporary staging table, then one
///   `INSERT … SELECT … ON CONFLICT (key) DO UPDATE … WHERE (target row) IS DISTINCT FROM (new row)`, so rows
///   that did not change cost no write. A key repeated inside one batch keeps its last value.
/// - `update(key, set, filter)`: one `UPDATE t SET … FROM unnest($1::type[], …) AS u(…) WHERE t.key = u.key`
///   per batch (only rows whose values differ are written).
/// - `replace`: rows go to `<table>__sluice_replace` (a copy of the table's definition) that replaces the
///   table, in one transaction, only after a complete run.
///
/// Values are encoded to the target column's own type (`integer`, `varchar(n)`, `jsonb`, `uuid`, `date`, …);
/// types without a binary encoder here (`numeric`, enums, …) are sent as text and cast by the server. A value
/// that cannot be represented (an integer out of range for `integer`) rejects its row only. A batch the
/// server refuses for its data (a constraint, a bad value) is bisected by the runtime down to the rows.
/// Transient failures (connection lost, serialization failure, deadlock) are retried; the batch's
/// transaction never committed, so nothing is duplicated.
public final class PostgresSink: BatchSink, @unchecked Sendable {
    /// The server.
    public let location: PostgresLocation
    /// The table (optionally `schema.table`).
    public let table: String
    /// The write mode.
    public let mode: WriteMode
    /// Options.
    public let options: PostgresSinkOptions

    private var columns: [PostgresColumn] = []
    private var inputIndex: [Int] = []
    private var writeTable: String
    private var lanes: [Lane] = []
    private let timingLock = NSLock()
    /// Keeps batches that share keys in input order across writers (upsert and update with several writers).
    private var keyOrder: KeyOrder?
    private var sinkTimings = SinkTimings()
    private var directCopy = false
    private var statements = Statements()
    /// Settings every writer session runs once after connecting.
    private var sessionSettings: [String] = []
    /// Child tables, lookups and purge bookkeeping, for nested records and content hashes.
    private var nested: Nested?
    /// `ALTER TABLE … ADD PRIMARY KEY` for child tables this run created, built once their rows are in.
    private var deferredKeys: [String] = []
    private let deferredLock = NSLock()
    private var counts = ChangeCounts()

    /// Creates a sink for `table` at `url` (`postgres://user@host/db`).
    /// - Throws: ``SluiceError`` (`.config`) for a bad URL.
    public init(
        url: String, table: String, mode: WriteMode = .append, options: PostgresSinkOptions = PostgresSinkOptions()
    ) throws {
        location = try PostgresLocation(url: url)
        self.table = table
        self.mode = mode
        self.options = options
        writeTable = table
    }

    /// `postgres://user@host:port/db table T (mode)`.
    public var target: String { "\(location) table \(table) (\(mode))" }

    /// Writer connections.
    public var writers: Int { max(1, lanes.count) }

    /// Per-phase timings, summed over writers.
    public var timings: SinkTimings {
        timingLock.lock()
        defer { timingLock.unlock() }
        return sinkTimings
    }

    /// The SQL statements of a run, built once at open.
    private struct Statements {
        var copy = ""
        var copyStage = ""
        var createStage = ""
        var merge = ""
        var mergeDedup = ""
        var update = ""
    }

    /// A child table as the sink writes it.
    private struct ChildTarget {
        var table: String
        var columns: [PostgresColumn]
        var inputIndex: [Int]
        var copy: String
        /// `DELETE FROM child WHERE link = ANY($1)`.
        var delete: String
        /// Whether the table has a unique key on exactly (link, position), so that a changed record's child
        /// rows can be merged into the stored ones instead of replacing them.
        var mergeable: Bool
    }

    /// What the record-by-record path needs, settled at open.
    private struct Nested {
        var children: [ChildTarget]
        /// `SELECT key, hash FROM t WHERE key = ANY($1)` (upsert), nil for append.
        var lookup: String?
        /// Parent column holding the key, as encoded.
        var keyColumn: PostgresColumn?
        /// Input index of the key and of the hash column.
        var keyIndex: Int
        var hashIndex: Int?
        /// The keys a purging run saw (`<table>__sluice_seen`).
        var seenTable: String?
        var copySeen: String
        /// Every stored key and hash, read once at open (int64 keys, a table that fits the cap).
        var stored: StoredHashes?
    }

    /// Inserted / updated / unchanged / purged counts (upserts of nested or hashed records).
    public var changes: ChangeCounts? {
        guard let n = nested, n.lookup != nil else { return nil }
        timingLock.lock()
        defer { timingLock.unlock() }
        return counts
    }

    /// The stored records' source hashes, read at open with `--skip-unchanged` (int64 keys, a table within the
    /// stored-hash cap, a source-hash column in the input).
    public var storedSourceHashes: StoredSourceHashes? { nested?.stored?.sources }

    /// Counts records the decoders skipped as unchanged, and marks their keys seen for `--purge-missing`.
    public func noteUnchanged(keys: [Int64]) {
        guard let stored = nested?.stored else { return }
        stored.markSeen(keys: keys)
        var c = ChangeCounts()
        c.unchanged = Int64(keys.count)
        c.undecoded = Int64(keys.count)
        addCounts(c)
    }

    /// One writer: its connection, encoder and staging state.
    private final class Lane {
        var session: PostgresSession?
        let encoder = PostgresBinaryEncoder()
        var stageReady = false
    }

    /// Connects, creates the table if it does not exist, checks the columns and opens the writers.
    public func open(schema: Schema) throws {
        let first: PostgresSession
        do { first = try PostgresSession(location) } catch let f as SluiceError {
            // Nothing has run yet: a server that cannot be reached is a setup problem, like a bad path.
            throw SluiceError(.io, f.message)
        }
        do {
            try setUp(schema: schema, on: first)
        } catch let f as SluiceError where f.fromPostgres {
            first.close()
            throw f.fatal("PostgreSQL: ")
        } catch {
            first.close()
            throw error
        }
        let n = max(1, options.writers ?? PostgresSinkOptions.defaultWriters)
        for setting in sessionSettings {
            do { try first.execute(setting) } catch let f as SluiceError where f.fromPostgres {
                throw f.fatal("PostgreSQL: ")
            }
        }
        lanes = [Lane()]
        lanes[0].session = first
        for _ in 1..<n { lanes.append(Lane()) }
        if n > 1, !mode.keyColumns.isEmpty {
            keyOrder = KeyOrder(key: mode.keyColumns)
        }
    }

    /// Notes the keys of batch `sequence` (upsert and update with several writers), so a later batch that
    /// shares one waits for it.
    public func willWrite(_ batch: RecordBatch, sequence: Int) { keyOrder?.register(batch, sequence: sequence) }

    /// Lets later batches that share keys with batch `sequence` go ahead.
    public func didWrite(sequence: Int) { keyOrder?.release(sequence) }

    /// Reads the named columns of the stored table, as text, on the first writer's session. A table that does
    /// not exist has no rows.
    /// - Throws: ``SluiceError`` when the table lacks a column or the query fails.
    public func readStored(columns: [String], _ body: ([String?]) throws -> Void) throws -> Bool {
        guard let first = lanes.first?.session else { return false }
        let rows = Mutex<[[String?]]>([])
        do {
            let existing = try tableColumns(table, on: first).map(\.0)
            if existing.isEmpty { return true }
            let missing = columns.filter { !existing.contains($0) }
            guard missing.isEmpty else {
                throw SluiceError.sink(
                    .fatal, "table \(table) has no column(s) \(missing.joined(separator: ", ")) to resume from")
            }
            let n = columns.count
            try first.forEachRow(
                "SELECT \(columns.map { SQL.ident($0) + "::text" }.joined(separator: ", ")) FROM \(SQL.table(table))"
            ) { row in
                var values: [String?] = []
                values.reserveCapacity(n)
                for cell in row { values.append(try cell.decode(String?.self)) }
                rows.withLock { $0.append(values) }
            }
        } catch let f as SluiceError where f.fromPostgres { throw f.fatal("PostgreSQL: ") }
        for r in rows.withLock({ $0 }) { try body(r) }
        return true
    }

    private func tableColumns(_ name: String, on s: PostgresSession) throws -> [(String, UInt32, String)] {
        var binds = PostgresBindings()
        binds.append(SQL.table(name))
        let rows = try s.rows(
            """
            SELECT a.attname::text, a.atttypid::int8, format_type(a.atttypid, a.atttypmod) \
            FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
            ORDER BY a.attnum
            """, binds)
        return try rows.map { r in
            let (n, oid, t) = try r.decode((String, Int64, String).self)
            return (n, UInt32(oid), t)
        }
    }

    private func setUp(schema: Schema, on s: PostgresSession) throws {
        try options.changes.validate(mode: mode, schema: schema)
        let key = mode.keyColumns
        for k in key where schema.index(of: k) == nil {
            throw SluiceError.sink(.fatal, "key column '\(k)' is not in the input (\(schema))")
        }
        var existing = try tableColumns(table, on: s)
        if existing.isEmpty {
            if case .update = mode {
                throw SluiceError.sink(.fatal, "update mode needs an existing table; \(table) is not in \(location)")
            }
            try s.execute(Self.createTableSQL(SQL.table(table), schema: schema, key: key))
            existing = try tableColumns(table, on: s)
        }
        var needed = schema.fields.map(\.name)
        if case .update(let k, let set, _) = mode {
            guard !set.isEmpty else { throw SluiceError.sink(.fatal, "update mode needs at least one column to set") }
            for c in set where schema.index(of: c) == nil {
                throw SluiceError.sink(.fatal, "column '\(c)' to set is not in the input (\(schema))")
            }
            needed = k + set
        }
        if let sh = options.changes.sourceHashColumn, schema.index(of: sh) != nil,
            !existing.contains(where: { $0.0 == sh })
        {
            // A table from before source hashes: add the column (its records are decoded once more, then skipped).
            try s.execute("ALTER TABLE \(SQL.table(table)) ADD COLUMN IF NOT EXISTS \(SQL.ident(sh)) bigint")
            existing = try tableColumns(table, on: s)
        }
        let byName = Dictionary(existing.map { ($0.0, $0) }, uniquingKeysWith: { a, _ in a })
        let missing = needed.filter { byName[$0] == nil }
        if !missing.isEmpty {
            throw SluiceError.sink(
                .fatal,
                "table \(table) has no column(s) \(missing.joined(separator: ", ")) (it has \(existing.map(\.0).joined(separator: ", ")))"
            )
        }
        columns = needed.map { name in
            let (_, oid, sqlType) = byName[name]!
            let input = schema.fields[schema.index(of: name)!].type
            return PostgresColumn(
                name: name, oid: oid, sqlType: sqlType, input: input,
                encoding: PostgresColumn.encoding(input: input, oid: oid))
        }
        inputIndex = needed.map { schema.index(of: $0)! }
        if case .update(let k, _, _) = mode {
            // `UPDATE … FROM unnest(…)` joins a few thousand keys to the table. Knowing the array's size, the
            // planner often prefers hashing the whole table (a sequential scan per batch) to one index probe
            // per key; with an index on the key, the probes are what a batch should cost.
            var binds = PostgresBindings()
            binds.append(SQL.table(table))
            binds.append(k[0])
            let indexed = try s.rows(
                """
                SELECT count(*)::int8 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid                 AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass($1) AND a.attname = $2
                """, binds)
            if try indexed.first?.decode(Int64.self) ?? 0 > 0 {
                sessionSettings = ["SET enable_hashjoin = off", "SET enable_mergejoin = off"]
            }
        }
        if case .replace = mode {
            writeTable = table + "__sluice_replace"
            try s.execute("DROP TABLE IF EXISTS \(SQL.table(writeTable))")
            try s.execute(
                "CREATE TABLE \(SQL.table(writeTable)) (LIKE \(SQL.table(table)) INCLUDING ALL)")
        }
        buildStatements()
        try setUpNested(schema: schema, on: s)
    }

    /// Whether `table` has an index whose first column is `column`.
    private func hasIndex(_ table: String, leadingColumn column: String, on s: PostgresSession) throws -> Bool {
        var binds = PostgresBindings()
        binds.append(SQL.table(table))
        binds.append(column)
        let rows = try s.rows(
            "SELECT count(*)::int8 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                + "AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass($1) AND a.attname = $2", binds)
        return try rows.first?.decode(Int64.self) ?? 0 > 0
    }

    /// Whether `table` has a unique index on exactly the columns (`first`, `second`).
    private func hasUniqueKey(_ table: String, _ first: String, _ second: String, on s: PostgresSession) throws -> Bool
    {
        var binds = PostgresBindings()
        binds.append(SQL.table(table))
        binds.append(first)
        binds.append(second)
        let rows = try s.rows(
            "SELECT count(*)::int8 FROM pg_index i "
                + "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                + "JOIN pg_attribute b ON b.attrelid = i.indrelid AND b.attnum = i.indkey[1] "
                + "WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnatts = 2 "
                + "AND a.attname = $2 AND b.attname = $3", binds)
        return try rows.first?.decode(Int64.self) ?? 0 > 0
    }

    /// Builds the keys of child tables this run created (before deleting child rows by key, and at the end).
    private func buildDeferredKeys(on s: PostgresSession) throws {
        deferredLock.lock()
        defer { deferredLock.unlock() }
        while let sql = deferredKeys.first {
            try s.execute(sql)
            deferredKeys.removeFirst()
        }
    }

    /// Creates missing child tables, checks their columns, and prepares the lookup and purge bookkeeping.
    private func setUpNested(schema: Schema, on s: PostgresSession) throws {
        let tracking = options.changes
        guard !schema.children.isEmpty || tracking.skipUnchanged || tracking.purgeMissing else { return }
        var targets: [ChildTarget] = []
        for child in schema.children {
            let link = child.linkField.name
            var existing = try tableColumns(child.name, on: s)
            var mergeable = true
            let addKey =
                "ALTER TABLE \(SQL.table(child.name)) ADD PRIMARY KEY (\(SQL.ident(link)), \(SQL.ident("position")))"
            if existing.isEmpty {
                // A new child table gets its key after the load: building an index once over sorted rows costs
                // far less than maintaining it row by row (measured: 2.9 s vs 9.9 s for W5's 5.2 M child rows).
                try s.execute(Self.createTableSQL(SQL.table(child.name), schema: child.schema, key: []))
                existing = try tableColumns(child.name, on: s)
                deferredKeys.append(addKey)
            } else if try !hasIndex(child.name, leadingColumn: link, on: s) {
                // Left without its key by a run that was killed before it could build it.
                try s.execute(addKey)
            } else {
                mergeable = try hasUniqueKey(child.name, link, "position", on: s)
            }
            let byName = Dictionary(existing.map { ($0.0, $0) }, uniquingKeysWith: { a, _ in a })
            var cols: [PostgresColumn] = []
            for f in child.schema.fields {
                guard let (_, oid, sqlType) = byName[f.name] else {
                    throw SluiceError.sink(
                        .fatal,
                        "child table \(child.name) has no column \(f.name) (it has \(existing.map(\.0).joined(separator: ", ")))"
                    )
                }
                let c = PostgresColumn(
                    name: f.name, oid: oid, sqlType: sqlType, input: f.type,
                    encoding: PostgresColumn.encoding(input: f.type, oid: oid))
                guard !c.needsCast else {
                    throw SluiceError.sink(
                        .fatal,
                        "child table \(child.name): column \(f.name) is \(sqlType), which rows cannot be copied into in binary; use \(PostgresColumn.createType(f.type).0)"
                    )
                }
                cols.append(c)
            }
            let names = cols.map { SQL.ident($0.name) }.joined(separator: ", ")
            let t = SQL.table(child.name)
            targets.append(
                ChildTarget(
                    table: child.name, columns: cols, inputIndex: Array(0..<cols.count),
                    copy: "COPY \(t) (\(names)) FROM STDIN WITH (FORMAT binary)",
                    delete: "DELETE FROM \(t) WHERE \(SQL.ident(link)) = ANY($1)", mergeable: mergeable))
        }
        var n = Nested(
            children: targets, lookup: nil, keyColumn: nil, keyIndex: -1, hashIndex: nil, seenTable: nil, copySeen: "",
            stored: nil)
        if case .upsert(let key) = mode, let k = key.first, let ci = columns.firstIndex(where: { $0.name == k }) {
            let kc = columns[ci]
            guard kc.encoding == .int8 || (kc.input == .string && kc.encoding == .raw) else {
                throw SluiceError.sink(
                    .fatal, "the key \(k) must be bigint or text for nested or hashed upserts (it is \(kc.sqlType))")
            }
            n.keyColumn = kc
            n.keyIndex = inputIndex[ci]
            let hash = tracking.hashColumn.flatMap { h in schema.index(of: h) != nil ? SQL.ident(h) : nil }
            n.hashIndex = tracking.hashColumn.flatMap { schema.index(of: $0) }
            let cast = kc.input == .int64 ? "int8" : "text"
            n.lookup =
                "SELECT \(SQL.ident(k))::\(cast), \(hash ?? "NULL::bytea") FROM \(SQL.table(table)) WHERE \(SQL.ident(k)) = ANY($1)"
            if kc.input == .int64 {
                let source =
                    tracking.skipUnchanged
                    ? tracking.sourceHashColumn.flatMap { c in schema.index(of: c) != nil ? SQL.ident(c) : nil } : nil
                n.stored = try StoredHashes.load(
                    table: table, key: k, hash: hash, source: source, on: s, limit: PostgresSinkOptions.storedHashLimit)
            }
            if tracking.purgeMissing && n.stored == nil {
                let seen = table + "__sluice_seen"
                try s.execute("DROP TABLE IF EXISTS \(SQL.table(seen))")
                try s.execute("CREATE UNLOGGED TABLE \(SQL.table(seen)) (k \(kc.sqlType))")
                n.seenTable = seen
                n.copySeen = "COPY \(SQL.table(seen)) (k) FROM STDIN WITH (FORMAT binary)"
            }
        }
        nested = n
    }

    /// `CREATE TABLE` for `schema`, with `key` as the primary key.
    static func createTableSQL(_ quotedTable: String, schema: Schema, key: [String]) -> String {
        var cols = schema.fields.map { f -> String in
            "\(SQL.ident(f.name)) \(PostgresColumn.createType(f.type).0)\(f.nullable || key.contains(f.name) ? "" : " NOT NULL")"
        }
        if !key.isEmpty { cols.append("PRIMARY KEY (\(key.map(SQL.ident).joined(separator: ", ")))") }
        return "CREATE TABLE IF NOT EXISTS \(quotedTable) (\(cols.joined(separator: ", ")))"
    }

    private func buildStatements() {
        let t = SQL.table(writeTable)
        let names = columns.map { SQL.ident($0.name) }.joined(separator: ", ")
        let casted = columns.map { c in
            c.needsCast ? "s.\(SQL.ident(c.name))::\(c.sqlType)" : "s.\(SQL.ident(c.name))"
        }.joined(separator: ", ")
        directCopy = !columns.contains(where: \.needsCast)
        var st = Statements()
        st.copy = "COPY \(t) (\(names)) FROM STDIN WITH (FORMAT binary)"
        st.createStage =
            "CREATE TEMP TABLE IF NOT EXISTS sluice_stage (sluice_ord int4, "
            + columns.map { "\(SQL.ident($0.name)) \($0.stageType)" }.joined(separator: ", ")
            + ") ON COMMIT DELETE ROWS"
        st.copyStage = "COPY \"sluice_stage\" (sluice_ord, \(names)) FROM STDIN WITH (FORMAT binary)"
        switch mode {
        case .append, .replace:
            st.merge = "INSERT INTO \(t) (\(names)) SELECT \(casted) FROM sluice_stage s"
        case .upsert(let key):
            let others = columns.filter { !key.contains($0.name) }
            var conflict = " ON CONFLICT (\(key.map(SQL.ident).joined(separator: ", "))) DO "
            if others.isEmpty {
                conflict += "NOTHING"
            } else {
                func cmp(_ prefix: String, _ c: PostgresColumn) -> String {
                    // json and xml have no equality operator; compare their text.
                    let v = "\(prefix).\(SQL.ident(c.name))"
                    return c.oid == PostgresOID.json || c.oid == 142 ? "\(v)::text" : v
                }
                conflict += "UPDATE SET "
                conflict += others.map { "\(SQL.ident($0.name)) = EXCLUDED.\(SQL.ident($0.name))" }.joined(
                    separator: ", ")
                conflict += " WHERE (" + others.map { cmp(t, $0) }.joined(separator: ", ") + ") IS DISTINCT FROM ("
                conflict += others.map { cmp("EXCLUDED", $0) }.joined(separator: ", ") + ")"
                if others.count == 1 {
                    // A one-column row constructor needs ROW(...).
                    conflict = conflict.replacingOccurrences(of: " WHERE (", with: " WHERE ROW(")
                    conflict = conflict.replacingOccurrences(of: "IS DISTINCT FROM (", with: "IS DISTINCT FROM ROW(")
                }
            }
            st.merge = "INSERT INTO \(t) (\(names)) SELECT \(casted) FROM sluice_stage s" + conflict
            let keyList = key.map { "s.\(SQL.ident($0))" }.joined(separator: ", ")
            st.mergeDedup =
                "INSERT INTO \(t) (\(names)) SELECT \(casted) FROM (SELECT DISTINCT ON (\(keyList)) * FROM sluice_stage s "
                + "ORDER BY \(keyList), s.sluice_ord DESC) s" + conflict
        case .update(let key, let set, let filter):
            let params = columns.enumerated().map { i, c in
                "$\(i + 1)::\(c.needsCast ? "text" : c.sqlType)[]"
            }.joined(separator: ", ")
            func uval(_ c: PostgresColumn) -> String {
                c.needsCast ? "u.\(SQL.ident(c.name))::\(c.sqlType)" : "u.\(SQL.ident(c.name))"
            }
            let setCols = columns.filter { set.contains($0.name) }
            var sql = "UPDATE \(t) AS t SET "
            sql += setCols.map { "\(SQL.ident($0.name)) = \(uval($0))" }.joined(separator: ", ")
            sql += " FROM unnest(\(params)) AS u(\(names)) WHERE "
            sql += columns.filter { key.contains($0.name) }.map { "t.\(SQL.ident($0.name)) = \(uval($0))" }.joined(
                separator: " AND ")
            sql += " AND ROW(" + setCols.map { "t.\(SQL.ident($0.name))" }.joined(separator: ", ")
            sql += ") IS DISTINCT FROM ROW(" + setCols.map(uval).joined(separator: ", ") + ")"
            if let filter { sql += " AND (\(filter))" }
            st.update = sql
        }
        statements = st
    }

    /// The writer's session, reconnecting if the last one was lost.
    private func session(_ lane: Lane) throws -> PostgresSession {
        if let s = lane.session, !s.isClosed { return s }
        lane.session = nil
        lane.stageReady = false
        do {
            let s = try PostgresSession(location)
            for setting in sessionSettings { try s.execute(setting) }
            lane.session = s
            return s
        } catch let f as SluiceError where f.fromPostgres {
            var retry = f.asSinkFailure
            retry.kind = .retry
            throw retry
        }
    }

    /// Writes and commits one batch on writer 0.
    public func write(_ batch: RecordBatch) throws -> SinkWriteOutcome { try write(batch, writer: 0) }

    /// Writes and commits one batch on writer `writer`, in no particular order with other writers.
    public func write(_ batch: RecordBatch, writer: Int) throws -> SinkWriteOutcome {
        try write(batch, writer: writer, sequence: nil)
    }

    /// Writes and commits batch `sequence` on writer `writer`. With several writers, an upsert or update
    /// first waits for every earlier batch that shares a key with it to be done, so the last occurrence of a
    /// key in the input is the one that stays, as with one writer; batches without shared keys do not wait.
    public func write(_ batch: RecordBatch, writer: Int, sequence: Int) throws -> SinkWriteOutcome {
        try write(batch, writer: writer, sequence: Optional(sequence))
    }

    private func write(_ batch: RecordBatch, writer: Int, sequence: Int?) throws -> SinkWriteOutcome {
        guard writer < lanes.count else { throw SluiceError.sink(.fatal, "the PostgreSQL sink is not open") }
        let lane = lanes[writer]
        let s = try session(lane)
        var t = SinkTimings()
        let a = MonotonicClock.now()
        do {
            let outcome: SinkWriteOutcome
            if let nested {
                outcome = try writeNested(batch, nested, s, lane, sequence, &t)
            } else if case .update = mode {
                if let sequence { keyOrder?.waitForEarlierBatchesSharingKeys(sequence) }
                outcome = try writeUpdate(batch, s, lane, &t)
            } else if directCopy && !isUpsert {
                let (data, rejected) = encodeCopy(batch, lane.encoder, ordinal: false)
                t.encode.busy += MonotonicClock.now() - a
                let b = MonotonicClock.now()
                // An explicit transaction: in an implicit one the server reports the COPY complete before it
                // commits, so a failed commit (a deferred constraint, a connection lost at that moment)
                // would pass for a stored batch.
                try s.execute("BEGIN")
                try s.copyIn(statement: statements.copy, data: data)
                let c = MonotonicClock.now()
                t.write.busy += c - b
                try s.execute("COMMIT")
                t.commit.busy += MonotonicClock.now() - c
                outcome = SinkWriteOutcome(written: batch.count - rejected.count, rejected: rejected)
            } else {
                outcome = try writeStaged(batch, s, lane, sequence, &t)
            }
            t.encode.records += Int64(batch.count)
            t.write.records += Int64(batch.count)
            t.commit.records += Int64(batch.count)
            t.commit.batches += 1
            timingLock.lock()
            sinkTimings.encode.merge(t.encode)
            sinkTimings.write.merge(t.write)
            sinkTimings.commit.merge(t.commit)
            timingLock.unlock()
            return outcome
        } catch let f as SluiceError where f.fromPostgres {
            if !f.connectionLost { _ = try? s.execute("ROLLBACK") } else { lane.session = nil }
            throw f.asSinkFailure
        }
    }

    private var isUpsert: Bool {
        if case .upsert = mode { return true }
        return false
    }

    /// COPY into the session's staging table, then one merge statement, in one transaction.
    private func writeStaged(
        _ batch: RecordBatch, _ s: PostgresSession, _ lane: Lane, _ sequence: Int?, _ t: inout SinkTimings
    ) throws -> SinkWriteOutcome {
        let a = MonotonicClock.now()
        let (data, rejected) = encodeCopy(batch, lane.encoder, ordinal: true)
        let b = MonotonicClock.now()
        t.encode.busy += b - a
        if !lane.stageReady {
            try s.execute("SET temp_buffers = \(SQL.literal(options.tempBuffers))")
            try s.execute(statements.createStage)
            lane.stageReady = true
        }
        try s.execute("BEGIN")
        try s.copyIn(statement: statements.copyStage, data: data)
        if let sequence { keyOrder?.waitForEarlierBatchesSharingKeys(sequence) }
        do {
            try s.execute(statements.merge)
        } catch let f as SluiceError where f.sqlState == "21000" && !statements.mergeDedup.isEmpty {
            // A key repeats inside the batch: merge its last occurrence only.
            try s.execute("ROLLBACK")
            try s.execute("BEGIN")
            try s.copyIn(statement: statements.copyStage, data: data)
            try s.execute(statements.mergeDedup)
        }
        let c = MonotonicClock.now()
        t.write.busy += c - b
        try s.execute("COMMIT")
        t.commit.busy += MonotonicClock.now() - c
        return SinkWriteOutcome(written: batch.count - rejected.count, rejected: rejected)
    }

    /// Encodes the batch as binary COPY data (with a leading row-ordinal column for staging); rows with a
    /// value the target type cannot hold are left out and returned.
    private func encodeCopy(
        _ batch: RecordBatch, _ e: PostgresBinaryEncoder, ordinal: Bool
    ) -> (ByteBuffer, [(row: Int, reason: String)]) {
        encodeCopy(batch, e, ordinal: ordinal, columns: columns, inputIndex: inputIndex)
    }

    private func encodeCopy(
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
    private func writeUpdate(
        _ batch: RecordBatch, _ s: PostgresSession, _ lane: Lane, _ t: inout SinkTimings
    ) throws -> SinkWriteOutcome {
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
        try s.execute(statements.update, binds)
        t.write.busy += MonotonicClock.now() - b
        return SinkWriteOutcome(written: rows, rejected: rejected)
    }

    /// With a `clean` run, runs `deleting` (which returns the count of parent rows it deleted) in one
    /// transaction and records the count; otherwise records why purging was skipped.
    private func purge(
        on s: PostgresSession, clean: Bool, complete: Bool, _ deleting: () throws -> [PostgresRow]
    ) throws {
        guard clean else {
            timingLock.lock()
            counts.purgeSkipped =
                complete
                ? "some records were rejected, so absent keys may only be unreadable" : "the run did not complete"
            timingLock.unlock()
            return
        }
        try s.execute("BEGIN")
        let purged = try deleting().first?.decode(Int64.self) ?? 0
        try s.execute("COMMIT")
        timingLock.lock()
        counts.purged = purged
        timingLock.unlock()
    }

    /// A one-dimensional binary array parameter of column `col` of `batch`, for `= ANY($1)`.
    private func arrayParameter(
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

    /// Nested records and content hashes, one transaction per batch: looks up the batch's keys and stored
    /// hashes, copies new records straight in, merges changed ones, replaces their child rows, skips unchanged
    /// ones (`--skip-unchanged`) and notes every key for `--purge-missing`. A value the target cannot hold makes
    /// the batch a data error, which the runtime bisects, so a bad record is rejected whole with its children.
    private func writeNested(
        _ batch: RecordBatch, _ n: Nested, _ s: PostgresSession, _ lane: Lane, _ sequence: Int?, _ t: inout SinkTimings
    ) throws -> SinkWriteOutcome {
        if let sequence { keyOrder?.waitForEarlierBatchesSharingKeys(sequence) }
        if let stored = n.stored {
            let a = MonotonicClock.now()
            let c = stored.classify(
                batch, key: n.keyIndex, hash: options.changes.skipUnchanged ? n.hashIndex : nil)
            t.encode.busy += MonotonicClock.now() - a
            var local = ChangeCounts()
            local.unchanged = Int64(c.unchanged)
            local.inserted = Int64(c.new.count)
            local.updated = Int64(c.changed.count)
            if c.new.isEmpty && c.changed.isEmpty {
                addCounts(local)
                return SinkWriteOutcome(written: batch.count)
            }
            do {
                let kids = try writeRows(batch, n, s, lane, new: c.new, changed: c.changed, &t)
                stored.remember(batch, rows: c.changed, key: n.keyIndex, hash: n.hashIndex)
                addCounts(local)
                return SinkWriteOutcome(written: batch.count, childRows: kids)
            } catch let f as SluiceError where f.sqlState == "23505" {
                // A key new to the stored set was inserted earlier in this run: classify this batch against the
                // table itself.
                try s.execute("ROLLBACK")
            }
        }
        return try writeNestedLookingUp(batch, n, s, lane, &t)
    }

    private func addCounts(_ c: ChangeCounts) {
        timingLock.lock()
        counts.add(c)
        timingLock.unlock()
    }

    /// Writes new rows (copied in) and changed rows (merged, their old children deleted), then the children of
    /// both, and with a seen table the batch's keys, in one transaction. Returns the child rows written.
    private func writeRows(
        _ batch: RecordBatch, _ n: Nested, _ s: PostgresSession, _ lane: Lane, new newRows: [Int],
        changed changedRows: [Int],
        _ t: inout SinkTimings
    ) throws -> Int {
        if !changedRows.isEmpty && !deferredKeys.isEmpty {
            // Deleting a record's old child rows needs the key the load would otherwise build at the end.
            try buildDeferredKeys(on: s)
        }
        if newRows.count + changedRows.count <= Self.fewRows && directCopy && n.seenTable == nil
            && n.keyColumn != nil && isUpsert
        {
            return try writeFewRows(batch, n, s, lane, new: newRows, changed: changedRows, &t)
        }
        let b = MonotonicClock.now()
        try s.execute("BEGIN")
        var childRows = 0
        let all = newRows.count == batch.count
        if !newRows.isEmpty && directCopy {
            let part = all ? batch : batch.select(rows: newRows)
            let (data, rejected) = encodeCopy(part, lane.encoder, ordinal: false)
            if let r = rejected.first { throw SluiceError.sink(.bisect, r.reason) }
            try s.copyIn(statement: statements.copy, data: data)
        }
        let merged = directCopy ? changedRows : (newRows + changedRows).sorted()
        if !merged.isEmpty {
            if !lane.stageReady {
                try s.execute("SET temp_buffers = \(SQL.literal(options.tempBuffers))")
                try s.execute(statements.createStage)
                lane.stageReady = true
            }
            let (data, rejected) = encodeCopy(batch.select(rows: merged), lane.encoder, ordinal: true)
            if let r = rejected.first { throw SluiceError.sink(.bisect, r.reason) }
            try s.copyIn(statement: statements.copyStage, data: data)
            try s.execute(statements.merge)
        }
        if !changedRows.isEmpty, let kc = n.keyColumn {
            var binds = PostgresBindings()
            binds.append(try arrayParameter(batch, column: n.keyIndex, as: kc, rows: changedRows, lane.encoder))
            for child in n.children { try s.execute(child.delete, binds) }
        }
        let written = all ? batch : batch.select(rows: (newRows + changedRows).sorted())
        for (c, child) in n.children.enumerated() where written.children[c].count > 0 {
            let (data, rejected) = encodeCopy(
                written.children[c], lane.encoder, ordinal: false, columns: child.columns, inputIndex: child.inputIndex)
            if let r = rejected.first { throw SluiceError.sink(.bisect, "\(child.table): \(r.reason)") }
            try s.copyIn(statement: child.copy, data: data)
            childRows += written.children[c].count
        }
        if n.seenTable != nil, let kc = n.keyColumn {
            let keyOnly = RecordBatch(
                schema: Schema([Field("k", kc.input)]), columns: [batch.columns[n.keyIndex]], count: batch.count)
            let (data, _) = encodeCopy(keyOnly, lane.encoder, ordinal: false, columns: [kc], inputIndex: [0])
            try s.copyIn(statement: n.copySeen, data: data)
        }
        let c = MonotonicClock.now()
        t.write.busy += c - b
        try s.execute("COMMIT")
        t.commit.busy += MonotonicClock.now() - c
        return childRows
    }

    /// Up to this many records of a batch are written with array parameters (a handful of statements for
    /// all tables) rather than a `COPY` per table: an update run writes a few records per batch.
    static let fewRows = 512

    /// `$i::type[]` placeholders for `columns`, numbered from `first`.
    private static func arrays(_ columns: [PostgresColumn], from first: Int) -> String {
        columns.enumerated().map { "$\(first + $0.offset)::\($0.element.sqlType)[]" }.joined(separator: ", ")
    }

    /// Writes a few records in one transaction of two statements, with array parameters: the parents merged
    /// (only rows whose values differ are rewritten), then the child rows of every table at once. A new
    /// record's children are inserted. A changed record's children are merged by (link, position): a row
    /// whose values are the same is left alone, and rows past its new count are deleted. Most changes touch
    /// one part of a record, so most child rows are not rewritten.
    private func writeFewRows(
        _ batch: RecordBatch, _ n: Nested, _ s: PostgresSession, _ lane: Lane, new newRows: [Int],
        changed changedRows: [Int],
        _ t: inout SinkTimings
    ) throws -> Int {
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
        let conflict = statements.merge[statements.merge.range(of: " ON CONFLICT")!.lowerBound...]
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
        try s.execute("BEGIN")
        try s.execute(parentSQL, parentBinds)
        if !parts.isEmpty { try s.execute("WITH " + parts.joined(separator: ", ") + " SELECT 1", childBinds) }
        let c = MonotonicClock.now()
        t.write.busy += c - b
        try s.execute("COMMIT")
        t.commit.busy += MonotonicClock.now() - c
        return childRows
    }

    /// `ON CONFLICT (link, position) DO UPDATE …` for a changed record's child rows: a row is rewritten only
    /// when one of its values differs.
    private static func childConflict(_ child: ChildTarget, table: String) -> String {
        let key = child.columns.prefix(2).map { SQL.ident($0.name) }.joined(separator: ", ")
        let others = child.columns.dropFirst(2)
        guard !others.isEmpty else { return " ON CONFLICT (\(key)) DO NOTHING" }
        func value(_ prefix: String, _ c: PostgresColumn) -> String {
            // json and xml have no equality operator; compare their text.
            let v = "\(prefix).\(SQL.ident(c.name))"
            return c.oid == PostgresOID.json || c.oid == 142 ? "\(v)::text" : v
        }
        let set = others.map { "\(SQL.ident($0.name)) = EXCLUDED.\(SQL.ident($0.name))" }.joined(separator: ", ")
        let mine = others.map { value(table, $0) }.joined(separator: ", ")
        let theirs = others.map { value("EXCLUDED", $0) }.joined(separator: ", ")
        return " ON CONFLICT (\(key)) DO UPDATE SET \(set) WHERE ROW(\(mine)) IS DISTINCT FROM ROW(\(theirs))"
    }

    /// Why a value of `column` cannot be written as `col` (an integer out of range), for the first such row.
    private func firstUnrepresentable(_ batch: RecordBatch, column: Int, as col: PostgresColumn) -> String? {
        unrepresentable(batch, column: column, as: col, PostgresBinaryEncoder(), first: true).first?.reason
    }

    /// The rows of `column` whose values cannot be written as `col` (an integer out of range for `integer`, a
    /// malformed UUID), with the reason; only the first with `first`.
    private func unrepresentable(
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
    private func writeNestedLookingUp(
        _ batch: RecordBatch, _ n: Nested, _ s: PostgresSession, _ lane: Lane, _ t: inout SinkTimings
    ) throws -> SinkWriteOutcome {
        let a = MonotonicClock.now()
        var local = ChangeCounts()
        var newRows: [Int] = []
        var changedRows: [Int] = []
        if let lookup = n.lookup, let kc = n.keyColumn {
            var binds = PostgresBindings()
            binds.append(try arrayParameter(batch, column: n.keyIndex, as: kc, rows: nil, lane.encoder))
            let found = try s.rows(lookup, binds)
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
        let childRows = try writeRows(batch, n, s, lane, new: newRows, changed: changedRows, &t)
        if n.lookup != nil {
            n.stored?.remember(batch, rows: changedRows, key: n.keyIndex, hash: n.hashIndex)
            addCounts(local)
        }
        return SinkWriteOutcome(written: batch.count, childRows: childRows)
    }

    /// Ends the run: for `replace`, swaps the new table in if the run was complete, else drops it; closes
    /// the connections.
    public func finish(complete: Bool) throws { try finish(complete: complete, clean: false) }

    /// Ends the run: with `--purge-missing` and a `clean` run, deletes stored records (and their child rows)
    /// the run did not contain; for `replace`, swaps the new table in if the run was complete, else drops it;
    /// closes the connections.
    public func finish(complete: Bool, clean: Bool) throws {
        defer {
            for l in lanes { l.session?.close() }
            lanes = []
        }
        if !deferredKeys.isEmpty, let lane = lanes.first {
            // Built even after an aborted run: the rows that committed are there to stay.
            do { try buildDeferredKeys(on: try session(lane)) } catch let f as SluiceError where f.fromPostgres {
                throw f.fatal("PostgreSQL: building the child tables' keys: ")
            }
        }
        if let n = nested, options.changes.purgeMissing, let kc = n.keyColumn, let lane = lanes.first,
            n.stored != nil || n.seenTable != nil
        {
            do {
                let s = try session(lane)
                if let stored = n.stored {
                    try purge(on: s, clean: clean, complete: complete) {
                        // The stored keys the run never saw.
                        let gone = stored.unseen()
                        let column = Column(type: .int64, capacity: gone.count)
                        for k in gone { column.append(int64: k) }
                        let keys = RecordBatch(
                            schema: Schema([Field("k", .int64)]), columns: [column], count: gone.count)
                        var binds = PostgresBindings()
                        binds.append(try arrayParameter(keys, column: 0, as: kc, rows: nil, lane.encoder))
                        for child in n.children { try s.execute(child.delete, binds) }
                        return try s.rows(
                            "WITH d AS (DELETE FROM \(SQL.table(table)) WHERE \(SQL.ident(kc.name)) = ANY($1) RETURNING 1) "
                                + "SELECT count(*)::int8 FROM d", binds)
                    }
                } else if let seen = n.seenTable {
                    try purge(on: s, clean: clean, complete: complete) {
                        // The keys absent from the table of keys the run saw.
                        let k = SQL.ident(kc.name)
                        try s.execute("ANALYZE \(SQL.table(seen))")
                        try s.execute(
                            "CREATE TEMP TABLE sluice_gone ON COMMIT DROP AS SELECT t.\(k) AS k FROM \(SQL.table(table)) t "
                                + "WHERE NOT EXISTS (SELECT 1 FROM \(SQL.table(seen)) s WHERE s.k = t.\(k))")
                        for child in n.children {
                            let link = SQL.ident(child.columns[0].name)
                            try s.execute(
                                "DELETE FROM \(SQL.table(child.table)) c USING sluice_gone g WHERE c.\(link) = g.k")
                        }
                        return try s.rows(
                            "WITH d AS (DELETE FROM \(SQL.table(table)) t USING sluice_gone g WHERE t.\(k) = g.k RETURNING 1) "
                                + "SELECT count(*)::int8 FROM d")
                    }
                    try s.execute("DROP TABLE IF EXISTS \(SQL.table(seen))")
                }
            } catch let f as SluiceError where f.fromPostgres {
                throw f.fatal("PostgreSQL: purging missing records: ")
            }
        }
        guard case .replace = mode, let lane = lanes.first else { return }
        do {
            let s = try session(lane)
            if complete {
                let old = SQL.table(table)
                let bare = SQL.ident(String(table.split(separator: ".").last!))
                try s.execute("BEGIN")
                try s.execute("DROP TABLE IF EXISTS \(old)")
                try s.execute("ALTER TABLE \(SQL.table(writeTable)) RENAME TO \(bare)")
                try s.execute("COMMIT")
            } else {
                try s.execute("DROP TABLE IF EXISTS \(SQL.table(writeTable))")
            }
        } catch let f as SluiceError where f.fromPostgres {
            throw f.fatal("PostgreSQL: ")
        }
    }
}

extension PostgresBinaryEncoder {
    /// Drops what was written after `offset`.
    func rewind(to offset: Int) {
        precondition(offset <= count)
        count = offset
    }
}

/// Keeps batches that share keys in input order when several writers upsert or update at once.
///
/// The dispatching thread registers each batch's key hashes in input order (``register(_:sequence:)``). A
/// writer about to run a batch's merge or update waits while an earlier batch that is not done yet shares a
/// key hash with it; ``release(_:)`` (the batch is committed, rejected or failed) wakes the waiters. Waits only
/// ever point at earlier batches, which writers took from the queue first, so they cannot form a cycle. A hash
/// collision only makes a batch wait when it need not.
final class KeyOrder: @unchecked Sendable {
    private let key: [String]
    private let condition = NSCondition()
    private var pending: [Int: Set<UInt64>] = [:]

    init(key: [String]) { self.key = key }

    /// Records the key hashes of batch `sequence`.
    func register(_ batch: RecordBatch, sequence: Int) {
        let columns = key.compactMap { batch.schema.index(of: $0) }.map { batch.columns[$0] }
        let views = columns.map(\.view)
        let isBytes = columns.map { $0.type == .bytes || $0.type == .string }
        var hashes = Set<UInt64>(minimumCapacity: batch.count)
        withExtendedLifetime(batch) {
            for row in 0..<batch.count {
                var h: UInt64 = 0xCBF2_9CE4_8422_2325
                for (c, v) in views.enumerated() {
                    if v.isNull(row) {
                        h = (h ^ 0xFF) &* 0x100_0000_01B3
                    } else if isBytes[c] {
                        let (p, n) = v.bytes(row)
                        for i in 0..<n { h = (h ^ UInt64(p[i])) &* 0x100_0000_01B3 }
                        h = (h ^ UInt64(n)) &* 0x100_0000_01B3
                    } else {
                        h = (h ^ v.slot(row)) &* 0x100_0000_01B3
                    }
                }
                hashes.insert(h)
            }
        }
        condition.lock()
        pending[sequence] = hashes
        condition.unlock()
    }

    /// Blocks while an earlier, unfinished batch shares a key hash with batch `sequence`.
    func waitForEarlierBatchesSharingKeys(_ sequence: Int) {
        condition.lock()
        defer { condition.unlock() }
        while let mine = pending[sequence],
            pending.contains(where: { $0.key < sequence && !$0.value.isDisjoint(with: mine) })
        {
            condition.wait()
        }
    }

    /// Batch `sequence` is done: later batches sharing its keys may go.
    func release(_ sequence: Int) {
        condition.lock()
        if pending.removeValue(forKey: sequence) != nil { condition.broadcast() }
        condition.unlock()
    }
}

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
    ) throws -> StoredHashes? {
        let t = SQL.table(table)
        let k = SQL.ident(key)
        let n = try s.rows("SELECT count(*)::int8 FROM (SELECT 1 FROM \(t) LIMIT \(limit + 1)) x")
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
        try s.forEachRow("SELECT \(k)::int8, \(h), \(sh) FROM \(t) ORDER BY \(k)") { row in
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

    /// A batch's rows: new and changed (ascending), and how many are unchanged. Of a key repeated in the
    /// batch, only the last occurrence counts. Marks every stored key of the batch as seen. `hash` nil: every
    /// stored record counts as changed.
    func classify(_ batch: RecordBatch, key: Int, hash: Int?) -> (new: [Int], changed: [Int], unchanged: Int) {
        let keyColumn = batch.columns[key]
        let hashColumn = hash.map { batch.columns[$0] }
        var inBatch = Set<Int64>(minimumCapacity: batch.count)
        var new: [Int] = []
        var changedRows: [Int] = []
        var unchanged = 0
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
                unchanged += 1
            } else {
                changedRows.append(row)
            }
        }
        return (new.reversed(), changedRows.reversed(), unchanged)
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
