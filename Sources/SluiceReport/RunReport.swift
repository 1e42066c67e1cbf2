import Foundation
import SluiceCore

/// One stage's row of the run report.
public struct StageReport: Sendable, Codable {
    /// Stage name (`read csv`, `decode ×2`, `write sqlite`, `  encode` …).
    public var name: String
    /// Threads that ran the stage.
    public var threads: Int
    /// Seconds of useful work (summed over threads).
    public var busySeconds: Double
    /// Seconds of overhead (hand-offs, batch assembly, encoding).
    public var overheadSeconds: Double
    /// Seconds waiting on upstream.
    public var starvedSeconds: Double
    /// Seconds waiting on downstream.
    public var blockedSeconds: Double
    /// Records through the stage.
    public var records: Int64
    /// Busy nanoseconds per record.
    public var nsPerRecord: Double
    /// Busy time as a share of the threads' wall time (0…1): how saturated the stage was.
    public var utilization: Double
    /// Whether this row is a breakdown of the row above (sink phases).
    public var isDetail: Bool

    /// Creates a stage row from a clock.
    public init(name: String, threads: Int, clock: StageClock, wallSeconds: Double, isDetail: Bool = false) {
        self.name = name
        self.threads = threads
        busySeconds = Double(clock.busy) / 1e9
        overheadSeconds = Double(clock.overhead) / 1e9
        starvedSeconds = Double(clock.starved) / 1e9
        blockedSeconds = Double(clock.blocked) / 1e9
        records = clock.records
        nsPerRecord = clock.records > 0 ? Double(clock.busy) / Double(clock.records) : 0
        utilization =
            wallSeconds > 0 ? min(1, (busySeconds + overheadSeconds) / (wallSeconds * Double(max(threads, 1)))) : 0
        self.isDetail = isDetail
    }

    /// Creates a stage row from a sample of a run.
    public init(_ sample: StageSample, wallSeconds: Double) {
        self.init(
            name: sample.name, threads: sample.threads, clock: sample.clock, wallSeconds: wallSeconds,
            isDetail: sample.isDetail)
    }
}

/// Why a run was aborted, by the part of the run that failed.
public struct RunFailure: Sendable, Codable, Equatable, CustomStringConvertible {
    /// The part of the run that failed.
    public enum Kind: String, Sendable, Codable {
        /// The source could not be read (an I/O error, a lost database connection).
        case read
        /// A chunk could not be decoded or a transform failed.
        case decode
        /// The sink could not write or finish.
        case write
        /// An I/O stage failed (e.g. its blob store could not be synced).
        case stage
        /// More records were rejected than `--max-errors` allows.
        case tooManyRejects = "too-many-rejects"
        /// The rejects file could not be written.
        case rejects
    }

    /// The part of the run that failed.
    public var kind: Kind
    /// What happened (never row data).
    public var message: String
    /// The error's code (`sink`, `connection-lost`, `io` …), when it was a ``SluiceError``.
    public var code: String?
    /// The database's SQLSTATE, when a database reported it.
    public var sqlState: String?

    /// Creates a failure.
    public init(_ kind: Kind, _ message: String, code: String? = nil, sqlState: String? = nil) {
        self.kind = kind
        self.message = message
        self.code = code
        self.sqlState = sqlState
    }

    /// The failure of `kind` that `error` describes, keeping a ``SluiceError``'s code and SQLSTATE.
    public init(_ kind: Kind, _ error: any Error) {
        if let e = error as? SluiceError {
            self.init(kind, e.description, code: e.code.description, sqlState: e.sqlState)
        } else {
            self.init(kind, "\(error)")
        }
    }

    /// The message.
    public var description: String { message }
}

/// What a sink did with records that carry a key (and a content hash): new, changed, unchanged, purged.
public struct ChangeCounts: Sendable, Codable, Equatable {
    /// Records whose key was not stored yet.
    public var inserted: Int64 = 0
    /// Stored records written again (their content hash differed, or no hash was compared).
    public var updated: Int64 = 0
    /// Stored records skipped because their content hash was unchanged.
    public var unchanged: Int64 = 0
    /// Stored records (with their child rows) removed because the run did not contain them.
    public var purged: Int64 = 0
    /// Why purging was asked for but not done (the run was incomplete or rejected records), if it was not.
    public var purgeSkipped: String?
    /// Of the unchanged records, those recognised from their raw bytes (the stored source hash) and so never
    /// decoded; nil when none were.
    public var undecoded: Int64?

    /// Zero counts.
    public init() {}

    /// Adds another writer's counts.
    public mutating func add(_ o: ChangeCounts) {
        inserted += o.inserted
        updated += o.updated
        unchanged += o.unchanged
        purged += o.purged
        if let u = o.undecoded { undecoded = (undecoded ?? 0) + u }
    }
}

/// A summary line a stage adds to the run report (`fetch      12,217 requests, 12,217 stored, …`), with
/// its figures by name for the JSON report.
public struct ReportLine: Sendable, Codable, Equatable {
    /// The label in the text report's left column (`fetch`).
    public var label: String
    /// The text.
    public var text: String
    /// The figures behind the text, by name (`requests`, `failed`, …).
    public var counts: [String: Int64]

