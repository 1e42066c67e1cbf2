import SluiceCore
import SluiceReport
import Synchronization

/// Settings a source receives when the run opens it.
public struct SourceContext: Sendable {
    /// Raw bytes per chunk.
    public var chunkBytes: Int
    /// Maximum rows per batch (for sources that build batches themselves).
    public var maxRows: Int
    /// The batching policy (latency applies to slow inputs such as pipes).
    public var batching: BatchingPolicy
    /// Whether the run was asked to stop; sources that wait for input (pipes) check it while waiting.
    public var isCancelled: @Sendable () -> Bool

    /// Creates a context.
    public init(
        chunkBytes: Int, maxRows: Int, batching: BatchingPolicy = BatchingPolicy(),
        isCancelled: @escaping @Sendable () -> Bool = { false }
    ) {
        self.chunkBytes = chunkBytes
        self.maxRows = maxRows
        self.batching = batching
        self.isCancelled = isCancelled
    }
}

/// One unit of work from a source: raw bytes for the decoders, or a batch that is already built.
public enum SourceItem: Sendable {
    /// Raw records to decode.
    case chunk(Chunk)
    /// Rows ready for transforms and the sink.
    case batch(RecordBatch)
}

/// Progress counters a source keeps; safe to read from any thread.
public final class SourceProgress: Sendable {
    private let read = Atomic<Int64>(0)
    private let decoded = Atomic<Int64>(0)
    private let total = Atomic<Int64>(-1)
    private let waited = Atomic<UInt64>(0)

    /// Creates zeroed counters.
    public init() {}
    /// Bytes consumed as stored (compressed bytes for gzip input).
    public var bytesRead: Int64 { read.load(ordering: .relaxed) }
    /// Bytes produced after decompression.
    public var bytesDecoded: Int64 { decoded.load(ordering: .relaxed) }
    /// Total input size as stored, when known.
    public var totalBytes: Int64? {
        let t = total.load(ordering: .relaxed)
        return t >= 0 ? t : nil
    }
    /// Adds to the counters.
    public func add(read r: Int64, decoded d: Int64) {
        read.add(r, ordering: .relaxed)
        decoded.add(d, ordering: .relaxed)
    }
    /// Nanoseconds the source spent waiting for input to arrive (a pipe), as opposed to reading it.
    public var waitNanos: UInt64 { waited.load(ordering: .relaxed) }
    /// Adds waiting time.
    public func addWait(_ nanos: UInt64) { waited.add(nanos, ordering: .relaxed) }
    /// Sets the known total.
    public func setTotal(_ t: Int64?) { total.store(t ?? -1, ordering: .relaxed) }
}

/// What every source tells the runtime, whichever way it reads: its name, its progress and the hooks the run
/// calls around commits. A source is either a ``Source`` (blocking calls, read on a thread of its own) or an
/// ``AsyncSource`` (async calls, read by a task); ``kind`` says which.
public protocol SourceBase: AnyObject, Sendable {
    /// A description for reports (`events.csv (csv, gzip)`).
    var name: String { get }
    /// Which calling convention the source has (set by conforming to ``Source`` or ``AsyncSource``).
    var kind: SourceKind { get }
    /// Progress counters.
    var progress: SourceProgress { get }
    /// Called after `batch` and every batch before it were committed by the sink, in input order, on the
    /// writer's thread or task (a resumable source records its position here). Default: nothing.
    func committed(_ batch: RecordBatch)
    /// Hands the source what the sink already holds, after the sink opened and before the first `next`, so its
    /// decoders can skip records whose raw bytes are unchanged. Default: nothing.
    func useStoredSourceHashes(_ stored: StoredSourceHashes)
    /// Called once when the run has ended, after the sink finished: `committedAll` is true when every record
    /// read was committed (a complete run without failure). A push source fails what is still waiting for
    /// its acknowledgement here. Default: nothing.
    func runEnded(committedAll: Bool)
    /// Lines for the run report, read once after the run ended (a renamed header column, paths a mapping
    /// ignored). Default: none.
    var reportLines: [ReportLine] { get }
}

/// A source's calling convention, for the runtime to drive it.
public enum SourceKind: Sendable {
    /// Blocking calls, made from the pipeline's reader thread.
    case blocking(any Source)
    /// Async calls, made from the pipeline's reader task.
    case async(any AsyncSource)
}

/// Where records come from, with blocking calls: `open` and `next` are called from the pipeline's reader
/// thread only (files, pipes: reading and decompressing are work for a dedicated thread).
public protocol Source: SourceBase {
    /// Opens the input and settles the schema (declared or inferred).
    func open(context: SourceContext) throws -> Schema
    /// The next unit of work, or nil at the end of the input.
    func next() throws -> SourceItem?
}

/// Where records come from, with async calls (a database query over the network): `open` and `next` are called
/// from the pipeline's reader task only, one at a time.
public protocol AsyncSource: SourceBase {
    /// Opens the input and settles the schema.
    func open(context: SourceContext) async throws -> Schema
    /// The next unit of work, or nil at the end of the input.
    func next() async throws -> SourceItem?
    /// Called once by the reader task when it stops reading — the end of the input, a stop or a failure —
    /// so that the source releases its connection. Default: nothing.
    func close() async
}

extension SourceBase {
    /// Does nothing.
    public func committed(_ batch: RecordBatch) {}
    /// Does nothing.
    public func useStoredSourceHashes(_ stored: StoredSourceHashes) {}
    /// Does nothing.
    public func runEnded(committedAll: Bool) {}
    /// None.
    public var reportLines: [ReportLine] { [] }
}

extension Source {
    /// Blocking.
    public var kind: SourceKind { .blocking(self) }
}

extension AsyncSource {
    /// Async.
    public var kind: SourceKind { .async(self) }
    /// Does nothing.
    public func close() async {}
}
