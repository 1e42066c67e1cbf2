import Foundation
import SluiceCore
import SluiceReport
import Synchronization

/// Settings of a pipeline run.
public struct PipelineOptions: Sendable {
    /// When batches are cut. Default: ``BatchingPolicy/init()``.
    public var batching = BatchingPolicy()
    /// Decode workers (CPU-bound stage). Default: one per core.
    public var workers = ProcessInfo.processInfo.activeProcessorCount
    /// The memory budget that sizes chunks and queues. Default: detected, × 0.25.
    public var memory = MemoryBudget.detect()
    /// Abort when rejects exceed this. Default: nil (never abort for rejects).
    public var maxErrors: ErrorLimit? = nil
    /// Where rejected records go. Default: nil (the caller chooses; the CLI puts it beside the target).
    public var rejectsPath: String? = nil
    /// Draw a live progress line on standard error when it is a terminal (a ``ProgressLineObserver``).
    /// Default: false.
    public var showProgress = false
    /// Retry policy for transient sink failures. Default: ``RetryPolicy/init()``.
    public var retry = RetryPolicy()
    /// Who watches the run (metrics, a server's status page); the progress line is added by ``showProgress``.
    /// Default: none.
    public var observers: [any PipelineObserver] = []
    /// How often observers get a snapshot. Default: 250 ms.
    public var progressInterval: Duration = .milliseconds(250)

    /// Default options.
    public init() {}
}

/// Source → transforms → sink over bounded queues, with the run report at the end.
///
/// Stages, each a type that owns its threads, its clock and its queue ends: a ``ReaderStage`` (the source:
/// reading, decompressing, framing), a ``DecodeStage`` of `workers` threads (parsing and transforms, in
/// parallel), a ``DispatchStage`` (input order, line numbers, parse rejects), optionally an I/O stage
/// (``IOTransform``), and a ``WriterStage`` with one lane per sink writer. Queues are bounded, so a slow
/// sink slows the reader and memory stays within the budget.
///
/// Threads where the work blocks or burns CPU (reading a file, decoding, a SQLite sink's writes); tasks where
/// it waits on the network (an ``AsyncSource``'s reads, an ``AsyncBatchSink``'s writer lanes, each holding its
/// connection). The queues between them suspend a task and block a thread.
///
/// ```swift
/// let pipeline = Pipeline(source: source, sink: sink)
/// let report = try await pipeline.run()   // cancelling the task stops reading; what was read is committed
/// ```
public final class Pipeline: Sendable {
    /// The source.
    public let source: any SourceBase
    /// Transforms applied by the decode workers, in order.
    public let transforms: [any Transform]
    /// The I/O-bound stage after the transforms (an HTTP fetch), if any.
    public let io: (any IOTransform)?
    /// The sink.
    public let sink: any SinkBase
    /// The options.
    public let options: PipelineOptions

    /// Set before the run opens (a cancel that comes before the run starts still counts).
    private let cancelledEarly = Atomic<Bool>(false)
    /// The running run, while it runs: its shared state (to stop it) and its sampler (to read its figures).
    private let active = Locked<(control: RunControl, sampler: RunSampler)?>(nil)

    /// Creates a pipeline.
    public init(
        source: any SourceBase, transforms: [any Transform] = [], io: (any IOTransform)? = nil, sink: any SinkBase,
        options: PipelineOptions = PipelineOptions()
    ) {
        self.source = source
        self.transforms = transforms
        self.io = io
        self.sink = sink
        self.options = options
    }

    /// Asks the run to stop reading; what was read is still written, then the report is produced
    /// with outcome ``RunOutcome/interrupted``. Safe to call from any thread or a signal handler's queue.
    public func cancel() {
        cancelledEarly.store(true, ordering: .relaxed)
        active.withLock { $0 }?.control.requestStop()
    }

    /// Runs the pipeline to the end on its stage threads and tasks and returns the report. Cancelling the
    /// calling task is ``cancel()``: reading stops, what was read is written and committed, and the report says
    /// ``RunOutcome/interrupted``.
    ///
    /// - Throws: ``SluiceError`` when the run cannot start (bad configuration, missing input, sink cannot
    ///   open). Failures during the run end it with outcome ``RunOutcome/aborted`` in the report instead.
    public func run() async throws -> RunReport {
        // The run is a task of its own, so that cancelling the caller asks it to stop instead of cancelling
        // the writes of what was read (child tasks would inherit the cancellation).
        let run = Task { try await self.execute() }
        return try await withTaskCancellationHandler {
            try await run.value
        } onCancel: {
            cancel()
        }
    }

