import Foundation
import Logging
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceInterfaces
import SluiceReport
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

/// Writes batches into a PostgreSQL table, one connection per writer lane.
///
/// An ``AsyncBatchSink``: each writer lane is a task that holds its own connection for its lifetime
/// (``withWriter(_:_:)``); setting up the table at open and the end of the run use a session of their own.
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
public final class PostgresSink: AsyncBatchSink, @unchecked Sendable {
    /// The server.
    public let location: PostgresLocation
    /// The table (optionally `schema.table`).
    public let table: String
    /// The write mode.
    public let mode: WriteMode
    /// Options.
    public let options: PostgresSinkOptions

    var columns: [PostgresColumn] = []
    var inputIndex: [Int] = []
    var writeTable: String
    /// Writer lanes (set at open).
    var writerCount = 1
    /// Whether ``open(schema:)`` succeeded.
    var opened = false
    let timingLock = NSLock()
    /// Keeps batches that share keys in input order across writers (upsert and update with several writers).
    var keyOrder: KeyOrder?
    /// With several writers appending: commits in input order.
    var commitOrder: CommitOrder?
    var sinkTimings = SinkTimings()
    var directCopy = false
    var statements = Statements()
    /// Settings every writer session runs once after connecting.
    var sessionSettings: [String] = []
    /// Child tables, lookups and purge bookkeeping, for nested records and content hashes.
    var nested: Nested?
    /// `ALTER TABLE … ADD PRIMARY KEY` for child tables this run created, built once their rows are in.
    let deferredKeys = DeferredKeys()
    var counts = ChangeCounts()

    /// Where its connections log.
    public let logger: Logger

    /// Creates a sink for `table` at `url` (`postgres://user@host/db`), its connections logging to `logger`.
    /// - Throws: ``SluiceError`` (`.config`) for a bad URL.
    public init(
        url: String, table: String, mode: WriteMode = .append, options: PostgresSinkOptions = PostgresSinkOptions(),
        logger: Logger = Logger(label: "sluice.postgres")
    ) throws {
        location = try PostgresLocation(url: url)
        self.logger = logger
        self.table = table
        self.mode = mode
        self.options = options
        writeTable = table
    }

    /// `postgres://user@host:port/db table T (mode)`.
    public var target: String { "\(location) table \(table) (\(mode))" }

    /// Writer connections.
    public var writers: Int { writerCount }

    /// Per-phase timings, summed over writers.
    public var timings: SinkTimings {
        timingLock.withLock { sinkTimings }
    }

    /// The SQL statements of a run, built once at open.
    struct Statements {
        var copy = ""
        var copyStage = ""
        var createStage = ""
        var merge = ""
        var mergeDedup = ""
        /// The merge's `ON CONFLICT` clause (upserts), for statements that merge rows from elsewhere.
        var conflict = ""
        var update = ""
    }

    /// A child table as the sink writes it.
    struct ChildTarget {
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
    struct Nested {
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
        /// With `--skip-unchanged` and a source-hash column: `UPDATE … SET source_hash` for unchanged records
        /// decoded from other bytes (reformatted, or hashed by another decoder version), so the next update run
        /// skips them without decoding; the column's input index and encoding.
        var refreshSource: String?
        var sourceIndex = -1
        var sourceColumn: PostgresColumn?
    }

