import SluiceCore
import SluiceReport

/// An I/O-bound step between the decoders and the sink (an HTTP fetch, a remote call): many records are in
/// flight at once, at most ``concurrency``, and each finishes whenever its I/O does.
///
/// The runtime owns the slots, the ordering and the batching: it starts a record when a slot is free
/// (``start(_:row:completion:)``), collects finished records into output batches of the pipeline's batch
/// size, and hands a batch to the sink when it is full or its first record has waited the batching
/// latency — so the sink writes in batches, never per record, and slots never wait for a batch to drain.
/// Output rows are in completion order, not input order.
public protocol IOTransform: AnyObject, Sendable {
    /// Name for reports (`fetch`).
    var name: String { get }
    /// Records in flight at once.
    var concurrency: Int { get }
    /// The output schema: `input`'s fields, then the fields each ``IOCompletion/finish(_:)`` supplies.
    func outputSchema(for input: Schema) throws -> Schema
    /// Called once the sink is open and before the first record, so that the transform can read what an
    /// earlier run stored (resume state) through `stored`.
    func open(stored: StoredRows) async throws
    /// Starts work on row `row` of `batch`. Returns false to drop the row without work (an earlier run
    /// finished it; it is not written again); otherwise `completion` must be finished exactly once, from any
    /// thread.
    func start(_ batch: RecordBatch, row: Int, completion: IOCompletion) -> Bool
    /// Called on the stage's hand-off thread before an output batch goes to the sink: makes what its rows
    /// describe durable (e.g. syncs written files).
    func willEmit(_ batch: RecordBatch) throws
    /// Called once when the run starts stopping (SIGINT, an abort): records waiting on purpose (a retry's
    /// back-off) should finish now. Records in flight may still finish normally. Default: nothing.
    func interrupt()
    /// Called once every started record has finished: releases clients and connections.
    func close()
    /// Summary lines for the run report.
    var reportLines: [ReportLine] { get }
    /// Records that failed after their retries and were written with their reason (a clean run with any exits
    /// with status 4). Safe to read from any thread. Default: 0.
    var failedRecords: Int64 { get }
}

extension IOTransform {
    /// Does nothing.
    public func interrupt() {}
    /// None.
    public var failedRecords: Int64 { 0 }
}

/// The handle of one started record: call ``finish(_:)`` once with its output values.
public struct IOCompletion: Sendable {
    private let body: @Sendable ([Value]) -> Void

    /// A handle that passes the finished values to `body` (the runtime's slot bookkeeping).
    public init(_ body: @escaping @Sendable ([Value]) -> Void) { self.body = body }

    /// Finishes the record with the values of the transform's added fields, in schema order.
    public func finish(_ values: [Value]) { body(values) }
}

/// What a sink already stores, for a stage that resumes from an earlier run: the rows of the target table,
/// column by column as text. It reads through the sink's own ``BatchSink/readStored(columns:_:)`` or
/// ``AsyncBatchSink/readStored(columns:_:)``.
public struct StoredRows: Sendable {
    private let reader: @Sendable ([String], @escaping @Sendable ([String?]) throws -> Void) async throws -> Bool

    /// Rows read by `reader` (the runtime makes it from the sink).
    public init(
        _ reader: @escaping @Sendable ([String], @escaping @Sendable ([String?]) throws -> Void) async throws -> Bool
    ) {
        self.reader = reader
    }

    /// Calls `body` with the named columns of every stored row (nil for NULL). A table that does not exist
    /// yet has no rows. Returns false when the sink cannot read its target.
    /// - Throws: ``SluiceError`` when a column is missing or the read fails; what `body` throws.
    public func forEach(columns: [String], _ body: @escaping @Sendable ([String?]) throws -> Void) async throws -> Bool
    {
        try await reader(columns, body)
    }

    /// No stored rows (a sink that cannot read its target).
    public static let none = StoredRows { _, _ in false }
}