    /// The run's figures now, or nil when no run is going.
    public func snapshot() -> RunSnapshot? { active.withLock { $0 }?.sampler.snapshot() }

    /// The run: opens, wires the stages, joins them in order, finishes the sink and builds the report.
    private func execute() async throws -> RunReport {
        let control = RunControl()
        let workers = max(1, options.workers)
        let sizing = BatchSizing.from(budget: options.memory, policy: options.batching, workers: workers)
        let context = SourceContext(
            chunkBytes: sizing.chunkBytes, maxRows: sizing.maxRows, batching: options.batching,
            isCancelled: { [control] in control.stopRequested })
        let schemas = try await open(context: context)
        var observers = options.observers
        if options.showProgress && ProgressLine.isTerminal { observers.append(ProgressLineObserver()) }

        // The queues between the stages, and the stages.
        let chunks = BoundedQueue<(Int, SourceItem)>(capacity: sizing.queueDepth)
        let decoded = ReorderBuffer<Decoded>(window: sizing.reorderWindow, producers: workers)
        let batches = BoundedQueue<(Int, RecordBatch)>(capacity: max(1, sink.writers))
        control.whenAborted {
            chunks.cancel()
            decoded.cancel()
            batches.cancel()
        }
        let rejects = SharedRejects(options.rejectsPath.map { RejectsWriter(path: $0) })
        let reader = ReaderStage(source: source, output: chunks, control: control)
        let decoders = DecodeStage(
            workers: workers, schema: schemas.source, transforms: transforms, sizing: sizing, input: chunks,
            output: decoded)
        let handOff = io.map { io in
            IOHandOffStage(
                runner: IOStageRunner(
                    transform: io, input: schemas.ioInput, output: schemas.output, batching: options.batching,
                    isCancelled: { [control] in control.stopRequested }),
                sink: sink, output: batches, control: control)
        }
        if let handOff { control.whenStopRequested { [runner = handOff.runner] in runner.stopRequested() } }
        let dispatcher = DispatchStage(
            input: decoded, output: batches, io: handOff?.runner, sink: sink, rejects: rejects, control: control,
            maxErrors: options.maxErrors)
        // With an I/O stage, output rows are in completion order, so source positions are not committed
        // (such runs resume from their own state, e.g. a fetch manifest).
        let writers = WriterStage(
            sink: sink, input: batches, rejects: rejects, tracker: io == nil ? CommitTracker(source: source) : nil,
            control: control, options: options, observers: observers)

        let sampler = RunSampler(
            control: control, source: source, sink: sink, reader: reader, decoders: decoders,
            dispatcher: dispatcher, handOff: handOff, writers: writers, chunks: chunks, decoded: decoded,
            batches: batches)
        active.withLock { $0 = (control, sampler) }
        defer { active.withLock { $0 = nil } }
        if cancelledEarly.load(ordering: .relaxed) { control.requestStop() }
        let monitor = RunMonitor(observers: observers, interval: options.progressInterval, snapshot: sampler.snapshot)
        monitor.start()

        // The join order, in one place: downstream stages start first; each stage ends when its input ends.
        // Thread stages are joined on a thread of their own; task stages are children of this group.
        writers.start()
        handOff?.start()
        dispatcher.start()
        decoders.start()
        reader.start()
        await withTaskGroup(of: Void.self) { tasks in
            if case .async = sink.kind { tasks.addTask { await writers.run() } }
            if case .async = source.kind { tasks.addTask { await reader.run() } }
            await Blocking.run("sluice-join") {
                dispatcher.join()
                handOff?.finish()
                batches.close()
                writers.join()
                reader.join()
                decoders.join()
            }
        }
        control.checkRejectLimit(
            options.maxErrors, total: control.rejected.load(ordering: .relaxed),
            seen: control.recordsSeen.load(ordering: .relaxed), final: true)

        let interrupted = control.stopRequested
        let complete = control.failure == nil && !interrupted
        await writers.finish(complete: complete, clean: complete && control.rejected.load(ordering: .relaxed) == 0)
        do { try rejects.close() } catch { control.fail(RunFailure(.rejects, error)) }
        source.runEnded(committedAll: complete)
        monitor.stop()

        let last = sampler.snapshot()
        let failure = control.failure
        let outcome: RunOutcome =
            failure != nil
            ? .aborted : interrupted ? .interrupted : last.recordsRejected > 0 ? .completedWithRejects : .clean
        let report = RunReport(
            outcome: outcome, failure: failure, target: sink.target, snapshot: last,
            peakRSSBytes: ProcessStats.peakRSS(), rejectsFile: last.recordsRejected > 0 ? options.rejectsPath : nil,
            batchRows: sizing.maxRows, chunkBytes: sizing.chunkBytes, memoryBudgetBytes: options.memory.bytes,
            changes: sink.changes, notes: source.reportLines + (io?.reportLines ?? []))
        for o in observers { o.runFinished(report, snapshot: last) }
        return report
    }

