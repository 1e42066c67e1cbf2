import CSluiceSupport
import Foundation
import SluiceCore
import SluiceReport
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

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
    /// Draw a live progress line on standard error when it is a terminal. Default: false.
    public var showProgress = false
    /// Retry policy for transient sink failures. Default: ``RetryPolicy/init()``.
    public var retry = RetryPolicy()

    /// Default options.
    public init() {}
}

/// Source → transforms → sink over bounded queues, with the run report at the end.
///
/// Threads: one reader (the source: reading, decompressing, framing), `workers` decoders (parsing and
/// transforms, in parallel), and one writer (the sink, in input order). Queues are bounded, so a slow sink
/// slows the reader and memory stays within the budget.
///
/// ```swift
/// let pipeline = Pipeline(source: source, sink: sink)
/// let report = try await pipeline.run()
/// ```
public final class Pipeline: @unchecked Sendable {
    /// The source.
    public let source: any Source
    /// Transforms applied by the decode workers, in order.
    public let transforms: [any Transform]
    /// The I/O-bound stage after the transforms (an HTTP fetch), if any.
    public let io: (any IOTransform)?
    /// The sink.
    public let sink: any BatchSink
    /// The options.
    public let options: PipelineOptions

    private let stopRequested = Atomic<Bool>(false)
    private let recordsOut = Atomic<Int64>(0)
    private let rejectedCount = Atomic<Int64>(0)
    private let finishedFlag = Atomic<Bool>(false)
    private let recordsSeen = Atomic<Int64>(0)

    /// Creates a pipeline.
    public init(
        source: any Source, transforms: [any Transform] = [], io: (any IOTransform)? = nil, sink: any BatchSink,
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
        stopRequested.store(true, ordering: .relaxed)
        activeIOStage.withLock { $0 }?.stopRequested()
    }

    /// The running I/O stage, told at once when the run is cancelled.
    private let activeIOStage = Mutex<IOStageRunner?>(nil)

