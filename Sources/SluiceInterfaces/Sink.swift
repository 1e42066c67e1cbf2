import SluiceCore
import SluiceReport

/// How a sink writes rows.
public enum WriteMode: Sendable, Hashable, CustomStringConvertible {
    /// Insert every row.
    case append
    /// Insert, or update the row with the same key.
    case upsert(key: [String])
    /// Replace the table's contents with the input (swapped in only after a complete run).
    case replace
    /// Update existing rows: set the `set` columns of the row whose `key` matches, optionally only where the SQL
    /// condition `filter` holds for the target row. Input rows without a matching target row change nothing.
    case update(key: [String], set: [String], filter: String?)

    /// `append`, `upsert on id`, `replace`, `update mime_type on blobid`.
    public var description: String {
        switch self {
        case .append: return "append"
        case .upsert(let key): return "upsert on \(key.joined(separator: ","))"
        case .replace: return "replace"
        case .update(let key, let set, _):
            return "update \(set.joined(separator: ",")) on \(key.joined(separator: ","))"
        }
    }

    /// The key columns (upsert and update), or none.
    public var keyColumns: [String] {
        switch self {
        case .upsert(let k), .update(let k, _, _): return k
        case .append, .replace: return []
        }
    }
}

/// How a keyed sink uses a content-hash column: skip records whose stored hash is the same, and remove stored
/// records a complete run did not contain.
public struct ChangeTracking: Sendable, Hashable {
    /// The column holding each record's content hash (nil: none; every stored record counts as updated).
    public var hashColumn: String?
    /// Write only records that are new or whose hash differs from the stored one.
    public var skipUnchanged: Bool
    /// After a complete run with no rejected record, delete stored records (and their child rows) whose key
    /// the run did not contain.
    public var purgeMissing: Bool
    /// The column holding each record's source hash (a hash of its raw input bytes, ``SourceHash``), which
    /// lets `--skip-unchanged` skip decoding records whose bytes did not change; nil: none.
    public var sourceHashColumn: String?

    /// Creates the settings.
    public init(
        hashColumn: String? = nil, skipUnchanged: Bool = false, purgeMissing: Bool = false,
        sourceHashColumn: String? = nil
    ) {
        self.hashColumn = hashColumn
        self.skipUnchanged = skipUnchanged
        self.purgeMissing = purgeMissing
        self.sourceHashColumn = sourceHashColumn
    }

    /// Checks the settings against the mode and schema.
    /// - Throws: ``SluiceError`` (`.sink`, kind `.fatal`) naming what is missing.
    public func validate(mode: WriteMode, schema: Schema) throws {
        if skipUnchanged || purgeMissing {
            guard case .upsert(let key) = mode, key.count == 1 else {
                throw SluiceError.sink(
                    .fatal, "--skip-unchanged and --purge-missing need --mode upsert with a single key column")
            }
        }
        if skipUnchanged {
            guard let h = hashColumn, schema.index(of: h) != nil else {
                throw SluiceError.sink(
                    .fatal,
                    "--skip-unchanged needs a content-hash column in the input (\(hashColumn ?? "none configured"))")
            }
        }
        if !schema.children.isEmpty {
            switch mode {
            case .append: break
            case .upsert(let key) where key.count == 1: break
            default:
                throw SluiceError.sink(
                    .fatal, "nested records (child tables) are written with --mode append or upsert on one key column")
            }
        }
    }
}

/// Time a sink spent per phase: encoding values, the write itself, committing.
public struct SinkTimings: Sendable {
    /// Preparing values (binding, encoding).
    public var encode = StageClock()
    /// Executing the write.
    public var write = StageClock()
    /// Committing.
    public var commit = StageClock()

    /// Zeroed timings.
    public init() {}
}

/// The rows of a batch that a sink refused while writing the rest.
public struct SinkWriteOutcome: Sendable {
    /// Rows written.
    public var written: Int
    /// Rows refused, with the reason.
    public var rejected: [(row: Int, reason: String)]
    /// Child-table rows written with them (nested records).
    public var childRows: Int

    /// Creates an outcome.
    public init(written: Int, rejected: [(row: Int, reason: String)] = [], childRows: Int = 0) {
        self.written = written
        self.rejected = rejected
        self.childRows = childRows
    }
}

/// Which writer writes a batch, and which batch it is.
public struct WriteContext: Sendable, Hashable {
    /// The writer (0 ..< ``SinkBase/writers``): a sink keeps one connection per writer.
    public var writer: Int
    /// The batch's number in input order (the one ``SinkBase/willWrite(_:sequence:)`` saw), or nil when
    /// the caller keeps no order (a sink then orders nothing).
    public var sequence: Int?

    /// A context: writer 0, no sequence, unless given.
    public init(writer: Int = 0, sequence: Int? = nil) {
        self.writer = writer
        self.sequence = sequence
    }
}

