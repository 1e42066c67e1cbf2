import SluiceCore
import SluiceRuntime
import Synchronization

/// A source that emits rows given as values, in batches of `batchSize`.
public final class ArraySource: Source, @unchecked Sendable {
    /// The schema of the rows.
    public let schema: Schema
    /// The rows.
    public let rows: [[Value]]
    /// Rows per batch.
    public let batchSize: Int
    /// Progress counters (bytes stay 0).
    public let progress = SourceProgress()
    private var position = 0

    /// Creates a source.
    public init(schema: Schema, rows: [[Value]], batchSize: Int = 2) {
        self.schema = schema
        self.rows = rows
        self.batchSize = max(1, batchSize)
    }

    /// `array`.
    public var name: String { "array" }

    /// Returns the schema.
    public func open(context: SourceContext) throws -> Schema { schema }

    /// The next batch of rows.
    public func next() throws -> SourceItem? {
        guard position < rows.count else { return nil }
        let end = min(rows.count, position + batchSize)
        let builder = RecordBatchBuilder(schema: schema, rowCapacity: end - position)
        for r in position..<end {
            for (c, v) in rows[r].enumerated() { try builder.columns[c].append(v) }
            builder.finishRow()
        }
        let batch = builder.build(origin: BatchOrigin(file: "array", firstRecord: Int64(position + 1)))
        position = end
        return .batch(batch)
    }
}

/// A sink that keeps every row it receives, and can be told to fail.
public final class CollectingSink: BatchSink, @unchecked Sendable {
    private let state = Locked<[[Value]]>([])
    private let calls = Locked(0)
    /// Rows for which the whole batch is refused with `.rejectedData` (to exercise bisection).
    public let refuse: @Sendable ([Value]) -> Bool
    /// Rows whose batch fails with `.fatal` (ends the run).
    public let refuseFatally: @Sendable ([Value]) -> Bool
    /// How many `write` calls fail with `.transient` before writes succeed.
    public let transientFailures: Int
    /// Whether `finish` was called with `complete: true`.
    public private(set) var finishedComplete: Bool?
    /// The schema the sink was opened with.
    public private(set) var schema: Schema?

    /// Creates a sink.
    public init(
        transientFailures: Int = 0, refuse: @escaping @Sendable ([Value]) -> Bool = { _ in false },
        refuseFatally: @escaping @Sendable ([Value]) -> Bool = { _ in false }
    ) {
        self.transientFailures = transientFailures
        self.refuse = refuse
        self.refuseFatally = refuseFatally
    }

    /// `collect`.
    public var target: String { "collect" }
    /// The rows written, in order.
    public var rows: [[Value]] { state.withLock { $0 } }
    /// Calls to `write`, failed ones included.
    public var writeCalls: Int { calls.withLock { $0 } }

    /// Records the schema.
    public func open(schema: Schema) throws { self.schema = schema }

    /// Keeps the rows, or fails as configured.
    public func write(_ batch: RecordBatch, context: WriteContext) throws -> SinkWriteOutcome {
        let n = calls.withLock {
            $0 += 1
            return $0
        }
        if n <= transientFailures { throw SluiceError.sink(.retry, "simulated transient failure \(n)") }
        let rows = (0..<batch.count).map { batch.row($0) }
        if rows.contains(where: refuse) { throw SluiceError.sink(.bisect, "simulated constraint violation") }
        if rows.contains(where: refuseFatally) { throw SluiceError.sink(.fatal, "simulated fatal failure") }
        state.withLock { $0.append(contentsOf: rows) }
        return SinkWriteOutcome(written: batch.count)
    }

    /// Records completion.
    public func finish(_ end: RunEnd) throws { finishedComplete = end.complete }
    /// No phases.
    public var timings: SinkTimings { SinkTimings() }
}
