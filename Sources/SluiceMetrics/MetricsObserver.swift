import CoreMetrics
import Foundation
import SluiceCore
import SluiceReport
import Synchronization

/// Publishes a run's figures through swift-metrics, from the same snapshots as the report and the progress
/// line. The executable bootstraps the metrics backend (Prometheus in the CLI); without one, the calls cost
/// next to nothing.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `sluice_stage_records_total` | counter | `stage` |
/// | `sluice_stage_seconds_total` | counter (seconds) | `stage`, `state` = busy, overhead, starved, blocked |
/// | `sluice_records_read_total`, `sluice_records_written_total`, `sluice_records_rejected_total`, `sluice_records_failed_total` | counter | |
/// | `sluice_queue_depth` | gauge | `queue` = chunks, decoded, batches |
/// | `sluice_sink_commit_seconds` | histogram (timer) | |
/// | `sluice_process_resident_memory_bytes` | gauge | |
///
/// Stages are labelled `read`, `decode`, `transform:NAME`, `dispatch`, the I/O stage's name (`fetch`, in
/// slot-seconds) and `write`; the sink's phase breakdown is not repeated (it is part of `write`).
public final class MetricsObserver: PipelineObserver, Sendable {
    private struct State {
        var seconds: [String: UInt64] = [:]
        var totals: [String: Int64] = [:]
        var counters: [String: Counter] = [:]
        var floatCounters: [String: FloatingPointCounter] = [:]
        var gauges: [String: Gauge] = [:]
    }

    private let state = Locked(State())
    private let commitLatency = Timer(label: "sluice_sink_commit_seconds")
    private let residentMemory = Gauge(label: "sluice_process_resident_memory_bytes")

    /// Creates the observer (its metrics are made by the bootstrapped factory).
    public init() {}

    /// The metric's stage label for a report row.
    public static func stageLabel(_ name: String) -> String {
        if name.hasPrefix("read ") { return "read" }
        if name.hasPrefix("write ") { return "write" }
        if name.hasPrefix("transform ") { return "transform:" + name.dropFirst("transform ".count) }
        return name
    }

    /// Publishes the first figures.
    public func runStarted(_ snapshot: RunSnapshot) { publish(snapshot) }

    /// Publishes the figures' growth since the last snapshot.
    public func runProgressed(_ snapshot: RunSnapshot) { publish(snapshot) }

    /// Records a batch's commit latency.
    public func batchWritten(rows: Int, seconds: Double) {
        commitLatency.recordNanoseconds(Int64(seconds * 1e9))
    }

    /// Publishes the last figures.
    public func runFinished(_ report: RunReport, snapshot: RunSnapshot) { publish(snapshot) }

    private func publish(_ s: RunSnapshot) {
        residentMemory.record(ProcessMemory.residentBytes())
        state.withLock { st in
            for stage in s.stages where !stage.isDetail {
                let label = Self.stageLabel(stage.name)
                bump(&st, "sluice_stage_records_total", ("stage", label), stage.clock.records)
                for state in StageState.allCases {
                    let key = label + "\u{0}" + state.description
                    let v = stage.clock[state]
                    let old = st.seconds[key] ?? 0
                    // Made at first sight, so that every state is exported, at 0 until it grows.
                    let c = floatCounter(
                        &st, "sluice_stage_seconds_total", [("stage", label), ("state", state.description)])
                    guard v > old else { continue }
                    c.increment(by: Double(v - old) / 1e9)
                    st.seconds[key] = v
                }
            }
            bump(&st, "sluice_records_read_total", nil, s.recordsIn)
            bump(&st, "sluice_records_written_total", nil, s.recordsOut)
            bump(&st, "sluice_records_rejected_total", nil, s.recordsRejected)
            bump(&st, "sluice_records_failed_total", nil, s.recordsFailed)
            for q in s.queues {
                let key = "sluice_queue_depth\u{0}" + q.name
                let g = st.gauges[key] ?? Gauge(label: "sluice_queue_depth", dimensions: [("queue", q.name)])
                st.gauges[key] = g
                g.record(q.depth)
            }
        }
    }

    /// Creates the counter at its first sight (so it is exported at 0) and adds the growth since the last.
    private func bump(_ st: inout State, _ name: String, _ label: (String, String)?, _ value: Int64) {
        let c = counter(&st, name, label)
        let key = name + "\u{0}" + (label?.1 ?? "")
        let last = st.totals[key] ?? 0
        if value > last {
            c.increment(by: value - last)
            st.totals[key] = value
        }
    }

    private func counter(_ st: inout State, _ name: String, _ label: (String, String)? = nil) -> Counter {
        let key = name + "\u{0}" + (label?.1 ?? "")
        if let c = st.counters[key] { return c }
        let c = Counter(label: name, dimensions: label.map { [$0] } ?? [])
        st.counters[key] = c
        return c
    }

    private func floatCounter(_ st: inout State, _ name: String, _ labels: [(String, String)]) -> FloatingPointCounter {
        let key = name + "\u{0}" + labels.map(\.1).joined(separator: "\u{0}")
        if let c = st.floatCounters[key] { return c }
        let c = FloatingPointCounter(label: name, dimensions: labels)
        st.floatCounters[key] = c
        return c
    }
}

/// The process's memory as the kernel sees it.
public enum ProcessMemory {
    /// Resident set size now, in bytes (from `/proc/self/statm`; 0 where unknown).
    public static func residentBytes() -> Int64 {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int64(fields[1]) else { return 0 }
        return pages * Int64(sysconf(Int32(_SC_PAGESIZE)))
    }
}