/// How a run ended, for a sink's last step.
public struct RunEnd: Sendable, Hashable {
    /// The whole input was read (e.g. `replace` swaps tables only then).
    public var complete: Bool
    /// Complete, with no record rejected anywhere: destructive steps such as purging records absent from
    /// the input require it.
    public var clean: Bool

    /// An end.
    public init(complete: Bool, clean: Bool) {
        self.complete = complete
        self.clean = clean
    }
}

/// What every sink tells the runtime, whichever way it writes: its target, its writers, the order hooks the
/// dispatching thread calls, and its counters. A sink is either a ``BatchSink`` (blocking calls, each writer on
/// a thread of its own) or an ``AsyncBatchSink`` (async calls, each writer a task); ``kind`` says which.
///
/// Each batch commits on its own (one transaction per batch), so that a crash leaves only whole batches. A
/// sink that can tell exactly which rows failed returns them in ``SinkWriteOutcome``; one that can only fail
/// the whole batch throws ``SluiceError`` with kind ``SluiceError/Kind/bisect``, and the runtime bisects;
/// kind ``SluiceError/Kind/retry`` is retried with back-off.
///
/// With ``writers`` = 1 (the default) every write comes from one writer, in input order. With more, that many
/// writers write at once, each always passing its own ``WriteContext/writer`` (so it can keep one connection
/// per writer); batches then commit in no fixed order unless the sink orders them itself:
/// ``willWrite(_:sequence:)`` sees every batch on one thread in input order before any writer does, and
/// ``didWrite(sequence:)`` says when a batch is done for good, so a sink can make a batch wait for an earlier
/// one it conflicts with (the same keys, for upserts).
public protocol SinkBase: AnyObject, Sendable {
    /// A description of the target for reports.
    var target: String { get }
    /// How many writers may write at once. Default: 1. Read after the sink opened.
    var writers: Int { get }
    /// Which calling convention the sink has (set by conforming to ``BatchSink`` or ``AsyncBatchSink``).
    var kind: SinkKind { get }
    /// Called on the dispatching thread, in input order, before batch number `sequence` goes to a writer.
    /// Default: nothing.
    func willWrite(_ batch: RecordBatch, sequence: Int)
    /// Called once batch `sequence` is done for good — committed, rejected, or failed — after every retry
    /// and bisection, and for a batch announced to ``willWrite(_:sequence:)`` that was never written because
    /// the run stopped. Default: nothing.
    func didWrite(sequence: Int)
    /// Inserted / updated / unchanged / purged counts, for sinks that tell them apart. Default: nil.
    var changes: ChangeCounts? { get }
    /// With `--skip-unchanged` and a source-hash column: the stored records' source hashes, read at open, so
    /// that decoders skip records whose raw bytes did not change. Default: nil.
    var storedSourceHashes: StoredSourceHashes? { get }
    /// Records the decoders skipped as unchanged (``storedSourceHashes``), by key: the sink counts them as
    /// unchanged and as seen (for `--purge-missing`). Called on one thread, in input order. Default: nothing.
    func noteUnchanged(keys: [Int64])
    /// Per-phase timings so far; read from any thread while the run goes.
    var timings: SinkTimings { get }
}

/// A sink's calling convention, for the runtime to drive it.
public enum SinkKind: Sendable {
    /// Blocking calls: each writer runs on a dedicated thread (SQLite, files).
    case blocking(any BatchSink)
    /// Async calls: each writer is a task holding its connection (network stores).
    case async(any AsyncBatchSink)
}

/// A sink whose calls block: the runtime calls ``open(schema:)`` and ``finish(_:)`` on a thread of its own
/// and runs each writer on a dedicated thread (a store whose writes are CPU and disk work, such as SQLite).
public protocol BatchSink: SinkBase {
    /// Prepares the target for rows of `schema` (creates the table, prepares statements).
    func open(schema: Schema) throws
    /// Writes and commits one batch (or, after a bisection, part of it) on the context's writer.
    func write(_ batch: RecordBatch, context: WriteContext) throws -> SinkWriteOutcome
    /// Ends the run.
    func finish(_ end: RunEnd) throws
    /// Reads the named columns of every row stored in the target table, as text (nil for NULL), calling
    /// `body` once per row; called after ``open(schema:)`` and before any write, so that a stage can resume
    /// from what an earlier run stored. A table that does not exist yet has no rows. Returns false when the
    /// sink cannot read its target. Default: false.
    func readStored(columns: [String], _ body: ([String?]) throws -> Void) throws -> Bool
}