    /// Runs the pipeline to the end on dedicated threads and returns the report.
    ///
    /// - Throws: ``SluiceError`` when the run cannot start (bad configuration, missing input, sink cannot
    ///   open). Failures during the run end it with outcome ``RunOutcome/aborted`` in the report instead.
    public func run() async throws -> RunReport {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<RunReport, any Error>) in
            _ = NativeThread(name: "sluice-run") { [self] in
                do { c.resume(returning: try runBlocking()) } catch { c.resume(throwing: error) }
            }
        }
    }

    /// A decoded chunk on its way to the writer.
    private struct Decoded: @unchecked Sendable {
        var batches: [RecordBatch]
        var rejects: [RecordReject]
        var file: String
        var fileIndex: Int
        var fileOffset: Int64
        var startLine: Int?
        var lines: Int
        var records: Int64
        var error: (any Error)?
        /// Keys of records skipped as unchanged (not in `batches`).
        var unchanged: [Int64] = []
    }

    /// Runs the pipeline on the calling thread (plus the stage threads) and returns the report.
    public func runBlocking() throws -> RunReport {
        let t0 = MonotonicClock.now()
        let workers = max(1, options.workers)
        let sizing = BatchSizing.from(budget: options.memory, policy: options.batching, workers: workers)
        let context = SourceContext(
            chunkBytes: sizing.chunkBytes, maxRows: sizing.maxRows, batching: options.batching,
            isCancelled: { [self] in stopRequested.load(ordering: .relaxed) })

        let sourceSchema = try source.open(context: context)
        var schema = sourceSchema
        for t in transforms { schema = try t.outputSchema(for: schema) }
        let ioInputSchema = schema
        if let io { schema = try io.outputSchema(for: schema) }
        do {
            try sink.open(schema: schema)
        } catch let e as SinkError {
            throw SluiceError(.sink, e.message)
        }
        if let io {
            do { try io.open(sink: sink) } catch let e as SluiceError { throw e } catch {
                throw SluiceError(.sink, "\(io.name): cannot read the state of earlier runs: \(error)")
            }
        }
        if let stored = sink.storedSourceHashes { source.useStoredSourceHashes(stored) }
        if let path = options.rejectsPath, FileManager.default.fileExists(atPath: path) {
            try? FileManager.default.removeItem(atPath: path)
        }

        let chunkQueue = BoundedQueue<(Int, SourceItem)>(capacity: sizing.queueDepth)
        let reorder = ReorderBuffer<Decoded>(window: sizing.reorderWindow, producers: workers)
        let readerClock = Mutex(StageClock())
        let decodeClock = Mutex(StageClock())
        let transformClocks = Mutex([StageClock](repeating: StageClock(), count: transforms.count))
        let readError = Mutex<(any Error & Sendable)?>(nil)
        let abortFlag = Atomic<Bool>(false)

        // Reader: the source, sequentially.
        let reader = NativeThread(name: "sluice-read") { [self] in
            var clock = StageClock()
            var seq = 0
            while !stopRequested.load(ordering: .relaxed) && !abortFlag.load(ordering: .relaxed) {
                let a = MonotonicClock.now()
                let item: SourceItem?
                do { item = try source.next() } catch {
                    readError.withLock { $0 = (error as? SluiceError) ?? SluiceError(.io, "\(error)") }
                    abortFlag.store(true, ordering: .relaxed)
                    break
                }
                let b = MonotonicClock.now()
                clock.busy += b - a
                guard let item else { break }
                clock.batches += 1
                var waited: UInt64 = 0
                let ok = chunkQueue.push((seq, item), waited: &waited)
                clock.blocked += waited
                clock.overhead += MonotonicClock.now() - b - waited
                seq += 1
                if !ok { break }
            }
            chunkQueue.close()
            readerClock.withLock { $0.merge(clock) }
        }

        // Decoders: parse chunks and apply transforms, in parallel.
        var decoders: [NativeThread] = []
        for w in 0..<workers {
            decoders.append(
                NativeThread(name: "sluice-dec\(w)") { [self] in
                    var clock = StageClock()
                    var tclocks = [StageClock](repeating: StageClock(), count: transforms.count)
                    let builder = RecordBatchBuilder(
                        schema: sourceSchema, rowCapacity: min(sizing.maxRows, 16_384), trackOrigins: true)
                    while true {
                        var starved: UInt64 = 0
                        guard let (seq, item) = chunkQueue.pop(waited: &starved) else { break }
                        clock.starved += starved
                        let a = MonotonicClock.now()
                        var out = decode(consume item, builder: builder, sizing: sizing)
                        let b = MonotonicClock.now()
                        clock.busy += b - a
                        clock.records += out.records
                        clock.batches += 1
                        if out.error == nil && !transforms.isEmpty {
                            do {
                                for (k, t) in transforms.enumerated() {
                                    let ta = MonotonicClock.now()
                                    out.batches = try out.batches.map { try t.apply($0) }
                                    tclocks[k].busy += MonotonicClock.now() - ta
                                    tclocks[k].records += Int64(out.batches.reduce(0) { $0 + $1.count })
                                }
                            } catch {
                                out.error = error
                            }
                        }
                        let c = MonotonicClock.now()
                        var waited: UInt64 = 0
                        let ok = reorder.put(seq, out, waited: &waited)
                        clock.blocked += waited
                        clock.overhead += MonotonicClock.now() - c - waited
                        if !ok { break }
                    }
                    reorder.producerFinished()
                    decodeClock.withLock { $0.merge(clock) }
                    transformClocks.withLock { all in for k in 0..<all.count { all[k].merge(tclocks[k]) } }
                })
        }

        // Progress line.
        let progressThread: NativeThread? =
            options.showProgress && ProgressLine.isTerminal
            ? NativeThread(name: "sluice-progress") { [self] in
                while !finishedFlag.load(ordering: .relaxed) {
                    usleep(250_000)
                    if finishedFlag.load(ordering: .relaxed) { break }
                    let p = source.progress
                    // An I/O stage reads all its input long before it is done: no ETA from bytes read.
                    ProgressLine.draw(
                        ProgressLine.render(
                            records: recordsOut.load(ordering: .relaxed), bytesRead: p.bytesRead,
                            totalBytes: io == nil ? p.totalBytes : nil,
                            elapsedSeconds: Double(MonotonicClock.now() - t0) / 1e9,
                            rejected: rejectedCount.load(ordering: .relaxed)))
                }
                ProgressLine.clear()
            } : nil

        // Writers: this thread takes decoded chunks in input order, records parse rejects and hands batches to
        // `lanes` writer threads (one unless the sink writes in parallel).
        let lanes = max(1, sink.writers)
        let rejects = SharedRejects(options.rejectsPath.map { RejectsWriter(path: $0) })
        let laneQueue = BoundedQueue<(Int, RecordBatch)>(capacity: lanes)
        let laneClock = Mutex(StageClock())
        let laneError = Mutex<String?>(nil)
        let written = Atomic<Int64>(0)
        let childRows = Atomic<Int64>(0)
        // With an I/O stage, output rows are in completion order, so source positions are not committed
        // (such runs resume from their own state, e.g. a fetch manifest).
        let tracker = io == nil ? CommitTracker(source: source) : nil
        let stopAll = { @Sendable (reason: String) in
            laneError.withLock { if $0 == nil { $0 = reason } }
            abortFlag.store(true, ordering: .relaxed)
            laneQueue.cancel()
            chunkQueue.cancel()
            reorder.cancel()
        }
        var writerThreads: [NativeThread] = []
        for lane in 0..<lanes {
            writerThreads.append(
                NativeThread(name: "sluice-write\(lane)") { [self] in
                    var clock = StageClock()
                    while true {
                        var starved: UInt64 = 0
                        guard let (seq, batch) = laneQueue.pop(waited: &starved) else { break }
                        clock.starved += starved
                        let wa = MonotonicClock.now()
                        do {
                            defer { sink.didWrite(sequence: seq) }
                            let (n, sinkRejects, kids) = try writeWithRetryAndBisect(batch, writer: lane, sequence: seq)
                            clock.busy += MonotonicClock.now() - wa
                            let wb = MonotonicClock.now()
                            clock.records += Int64(n)
                            clock.batches += 1
                            if kids > 0 { childRows.add(Int64(kids), ordering: .relaxed) }
                            recordsOut.store(written.add(Int64(n), ordering: .relaxed).newValue, ordering: .relaxed)
                            for (row, reason) in sinkRejects {
                                try rejects.write(Self.sinkReject(batch, row: row, reason: reason))
                            }
                            tracker?.done(seq, batch)
                            let total = rejectedCount.add(Int64(sinkRejects.count), ordering: .relaxed).newValue
                            if let limit = options.maxErrors,
                                limit.exceeded(
                                    rejected: total, seen: recordsSeen.load(ordering: .relaxed), final: false)
                            {
                                stopAll(
                                    "too many rejected records: \(total) of \(recordsSeen.load(ordering: .relaxed)) (--max-errors \(limit))"
                                )
                            }
                            clock.overhead += MonotonicClock.now() - wb
                        } catch {
                            clock.busy += MonotonicClock.now() - wa
                            stopAll("\(error)")
                        }
                    }
                    laneClock.withLock { $0.merge(clock) }
                })
        }

        // The I/O stage: this thread starts records as slots free up; a hand-off thread passes the output
        // batches to the writers in the order they fill.
        let runner = io.map {
            IOStageRunner(
                transform: $0, input: ioInputSchema, output: schema, batching: options.batching,
                isCancelled: { [self] in stopRequested.load(ordering: .relaxed) })
        }
        activeIOStage.withLock { $0 = runner }
        defer { activeIOStage.withLock { $0 = nil } }
        if let runner, stopRequested.load(ordering: .relaxed) { runner.stopRequested() }
        let ioError = Mutex<String?>(nil)
        let handOff: NativeThread? = runner.map { runner in
            NativeThread(name: "sluice-io") { [self] in
                var seq = 0
                let error = runner.runHandOff { batch in
                    sink.willWrite(batch, sequence: seq)
                    var waited: UInt64 = 0
                    let ok = laneQueue.push((seq, batch), waited: &waited)
                    if !ok { sink.didWrite(sequence: seq) }
                    seq += 1
                    return ok
                }
                if let error { ioError.withLock { $0 = "\(error)" } }
            }
        }

        var wclock = StageClock()
        var abortReason: String?
        var nextLine = 1
        var currentFile = -1
        var seen: Int64 = 0
        var batchSeq = 0
        while true {
            var starved: UInt64 = 0
            guard let item = reorder.take(waited: &starved) else { break }
            wclock.starved += starved
            let a = MonotonicClock.now()
            if item.fileIndex != currentFile {
                currentFile = item.fileIndex
                nextLine = item.startLine ?? 1
            } else if let s = item.startLine {
                nextLine = s
            }
            let baseLine = nextLine
            nextLine += item.lines
            seen += item.records
            recordsSeen.store(seen, ordering: .relaxed)
            if let error = item.error {
                abortReason = "\(error)"
                break
            }
            do {
                for r in item.rejects {
                    try rejects.write(
                        RejectedRecord(
                            file: item.file, line: baseLine + r.relativeLine,
                            offset: item.fileOffset + Int64(r.relativeOffset),
                            stage: "parse", reason: r.reason, raw: String(decoding: r.raw, as: UTF8.self)))
                }
            } catch {
                abortReason = "\(error)"
                break
            }
            var handedOff = true
            var feeding: UInt64 = 0
            for var batch in item.batches where batch.count > 0 {
                batch.origin.firstLine = baseLine
                if let runner {
                    // Time spent starting records is the I/O stage's, booked in its slot accounting.
                    let f = MonotonicClock.now()
                    handedOff = runner.feed(batch)
                    feeding += MonotonicClock.now() - f
                    if !handedOff { break }
                    continue
                }
                var waited: UInt64 = 0
                sink.willWrite(batch, sequence: batchSeq)
                handedOff = laneQueue.push((batchSeq, batch), waited: &waited)
                wclock.blocked += waited
                if !handedOff { sink.didWrite(sequence: batchSeq) }
                batchSeq += 1
                if !handedOff { break }
            }
            if !handedOff { break }
            if !item.unchanged.isEmpty {
                sink.noteUnchanged(keys: item.unchanged)
                recordsOut.store(
                    written.add(Int64(item.unchanged.count), ordering: .relaxed).newValue, ordering: .relaxed)
            }
            // Give freed batch memory back to the OS: batches are allocated on decoder threads and freed
            // on writer threads, which otherwise leaves glibc arenas holding pages (RSS would not track live memory).
            sluice_release_free_memory()
            let total = rejectedCount.add(Int64(item.rejects.count), ordering: .relaxed).newValue
            if let limit = options.maxErrors, limit.exceeded(rejected: total, seen: seen, final: false) {
                abortReason = "too many rejected records: \(total) of \(seen) (--max-errors \(limit))"
                break
            }
            wclock.overhead += MonotonicClock.now() - a - feeding
        }
        if let runner, let handOff {
            if abortReason != nil || readError.withLock({ $0 }) != nil { runner.cancel() }
            runner.inputFinished()
            // Cancelled, the hand-off returns at once; closing then fails what is still in flight.
            handOff.join()
            io?.close()
            runner.waitIdle()
            if abortReason == nil, let e = ioError.withLock({ $0 }) { abortReason = e }
        }
        laneQueue.close()
        if abortReason != nil || readError.withLock({ $0 }) != nil {
            abortFlag.store(true, ordering: .relaxed)
            chunkQueue.cancel()
            reorder.cancel()
            laneQueue.cancel()
        }
        for w in writerThreads { w.join() }
        reader.join()
        for d in decoders { d.join() }
        if let e = laneError.withLock({ $0 }) { abortReason = e }
        if abortReason == nil, let e = readError.withLock({ $0 }) { abortReason = "\(e)" }
        let totalRejected = rejectedCount.load(ordering: .relaxed)
        if abortReason == nil, let limit = options.maxErrors,
            limit.exceeded(rejected: totalRejected, seen: seen, final: true)
        {
            abortReason = "too many rejected records: \(totalRejected) of \(seen) (--max-errors \(limit))"
        }
        let interrupted = stopRequested.load(ordering: .relaxed)
        let complete = abortReason == nil && !interrupted
        let fa = MonotonicClock.now()
        do {
            try sink.finish(complete: complete, clean: complete && rejectedCount.load(ordering: .relaxed) == 0)
        } catch {
            if abortReason == nil { abortReason = "\(error)" }
        }
        var lclock = laneClock.withLock { $0 }
        lclock.busy += MonotonicClock.now() - fa
        lclock.overhead += wclock.overhead
        lclock.blocked += wclock.blocked
        do { try rejects.close() } catch { if abortReason == nil { abortReason = "\(error)" } }
        finishedFlag.store(true, ordering: .relaxed)
        progressThread?.join()

        let wall = Double(MonotonicClock.now() - t0) / 1e9
        var rclock = readerClock.withLock { $0 }
        rclock.records = seen
        // Waiting for a pipe to deliver is starvation, not work.
        let inputWait = min(source.progress.waitNanos, rclock.busy)
        rclock.busy -= inputWait
        rclock.starved += inputWait
        var stages = [
            StageReport(name: "read \(source.name)", threads: 1, clock: rclock, wallSeconds: wall),
            StageReport(name: "decode", threads: workers, clock: decodeClock.withLock { $0 }, wallSeconds: wall),
        ]
        for (k, t) in transforms.enumerated() {
            stages.append(
                StageReport(
                    name: "transform \(t.name)", threads: workers, clock: transformClocks.withLock { $0[k] },
                    wallSeconds: wall))
        }
        if let io, let runner {
            // Slot-time: `threads` is the number of slots, busy is time in flight.
            stages.append(
                StageReport(name: io.name, threads: io.concurrency, clock: runner.stageClock, wallSeconds: wall))
            let h = runner.handOffClock
            if h.busy > 0 {
                stages.append(
                    StageReport(name: "\(io.name) hand-off", threads: 1, clock: h, wallSeconds: wall, isDetail: true))
            }
        }
        stages.append(StageReport(name: "write \(sink.target)", threads: lanes, clock: lclock, wallSeconds: wall))
        let st = sink.timings
        for (name, c) in [("encode", st.encode), ("write", st.write), ("commit", st.commit)] where c.busy > 0 {
            stages.append(StageReport(name: name, threads: 1, clock: c, wallSeconds: wall, isDetail: true))
        }
        let outcome: RunOutcome =
            abortReason != nil
            ? .aborted : interrupted ? .interrupted : totalRejected > 0 ? .completedWithRejects : .clean
        return RunReport(
            outcome: outcome, abortReason: abortReason, target: sink.target, wallSeconds: wall, recordsIn: seen,
            recordsOut: written.load(ordering: .relaxed), recordsRejected: totalRejected,
            bytesIn: source.progress.bytesRead,
            bytesDecoded: source.progress.bytesDecoded, peakRSSBytes: ProcessStats.peakRSS(),
            rejectsFile: totalRejected > 0 ? options.rejectsPath : nil, stages: stages, batchRows: sizing.maxRows,
            chunkBytes: sizing.chunkBytes, memoryBudgetBytes: options.memory.bytes, changes: sink.changes,
            childRowsOut: childRows.load(ordering: .relaxed), notes: io?.reportLines ?? [])
    }

    /// Decodes one item into batches of at most `maxRows` rows.
    private func decode(_ item: SourceItem, builder: RecordBatchBuilder, sizing: BatchSizing) -> Decoded {
        switch item {
        case .batch(let b):
            return Decoded(
                batches: [b], rejects: [], file: b.origin.file, fileIndex: 0, fileOffset: b.origin.firstOffset,
                startLine: nil, lines: 0, records: Int64(b.count), error: nil)
        case .chunk(let chunk):
            var batches: [RecordBatch] = []
            var rejects: [RecordReject] = []
            var pos = 0
            var line = 0
            let bytes = chunk.bytes
            let b = decoderBuilder(for: chunk, default: builder, rowCapacity: min(sizing.maxRows, 16_384))
            b.chunkPosition = StoredSourceHashes.position(file: chunk.fileIndex, offset: chunk.fileOffset)
            while pos < chunk.count {
                let startPos = pos
                let startLine = line
                let progress = chunk.decoder.decode(
                    bytes, from: pos, line: line, into: b, maxRows: sizing.maxRows, maxBytes: sizing.chunkBytes * 2,
                    rejects: &rejects)
                pos = progress.end
                line = progress.line
                if b.count > 0 {
                    // Row origins are relative to the chunk; make the batch's origin the chunk's.
                    batches.append(
                        b.build(
                            origin: BatchOrigin(file: chunk.file, firstLine: 0, firstOffset: chunk.fileOffset),
                            inputBytes: pos - startPos))
                }
                if pos == startPos && line == startLine { break }
            }
            let rows = batches.reduce(0) { $0 + $1.count }
            let unchanged = b.unchangedKeys
            let superseded = b.supersededRecords
            if !unchanged.isEmpty { b.unchangedKeys = [] }
            b.supersededRecords = 0
            return Decoded(
                batches: batches, rejects: rejects, file: chunk.file, fileIndex: chunk.fileIndex,
                fileOffset: chunk.fileOffset, startLine: chunk.startLine, lines: line,
                records: Int64(rows + rejects.count + unchanged.count + superseded), error: nil, unchanged: unchanged)
        }
    }

    private func decoderBuilder(
        for chunk: Chunk, default builder: RecordBatchBuilder, rowCapacity: Int
    ) -> RecordBatchBuilder {
        if builder.schema == chunk.decoder.schema { return builder }
        return RecordBatchBuilder(schema: chunk.decoder.schema, rowCapacity: rowCapacity, trackOrigins: true)
    }

    /// The rejects-file record for row `row` of `batch`, refused by the sink.
    private static func sinkReject(_ batch: RecordBatch, row: Int, reason: String) -> RejectedRecord {
        let pos = batch.position(ofRow: row)
        let values = batch.row(row).map { v -> String in
            switch v {
            case .null: return "null"
            case .int64, .float64, .bool: return v.description
            default: return JSONText.quoted(v.description)
            }
        }
        return RejectedRecord(
            file: pos.file, line: pos.line, offset: pos.offset, stage: "sink", reason: reason,
            raw: "[" + values.joined(separator: ",") + "]")
    }

    /// Writes a batch, retrying transient failures with backoff and bisecting batches the sink refuses.
    private func writeWithRetryAndBisect(
        _ batch: RecordBatch, writer: Int, sequence: Int
    ) throws -> (Int, [(Int, String)], Int) {
        var attempt = 0
        while true {
            do {
                let outcome = try sink.write(batch, writer: writer, sequence: sequence)
                return (outcome.written, outcome.rejected.map { ($0.row, $0.reason) }, outcome.childRows)
            } catch let e as SinkError {
                switch e.kind {
                case .transient where attempt + 1 < options.retry.maxAttempts:
                    let d = options.retry.delay(retry: attempt, unit: Double.random(in: 0...1))
                    usleep(UInt32(min(d.nanoseconds / 1000, 60_000_000)))
                    attempt += 1
                case .rejectedData:
                    if batch.count == 1 { return (0, [(0, e.message)], 0) }
                    let mid = batch.count / 2
                    let (n1, r1, k1) = try writeWithRetryAndBisect(
                        batch.slice(0..<mid), writer: writer, sequence: sequence)
                    let (n2, r2, k2) = try writeWithRetryAndBisect(
                        batch.slice(mid..<batch.count), writer: writer, sequence: sequence)
                    return (n1 + n2, r1 + r2.map { ($0.0 + mid, $0.1) }, k1 + k2)
                default:
                    throw SluiceError(.sink, e.message)
                }
            }
        }
    }
}

/// The rejects writer, shared by the dispatching thread and the writer threads.
private final class SharedRejects: @unchecked Sendable {
    private let lock = NSLock()
    private let writer: RejectsWriter?

    init(_ writer: RejectsWriter?) { self.writer = writer }

    func write(_ r: RejectedRecord) throws {
        guard let writer else { return }
        lock.lock()
        defer { lock.unlock() }
        try writer.write(r)
    }

    func close() throws {
        lock.lock()
        defer { lock.unlock() }
        try writer?.close()
    }
}

/// Tells the source which batches are committed, in input order, however the writers finish them.
private final class CommitTracker: @unchecked Sendable {
    private let lock = NSLock()
    private let source: any Source
    private var next = 0
    private var finished: [Int: RecordBatch] = [:]

    init(source: any Source) { self.source = source }

    func done(_ seq: Int, _ batch: RecordBatch) {
        lock.lock()
        defer { lock.unlock() }
        finished[seq] = batch
        while let b = finished.removeValue(forKey: next) {
            source.committed(b)
            next += 1
        }
    }
}