    /// Creates a line.
    public init(label: String, text: String, counts: [String: Int64] = [:]) {
        self.label = label
        self.text = text
        self.counts = counts
    }
}

/// How a run ended.
public enum RunOutcome: String, Sendable, Codable {
    /// Every record was read; none rejected.
    case clean
    /// Every record was read; some were rejected (exit status 3).
    case completedWithRejects = "completed-with-rejects"
    /// Stopped early: too many errors or a fatal error (exit status 1).
    case aborted
    /// Stopped by SIGINT/SIGTERM or cancellation, after flushing what was read (exit status 130).
    case interrupted
}

/// The report printed at the end of every run, and written as JSON with `--report-json`.
public struct RunReport: Sendable, Codable {
    /// How the run ended.
    public var outcome: RunOutcome
    /// Why it was aborted, if it was.
    public var abortReason: String?
    /// Where the rows went (`sqlite:events.db table events (upsert on id)`).
    public var target: String
    /// Wall-clock seconds.
    public var wallSeconds: Double
    /// Records read (good and rejected).
    public var recordsIn: Int64
    /// Records written by the sink.
    public var recordsOut: Int64
    /// Records rejected (parse and sink).
    public var recordsRejected: Int64
    /// Input bytes read (as stored, e.g. compressed).
    public var bytesIn: Int64
    /// Decoded input bytes (after decompression).
    public var bytesDecoded: Int64
    /// Records written per second.
    public var recordsPerSecond: Double
    /// Decoded megabytes (10^6) per second.
    public var megabytesPerSecond: Double
    /// Peak resident set size of the process in bytes.
    public var peakRSSBytes: Int64
    /// The rejects file, if any record was rejected.
    public var rejectsFile: String?
    /// Per-stage accounting, in pipeline order.
    public var stages: [StageReport]
    /// The stage that limited the run.
    public var bottleneck: String
    /// The bottleneck's busy share of its threads' wall time.
    public var bottleneckShare: Double
    /// Batch policy actually used.
    public var batchRows: Int
    /// Chunk size in bytes actually used.
    public var chunkBytes: Int
    /// Memory budget in bytes.
    public var memoryBudgetBytes: Int64
    /// Inserted / updated / unchanged / purged records, for sinks that tell them apart.
    public var changes: ChangeCounts?
    /// Rows written to child tables (nested records), if any.
    public var childRowsOut: Int64 = 0
    /// Summary lines added by stages (an I/O stage's requests, retries and failures).
    public var notes: [ReportLine] = []
    /// Records a stage failed and wrote with their reason (fetches that failed after their retries); the CLI
    /// exits with status 4 when a clean run has any.
    public var recordsFailed: Int64 = 0
    /// Why the run was aborted, typed; nil unless ``outcome`` is ``RunOutcome/aborted``.
    public var failure: RunFailure?

    /// Creates a report; the bottleneck is the non-detail stage with the highest utilization.
    public init(
        outcome: RunOutcome, abortReason: String?, target: String, wallSeconds: Double, recordsIn: Int64,
        recordsOut: Int64, recordsRejected: Int64, bytesIn: Int64, bytesDecoded: Int64, peakRSSBytes: Int64,
        rejectsFile: String?, stages: [StageReport], batchRows: Int, chunkBytes: Int, memoryBudgetBytes: Int64,
        changes: ChangeCounts? = nil, childRowsOut: Int64 = 0, notes: [ReportLine] = []
    ) {
        self.notes = notes
        self.changes = changes
        self.childRowsOut = childRowsOut
        self.outcome = outcome
        self.abortReason = abortReason
        self.target = target
        self.wallSeconds = wallSeconds
        self.recordsIn = recordsIn
        self.recordsOut = recordsOut
        self.recordsRejected = recordsRejected
        self.bytesIn = bytesIn
        self.bytesDecoded = bytesDecoded
        recordsPerSecond = wallSeconds > 0 ? Double(recordsOut) / wallSeconds : 0
        megabytesPerSecond = wallSeconds > 0 ? Double(bytesDecoded) / 1e6 / wallSeconds : 0
        self.peakRSSBytes = peakRSSBytes
        self.rejectsFile = rejectsFile
        self.stages = stages
        let top = stages.filter { !$0.isDetail }.max { $0.utilization < $1.utilization }
        bottleneck = top?.name ?? "-"
        bottleneckShare = top?.utilization ?? 0
        self.batchRows = batchRows
        self.chunkBytes = chunkBytes
        self.memoryBudgetBytes = memoryBudgetBytes
    }