    /// The schemas of a run: the source's, the I/O stage's input (after the transforms), and the sink's.
    private struct Schemas {
        var source: Schema
        var ioInput: Schema
        var output: Schema
    }

    /// Opens the source, the sink and the I/O stage, settling the schemas. Blocking opens run on a thread of
    /// their own.
    private func open(context: SourceContext) async throws -> Schemas {
        let sourceSchema: Schema
        do {
            switch source.kind {
            case .blocking(let source):
                sourceSchema = try await Blocking.run("sluice-open") { try source.open(context: context) }
            case .async(let source): sourceSchema = try await source.open(context: context)
            }
        } catch let e as SluiceError {
            if let early = e.underlying as? EarlyRejects { try writeEarly(early) }
            throw e
        }
        do {
            return try await openRest(sourceSchema: sourceSchema)
        } catch {
            // The reader task that would close an async source's connection never starts.
            if case .async(let source) = source.kind { await source.close() }
            throw error
        }
    }

    /// Opens the sink and the I/O stage once the source's schema is known.
    private func openRest(sourceSchema: Schema) async throws -> Schemas {
        var schema = sourceSchema
        for t in transforms { schema = try t.outputSchema(for: schema) }
        let ioInputSchema = schema
        if let io { schema = try io.outputSchema(for: schema) }
        let sinkSchema = schema
        switch sink.kind {
        case .blocking(let sink): try await Blocking.run("sluice-open") { try sink.open(schema: sinkSchema) }
        case .async(let sink): try await sink.open(schema: sinkSchema)
        }
        if let io {
            do { try await io.open(stored: storedRows) } catch let e as SluiceError { throw e } catch {
                throw SluiceError(.sink, "\(io.name): cannot read the state of earlier runs: \(error)")
            }
        }
        if let stored = sink.storedSourceHashes { source.useStoredSourceHashes(stored) }
        if let path = options.rejectsPath, FileManager.default.fileExists(atPath: path) {
            try? FileManager.default.removeItem(atPath: path)
        }
        return Schemas(source: sourceSchema, ioInput: ioInputSchema, output: schema)
    }

    /// Writes the records a source rejected while opening (the sample it could not infer a schema from) to the
    /// rejects file, as a run would have.
    private func writeEarly(_ early: EarlyRejects) throws {
        guard let path = options.rejectsPath else { return }
        if FileManager.default.fileExists(atPath: path) { try? FileManager.default.removeItem(atPath: path) }
        let writer = RejectsWriter(path: path)
        for r in early.records {
            try writer.write(
                RejectedRecord(
                    file: r.file, line: r.line, offset: r.offset, stage: "parse", reason: r.reason, bytes: r.raw))
        }
        try writer.close()
    }

    /// What the sink stores, read through its own calling convention.
    private var storedRows: StoredRows {
        switch sink.kind {
        case .blocking(let sink):
            return StoredRows { columns, body in
                try await Blocking.run("sluice-resume") { try sink.readStored(columns: columns) { try body($0) } }
            }
        case .async(let sink):
            return StoredRows { columns, body in try await sink.readStored(columns: columns, body) }
        }
    }
}
