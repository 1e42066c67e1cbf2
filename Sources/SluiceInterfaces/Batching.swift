import Foundation
import SluiceCore

/// When a batch is complete: whichever of rows, bytes or latency comes first.
public struct BatchingPolicy: Sendable, Hashable {
    /// Maximum rows per batch. Default: 65,536.
    public var maxRows: Int = 65_536
    /// Maximum bytes per batch (raw input per chunk). Default: 4 MiB.
    public var maxBytes: Int = 4 << 20
    /// Maximum time the first record of a batch waits before the batch is flushed (slow inputs such as pipes).
    /// Default: 1 second.
    public var maxLatency: Duration = .seconds(1)

    /// The default policy.
    public init() {}

    /// A policy with the given limits.
    public init(maxRows: Int, maxBytes: Int, maxLatency: Duration) {
        self.maxRows = maxRows
        self.maxBytes = maxBytes
        self.maxLatency = maxLatency
    }
}

/// The batching decision as a pure state machine: feed it what arrives and the time, it says when to flush.
/// No clocks or I/O inside, so it is tested with plain numbers.
public struct Batcher: Sendable {
    /// Why a batch is flushed.
    public enum FlushReason: Sendable, Hashable {
        /// `maxRows` reached.
        case rows
        /// `maxBytes` reached.
        case bytes
        /// `maxLatency` passed since the batch's first record.
        case latency
        /// The input ended.
        case end
    }

    /// What the caller should do.
    public enum Action: Sendable, Hashable {
        /// Keep accumulating.
        case wait
        /// Flush the batch now.
        case flush(FlushReason)
    }

    /// The policy.
    public let policy: BatchingPolicy
    /// Rows in the open batch.
    public private(set) var rows = 0
    /// Bytes in the open batch.
    public private(set) var bytes = 0
    /// Nanosecond time of the open batch's first record.
    public private(set) var openedAt: UInt64?

    /// Creates a batcher.
    public init(policy: BatchingPolicy) { self.policy = policy }

    private var latencyNanos: UInt64 { UInt64(max(0, policy.maxLatency.nanoseconds)) }

    /// Records `rows` rows of `bytes` bytes arriving at `now` (nanoseconds).
    public mutating func add(rows r: Int, bytes b: Int, now: UInt64) -> Action {
        if r == 0 && b == 0 { return tick(now: now) }
        if openedAt == nil { openedAt = now }
        rows += r
        bytes += b
        if rows >= policy.maxRows { return .flush(.rows) }
        if bytes >= policy.maxBytes { return .flush(.bytes) }
        return tick(now: now)
    }

    /// Checks the latency limit at `now`.
    public func tick(now: UInt64) -> Action {
        if let o = openedAt, now >= o &+ latencyNanos { return .flush(.latency) }
        return .wait
    }

    /// When the open batch must be flushed at the latest (nil when empty).
    public var deadline: UInt64? { openedAt.map { $0 &+ latencyNanos } }

    /// The input ended: flush whatever is open.
    public func finish() -> Action { rows > 0 || bytes > 0 ? .flush(.end) : .wait }

    /// The batch was flushed; start a new one.
    public mutating func reset() {
        rows = 0
        bytes = 0
        openedAt = nil
    }
}

/// Exponential backoff with full jitter for transient failures.
public struct RetryPolicy: Sendable, Hashable {
    /// Attempts in total, the first included. Default: 10 — with the default delays up to about 16 s of
    /// back-off in all (less with jitter), enough to ride out a database server's restart.
    public var maxAttempts: Int = 10
    /// Delay before the first retry. Default: 50 ms.
    public var baseDelay: Duration = .milliseconds(50)
    /// Longest delay. Default: 5 s.
    public var maxDelay: Duration = .seconds(5)

    /// The default policy.
    public init() {}

    /// A policy with the given limits.
    public init(maxAttempts: Int, baseDelay: Duration, maxDelay: Duration) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// The delay before retry number `retry` (0-based), with `unit` in 0…1 choosing the jitter.
    /// The ceiling doubles per retry up to `maxDelay`; the delay is `ceiling × unit` ("full jitter").
    public func delay(retry: Int, unit: Double) -> Duration {
        let ceiling = min(maxDelay.seconds, baseDelay.seconds * pow2(retry))
        return .nanoseconds(Int64(ceiling * min(max(unit, 0), 1) * 1e9))
    }

    private func pow2(_ n: Int) -> Double { n >= 62 ? Double.greatestFiniteMagnitude : Double(1 << n) }
}

/// When to abort a run because of rejected records: a count, or a share of the records read.
public enum ErrorLimit: Sendable, Hashable, CustomStringConvertible {
    /// Abort when more than this many records are rejected.
    case count(Int64)
    /// Abort when more than this percentage of records read are rejected (checked once 1,000 records
    /// were read, and at the end).
    case percent(Double)

    /// Parses `100` or `0.5%`.
    public init?(_ text: String) {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasSuffix("%") {
            guard let v = Double(t.dropLast()), v >= 0, v <= 100 else { return nil }
            self = .percent(v)
        } else {
            guard let v = Int64(t), v >= 0 else { return nil }
            self = .count(v)
        }
    }

    /// Whether `rejected` out of `seen` records exceeds the limit; `final` is the end-of-run check.
    public func exceeded(rejected: Int64, seen: Int64, final: Bool) -> Bool {
        switch self {
        case .count(let n): return rejected > n
        case .percent(let p):
            guard seen > 0, final || seen >= 1_000 else { return false }
            return Double(rejected) * 100 > p * Double(seen)
        }
    }

    /// `100` or `0.5%`.
    public var description: String {
        switch self {
        case .count(let n): return String(n)
        case .percent(let p): return "\(p)%"
        }
    }
}