    /// Inserted / updated / unchanged / purged counts (upserts of nested or hashed records).
    public var changes: ChangeCounts? {
        guard let n = nested, n.lookup != nil else { return nil }
        return timingLock.withLock { counts }
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

    /// One writer lane: its connection, encoder and staging state, used by one task for the lane's life.
    final class Lane: AsyncSinkWriter {
        unowned let sink: PostgresSink
        let index: Int
        var session: PostgresSession?
        let encoder = PostgresBinaryEncoder()
        var stageReady = false

        init(sink: PostgresSink, index: Int) {
            self.sink = sink
            self.index = index
        }

        /// Writes and commits one batch on the lane's connection.
        func write(_ batch: RecordBatch, sequence: Int?) async throws -> SinkWriteOutcome {
            try await sink.write(batch, lane: self, sequence: sequence)
        }
    }

    /// Connects, creates the table if it does not exist and checks the columns, on a session of its own.
    public func open(schema: Schema) async throws {
        let first: PostgresSession
        do { first = try await PostgresSession.connect(location, logger: logger) } catch let f as SluiceError {
            // Nothing has run yet: a server that cannot be reached is a setup problem, like a bad path.
            throw SluiceError(.io, f.message)
        }
        do {
            try await setUp(schema: schema, on: first)
            // The settings every writer runs, tried once here so that a bad one fails the open.
            for setting in sessionSettings { try await first.execute(setting) }
        } catch let f as SluiceError where f.fromPostgres {
            await first.close()
            throw f.fatal("PostgreSQL: ")
        } catch {
            await first.close()
            throw error
        }
        await first.close()
        writerCount = max(1, options.writers ?? PostgresSinkOptions.defaultWriters)
        if writerCount > 1, !mode.keyColumns.isEmpty {
            keyOrder = KeyOrder(key: mode.keyColumns)
        }
        if writerCount > 1, nested == nil, case .append = mode {
            commitOrder = CommitOrder()
        }
        opened = true
    }

    /// Runs writer lane `writer`: connects (a failure here is retried by the lane's first write), calls `body`,
    /// and closes the lane's connection when `body` returns or throws.
    public func withWriter(_ writer: Int, _ body: (any AsyncSinkWriter) async throws -> Void) async throws {
        guard opened, writer < writerCount else { throw SluiceError.sink(.fatal, "the PostgreSQL sink is not open") }
        let lane = Lane(sink: self, index: writer)
        _ = try? await session(lane)
        do {
            try await body(lane)
        } catch {
            await lane.session?.close()
            throw error
        }
        await lane.session?.close()
    }

    /// Notes the keys of batch `sequence` (upsert and update with several writers), so a later batch that
    /// shares one waits for it.
    public func willWrite(_ batch: RecordBatch, sequence: Int) { keyOrder?.register(batch, sequence: sequence) }

    /// Lets later batches that share keys with batch `sequence` (upsert, update), or that come after it
    /// (append), go ahead.
    public func didWrite(sequence: Int) {
        keyOrder?.release(sequence)
        commitOrder?.release(sequence)
    }

    /// Reads the named columns of the stored table, as text, on a session of its own. A table that does not
    /// exist has no rows.
    /// - Throws: ``SluiceError`` when the table lacks a column or the query fails.
    public func readStored(columns: [String], _ body: @Sendable ([String?]) throws -> Void) async throws -> Bool {
        guard opened else { return false }
        let table = self.table
        do {
            try await PostgresSession.with(location, logger: logger) { s in
                let existing = try await tableColumns(table, on: s).map(\.0)
                if existing.isEmpty { return }
                let missing = columns.filter { !existing.contains($0) }
                guard missing.isEmpty else {
                    throw TableConventions.missingColumns("table \(table)", missing: missing, purpose: "to resume from")
                }
                let n = columns.count
                try await s.forEachRow(
                    "SELECT \(columns.map { SQL.ident($0) + "::text" }.joined(separator: ", ")) FROM \(SQL.table(table))"
                ) { row in
                    var values: [String?] = []
                    values.reserveCapacity(n)
                    for cell in row { values.append(try cell.decode(String?.self)) }
                    try body(values)
                }
            }
        } catch let f as SluiceError where f.fromPostgres { throw f.fatal("PostgreSQL: ") }
        return true
    }

    /// The lane's session, reconnecting if the last one was lost (a failure is a retry).
    func session(_ lane: Lane) async throws -> PostgresSession {
        if let s = lane.session, !s.isClosed { return s }
        if let old = lane.session { await old.close() }
        lane.session = nil
        lane.stageReady = false
        do {
            let s = try await PostgresSession.connect(location, logger: logger)
            lane.session = s
            for setting in sessionSettings { try await s.execute(setting) }
            return s
        } catch let f as SluiceError where f.fromPostgres {
            var retry = f.asSinkFailure
            retry.kind = .retry
            throw retry
        }
    }

    /// Writes and commits one batch on `lane`. With several writers and a sequence, an upsert or update first
    /// waits for every earlier batch that shares a key with it to be done, so the last occurrence of a key in
    /// the input is the one that stays, as with one writer; batches without shared keys do not wait.
    func write(_ batch: RecordBatch, lane: Lane, sequence: Int?) async throws -> SinkWriteOutcome {
        let s = try await session(lane)
        var t = SinkTimings()
        let a = MonotonicClock.now()
        do {
            let outcome: SinkWriteOutcome
            if let nested {
                outcome = try await writeNested(batch, nested, s, lane, sequence, &t)
            } else if case .update = mode {
                if let sequence { await keyOrder?.waitForEarlierBatchesSharingKeys(sequence) }
                outcome = try await writeUpdate(batch, s, lane, &t)
            } else if directCopy && !isUpsert {
                let (data, rejected) = encodeCopy(batch, lane.encoder, ordinal: false)
                t.encode.busy += MonotonicClock.now() - a
                let b = MonotonicClock.now()
                // An explicit transaction: in an implicit one the server reports the COPY complete before it
                // commits, so a failed commit (a deferred constraint, a connection lost at that moment)
                // would pass for a stored batch.
                try await s.execute("BEGIN")
                try await s.copyIn(statement: statements.copy, data: data)
                let c = MonotonicClock.now()
                t.write.busy += c - b
                try await commit(s, sequence: sequence, from: c, &t)
                outcome = SinkWriteOutcome(written: batch.count - rejected.count, rejected: rejected)
            } else {
                outcome = try await writeStaged(batch, s, lane, sequence, &t)
            }
            t.encode.records += Int64(batch.count)
            t.write.records += Int64(batch.count)
            t.commit.records += Int64(batch.count)
            t.commit.batches += 1
            timingLock.withLock {
                sinkTimings.encode.merge(t.encode)
                sinkTimings.write.merge(t.write)
                sinkTimings.commit.merge(t.commit)
            }
            return outcome
        } catch let f as SluiceError where f.fromPostgres {
            if f.connectionLost {
                lane.session = nil
                await s.close()
            } else {
                _ = try? await s.execute("ROLLBACK")
            }
            throw f.asSinkFailure
        }
    }

    var isUpsert: Bool {
        if case .upsert = mode { return true }
        return false
    }

}
