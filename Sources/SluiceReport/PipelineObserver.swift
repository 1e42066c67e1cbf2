/// One stage's figures at an instant of a run: its name, its threads (or slots) and its clock.
public struct StageSample: Sendable, Codable {
    /// `read events.csv (csv)`, `decode`, `dispatch`, `fetch`, `write sqlite:… table t (append)`, `encode` ….
    public var name: String
    /// Threads (or, for an I/O stage, slots) that run the stage.
    public var threads: Int
    /// The time booked so far and the records and batches through the stage.
    public var clock: StageClock
    /// Whether this is a breakdown of the stage above it (the sink's encode / write / commit phases).
    public var isDetail: Bool

    /// Creates a sample.
    public init(name: String, threads: Int, clock: StageClock, isDetail: Bool = false) {
        self.name = name
        self.threads = threads
        self.clock = clock
        self.isDetail = isDetail
    }
}

/// How full one of the run's bounded queues is.
public struct QueueSample: Sendable, Codable, Equatable {
    /// `chunks` (reader → decoders), `decoded` (decoders → dispatcher), `batches` (→ writers).
    public var name: String
    /// Items queued now.
    public var depth: Int
    /// Items the queue holds at most.
    public var capacity: Int

    /// Creates a sample.
    public init(name: String, depth: Int, capacity: Int) {
        self.name = name
        self.depth = depth
        self.capacity = capacity
    }
}

/// The counters and clocks of a run at an instant: what the live progress line, metrics and the final report
/// are all made from.
public struct RunSnapshot: Sendable, Codable {
    /// Seconds since the run started.
    public var elapsedSeconds: Double
    /// Records read so far (good and rejected).
    public var recordsIn: Int64
    /// Records written so far.
    public var recordsOut: Int64
    /// Records rejected so far (parse and sink).
    public var recordsRejected: Int64
    /// Records a stage failed so far (fetches that failed after their retries).
    public var recordsFailed: Int64
    /// Child-table rows written so far.
    public var childRowsOut: Int64
    /// Input bytes read as stored.
    public var bytesRead: Int64
    /// Input bytes after decompression.
    public var bytesDecoded: Int64
    /// The input's total size as stored, when known and meaningful for an ETA (nil under an I/O stage, which
    /// reads all its input long before it is done).
    public var totalBytes: Int64?
    /// Each stage's figures, in pipeline order.
    public var stages: [StageSample]
    /// The bounded queues between the stages.
    public var queues: [QueueSample]

    /// Creates a snapshot.
    public init(
        elapsedSeconds: Double, recordsIn: Int64, recordsOut: Int64, recordsRejected: Int64, recordsFailed: Int64 = 0,
        childRowsOut: Int64 = 0, bytesRead: Int64, bytesDecoded: Int64, totalBytes: Int64?,
        stages: [StageSample], queues: [QueueSample]
    ) {
        self.elapsedSeconds = elapsedSeconds
        self.recordsIn = recordsIn
        self.recordsOut = recordsOut
        self.recordsRejected = recordsRejected
        self.recordsFailed = recordsFailed
        self.childRowsOut = childRowsOut
        self.bytesRead = bytesRead
        self.bytesDecoded = bytesDecoded
        self.totalBytes = totalBytes
        self.stages = stages
        self.queues = queues
    }
}

/// Watches a run as it goes: receives its snapshots, each written batch and the final report. The run report,
/// the live progress line and metrics are observers of the same numbers.
///
/// Calls come from the run's own threads: ``runProgressed(_:)`` from one monitor thread at the pipeline's
/// progress interval, ``batchWritten(rows:seconds:)`` from the writer threads (once per batch, never per
/// record). Keep them short; every method has a default that does nothing.
public protocol PipelineObserver: Sendable {
    /// The run opened its source and sink and starts moving records.
    func runStarted(_ snapshot: RunSnapshot)
    /// The run's figures at the progress interval.
    func runProgressed(_ snapshot: RunSnapshot)
    /// A batch of `rows` rows was written and committed; `seconds` is the time from the start of its write to
    /// its commit (retries and bisection included).
    func batchWritten(rows: Int, seconds: Double)
    /// The run ended with `report`, which is built from `snapshot`, the last one.
    func runFinished(_ report: RunReport, snapshot: RunSnapshot)
}

extension PipelineObserver {
    /// Does nothing.
    public func runStarted(_ snapshot: RunSnapshot) {}
    /// Does nothing.
    public func runProgressed(_ snapshot: RunSnapshot) {}
    /// Does nothing.
    public func batchWritten(rows: Int, seconds: Double) {}
    /// Does nothing.
    public func runFinished(_ report: RunReport, snapshot: RunSnapshot) {}
}

/// An observer that ignores everything (the default).
public struct NoOpPipelineObserver: PipelineObserver {
    /// Creates the observer.
    public init() {}
}

/// The live progress line as an observer: draws each snapshot over the terminal line, clears it at the end.
public struct ProgressLineObserver: PipelineObserver {
    /// Creates the observer.
    public init() {}

    /// Draws the line.
    public func runProgressed(_ snapshot: RunSnapshot) {
        ProgressLine.draw(
            ProgressLine.render(
                records: snapshot.recordsOut, bytesRead: snapshot.bytesRead, totalBytes: snapshot.totalBytes,
                elapsedSeconds: snapshot.elapsedSeconds, rejected: snapshot.recordsRejected))
    }

    /// Clears the line.
    public func runFinished(_ report: RunReport, snapshot: RunSnapshot) { ProgressLine.clear() }
}