    /// Creates the report of a run from its last snapshot: the same numbers its observers saw.
    public init(
        outcome: RunOutcome, failure: RunFailure?, target: String, snapshot: RunSnapshot, peakRSSBytes: Int64,
        rejectsFile: String?, batchRows: Int, chunkBytes: Int, memoryBudgetBytes: Int64, changes: ChangeCounts?,
        notes: [ReportLine]
    ) {
        let wall = snapshot.elapsedSeconds
        self.init(
            outcome: outcome, abortReason: failure?.message, target: target, wallSeconds: wall,
            recordsIn: snapshot.recordsIn, recordsOut: snapshot.recordsOut, recordsRejected: snapshot.recordsRejected,
            bytesIn: snapshot.bytesRead, bytesDecoded: snapshot.bytesDecoded, peakRSSBytes: peakRSSBytes,
            rejectsFile: rejectsFile, stages: snapshot.stages.map { StageReport($0, wallSeconds: wall) },
            batchRows: batchRows, chunkBytes: chunkBytes, memoryBudgetBytes: memoryBudgetBytes, changes: changes,
            childRowsOut: snapshot.childRowsOut, notes: notes)
        self.failure = failure
        recordsFailed = snapshot.recordsFailed
    }

    /// The report as pretty JSON.
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// The report as a human-readable table.
    public var text: String {
        var out = ""
        let status: String
        switch outcome {
        case .clean: status = "completed"
        case .completedWithRejects: status = "completed with \(Format.count(recordsRejected)) rejected records"
        case .aborted: status = "ABORTED: \(abortReason ?? "error")"
        case .interrupted: status = "INTERRUPTED (committed work kept)"
        }
        out += "sluice run \(status)\n"
        out += "  target     \(target)\n"
        out += "  wall       \(Format.seconds(wallSeconds))\n"
        out +=
            "  records    \(Format.count(recordsIn)) in, \(Format.count(recordsOut)) out, \(Format.count(recordsRejected)) rejected\n"
        out +=
            "  rate       \(Format.count(Int64(recordsPerSecond))) records/s, \(String(format: "%.1f", megabytesPerSecond)) MB/s"
        out += " (\(Format.bytes(bytesDecoded)) decoded from \(Format.bytes(bytesIn)) read)\n"
        out += "  memory     peak RSS \(Format.bytes(peakRSSBytes)), budget \(Format.bytes(memoryBudgetBytes)), "
        out += "batches of ≤\(Format.count(Int64(batchRows))) rows from \(Format.bytes(Int64(chunkBytes))) chunks\n"
        if childRowsOut > 0 { out += "  children   \(Format.count(childRowsOut)) child-table rows written\n" }
        if let c = changes {
            out +=
                "  changes    \(Format.count(c.inserted)) inserted, \(Format.count(c.updated)) updated, "
                + "\(Format.count(c.unchanged)) unchanged, \(Format.count(c.purged)) purged\n"
            if let u = c.undecoded, u > 0 {
                out += "  skipped    \(Format.count(u)) unchanged records by their bytes, without decoding them\n"
            }
            if let why = c.purgeSkipped { out += "  purge      skipped: \(why)\n" }
        }
        for n in notes {
            let pad = String(repeating: " ", count: max(1, 11 - n.label.count))
            out += "  \(n.label)\(pad)\(n.text)\n"
        }
        if let rejectsFile { out += "  rejects    \(rejectsFile)\n" }
        out += "\n"
        let header = ["stage", "busy", "overhead", "starved", "blocked", "ns/rec", "util"]
        var rows: [[String]] = [header]
        for s in stages {
            rows.append([
                (s.isDetail ? "  · " : "") + s.name + (s.threads > 1 ? " ×\(s.threads)" : ""),
                Format.seconds(s.busySeconds), s.isDetail ? "" : Format.seconds(s.overheadSeconds),
                s.isDetail ? "" : Format.seconds(s.starvedSeconds), s.isDetail ? "" : Format.seconds(s.blockedSeconds),
                s.records > 0 ? String(format: "%.0f", s.nsPerRecord) : "-",
                s.isDetail ? "" : String(format: "%.0f%%", s.utilization * 100),
            ])
        }
        let widths = (0..<header.count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for r in rows {
            out += "  "
            for (c, cell) in r.enumerated() {
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                out += c == 0 ? cell + pad : "  " + pad + cell
            }
            out += "\n"
        }
        out += "\n  bottleneck: \(bottleneck) (busy \(String(format: "%.0f%%", bottleneckShare * 100)) of its time)\n"
        return out
    }
}

/// Number formatting for reports and progress.
public enum Format {
    /// `1,234,567`.
    public static func count(_ v: Int64) -> String {
        let s = String(abs(v))
        var out = ""
        for (i, ch) in s.enumerated() {
            if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return v < 0 ? "-" + out : out
    }

    /// `1.23 s`, `450 ms`.
    public static func seconds(_ s: Double) -> String {
        if s >= 100 { return String(format: "%.0f s", s) }
        if s >= 1 { return String(format: "%.2f s", s) }
        if s >= 0.001 { return String(format: "%.0f ms", s * 1000) }
        if s > 0 { return String(format: "%.0f µs", s * 1e6) }
        return "0"
    }

    /// `12.3 MiB`.
    public static func bytes(_ b: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(b)
        var u = 0
        while v >= 1024 && u < units.count - 1 {
            v /= 1024
            u += 1
        }
        return u == 0 ? "\(b) B" : String(format: "%.1f %@", v, units[u])
    }
}