/// A sink whose calls are async (a network store): each writer is a task that holds its connection for its
/// lifetime, opened and closed by ``withWriter(_:_:)`` around the writer's whole run, as postgres-nio's
/// `withConnection` scopes a connection to a closure.
public protocol AsyncBatchSink: SinkBase {
    /// Prepares the target for rows of `schema` (creates the table, prepares statements).
    func open(schema: Schema) async throws
    /// Runs writer number `writer` (0 ..< ``SinkBase/writers``): opens what the writer holds (its connection),
    /// calls `body` with the writer, and closes it when `body` returns or throws.
    func withWriter(_ writer: Int, _ body: (any AsyncSinkWriter) async throws -> Void) async throws
    /// Ends the run, after every writer ended.
    func finish(_ end: RunEnd) async throws
    /// Reads the named columns of every row stored in the target table, as text (nil for NULL), calling
    /// `body` once per row; see ``BatchSink/readStored(columns:_:)``. Default: false.
    func readStored(columns: [String], _ body: @Sendable ([String?]) throws -> Void) async throws -> Bool
}

/// One writer of an ``AsyncBatchSink``, used by one task at a time for the life of ``AsyncBatchSink/withWriter(_:_:)``.
public protocol AsyncSinkWriter: AnyObject {
    /// Writes and commits one batch (or, after a bisection, part of it); `sequence` as in ``WriteContext``.
    func write(_ batch: RecordBatch, sequence: Int?) async throws -> SinkWriteOutcome
}

extension SinkBase {
    /// One writer.
    public var writers: Int { 1 }
    /// Does nothing.
    public func willWrite(_ batch: RecordBatch, sequence: Int) {}
    /// Does nothing.
    public func didWrite(sequence: Int) {}
    /// None.
    public var changes: ChangeCounts? { nil }
    /// None.
    public var storedSourceHashes: StoredSourceHashes? { nil }
    /// Does nothing.
    public func noteUnchanged(keys: [Int64]) {}
}

extension BatchSink {
    /// Blocking.
    public var kind: SinkKind { .blocking(self) }
    /// Cannot read: false.
    public func readStored(columns: [String], _ body: ([String?]) throws -> Void) throws -> Bool { false }
}

extension AsyncBatchSink {
    /// Async.
    public var kind: SinkKind { .async(self) }
    /// Cannot read: false.
    public func readStored(columns: [String], _ body: @Sendable ([String?]) throws -> Void) async throws -> Bool {
        false
    }
}

/// Drops every batch (for measuring the framework).
public final class DiscardSink: BatchSink, @unchecked Sendable {
    /// Rows received.
    public private(set) var rows = 0
    /// Creates the sink.
    public init() {}
    /// `discard`.
    public var target: String { "discard" }
    /// Does nothing.
    public func open(schema: Schema) throws {}
    /// Counts and drops the batch.
    public func write(_ batch: RecordBatch, context: WriteContext) throws -> SinkWriteOutcome {
        rows += batch.count
        return SinkWriteOutcome(written: batch.count)
    }
    /// Does nothing.
    public func finish(_ end: RunEnd) throws {}
    /// No phases.
    public var timings: SinkTimings { SinkTimings() }
}

/// A CPU-bound step between decoding and the sink, run by the decode workers.
public protocol Transform: Sendable {
    /// Name for reports.
    var name: String { get }
    /// The schema of the transform's output for `input`.
    func outputSchema(for input: Schema) throws -> Schema
    /// Transforms one batch.
    func apply(_ batch: RecordBatch) throws -> RecordBatch
}

/// Conventions the table sinks share, so that SQLite and PostgreSQL name and say the same things the same way.
public enum TableConventions {
    /// The table a `replace` run writes into and swaps in for `table` only after a complete run:
    /// `<table>__sluice_replace`. A persisted name: a run that was killed leaves it behind, and the next
    /// `replace` run drops it first.
    public static func replaceTable(for table: String) -> String { table + "__sluice_replace" }

    /// Why `--purge-missing` deleted nothing in a run that was not clean.
    public static func purgeSkippedReason(complete: Bool) -> String {
        complete ? "some records were rejected, so absent keys may only be unreadable" : "the run did not complete"
    }

    /// The error for a target table that lacks columns the run needs: `table t in x.db has no column(s) a, b
    /// (it has c, d)`, or `… to resume from`.
    /// - Parameters:
    ///   - table: what the table is (`table events`, `child table release_label`).
    ///   - location: where it is, when that helps (the database file).
    ///   - existing: the columns it has, to show.
    ///   - purpose: what the columns are needed for (`to resume from`).
    public static func missingColumns(
        _ table: String, in location: String? = nil, missing: [String], existing: [String]? = nil,
        purpose: String? = nil
    ) -> SluiceError {
        var text = table + (location.map { " in \($0)" } ?? "") + " has no column(s) "
        text += missing.joined(separator: ", ")
        if let purpose { text += " " + purpose }
        if let existing { text += " (it has \(existing.joined(separator: ", ")))" }
        return SluiceError.sink(.fatal, text)
    }
}
