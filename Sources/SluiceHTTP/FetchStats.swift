import Foundation
import SluiceCore
import SluiceReport
import Synchronization

/// A token bucket per host: `rate` requests per second, up to `burst` at once. ``reserve(host:now:)``
/// takes a token and says how long to wait for it, so a request is scheduled rather than refused.
final class HostRateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: UInt64
    }

    private let rate: Double
    private let burst: Double
    private let buckets = Locked<[String: Bucket]>([:])

    init(rate: Double, burst: Int) {
        self.rate = rate
        self.burst = Double(max(1, burst))
    }

    /// Takes one of `host`'s tokens at monotonic time `now` (nanoseconds); returns the nanoseconds to wait
    /// before sending (0: at once). Waiting requests hold their tokens, so they go out evenly spaced.
    func reserve(host: String, now: UInt64) -> UInt64 {
        buckets.withLock { all in
            var b = all[host] ?? Bucket(tokens: burst, updated: now)
            if now > b.updated {
                b.tokens = min(burst, b.tokens + Double(now - b.updated) / 1e9 * rate)
                b.updated = now
            }
            b.tokens -= 1
            all[host] = b
            return b.tokens >= 0 ? 0 : UInt64(-b.tokens / rate * 1e9)
        }
    }
}

/// What a fetch did: requests, bodies, retries and failures.
public struct FetchCounts: Sendable, Equatable {
    /// HTTP requests sent (attempts, retries included).
    public var requests: Int64
    /// Records whose body was stored (newly written or already in the blob store).
    public var stored: Int64
    /// Of those, bodies written to the blob store by this run.
    public var blobsWritten: Int64
    /// Of those, bodies the blob store already held (same hash).
    public var blobsPresent: Int64
    /// Records that failed, with their reason in the `error` column.
    public var failed: Int64
    /// Records that needed more than one attempt.
    public var retriedRecords: Int64
    /// Retries that waited as a `Retry-After` header asked.
    public var retryAfterHonoured: Int64
    /// Records an earlier run stored, not fetched again.
    public var resumed: Int64
    /// Records an earlier run failed (fetched again when they come up).
    public var previouslyFailed: Int64
    /// Body bytes received for stored records.
    public var bodyBytes: Int64
    /// Failures by reason (the text before any `(after N attempts)`).
    public var failures: [String: Int64]
    /// Retried attempts by reason.
    public var retryReasons: [String: Int64]
}

final class FetchStats: Sendable {
    let requests = Atomic<Int64>(0)
    let stored = Atomic<Int64>(0)
    let blobsWritten = Atomic<Int64>(0)
    let blobsPresent = Atomic<Int64>(0)
    let retriedItems = Atomic<Int64>(0)
    let retryAfterHonoured = Atomic<Int64>(0)
    let resumed = Atomic<Int64>(0)
    let previouslyFailed = Atomic<Int64>(0)
    let bodyBytes = Atomic<Int64>(0)
    let backoffNanos = Atomic<Int64>(0)
    let rateWaitNanos = Atomic<Int64>(0)
    private let reasons = Locked<(failures: [String: Int64], retries: [String: Int64])>(([:], [:]))

    /// A failed record (rare: a dictionary under a lock is fine).
    func note(failure: String) {
        let key = failure.components(separatedBy: " (after ").first ?? failure
        reasons.withLock { $0.failures[Self.kind(key), default: 0] += 1 }
    }

    /// A failed attempt that may be retried.
    func note(retryReason: String) { reasons.withLock { $0.retries[Self.kind(retryReason), default: 0] += 1 } }

    /// A reason without its per-record details (URLs, byte counts), so that reasons group.
    static func kind(_ reason: String) -> String {
        if reason.hasPrefix("body ended after") { return "body shorter than Content-Length" }
        if reason.hasPrefix("bad URL") { return "bad URL" }
        if reason.hasPrefix("cannot connect to") { return "cannot connect" }
        if let r = reason.range(of: ": the server asked to retry after") { return String(reason[..<r.lowerBound]) }
        return reason
    }

    func snapshot() -> FetchCounts {
        let r = reasons.withLock { $0 }
        return FetchCounts(
            requests: requests.load(ordering: .relaxed), stored: stored.load(ordering: .relaxed),
            blobsWritten: blobsWritten.load(ordering: .relaxed), blobsPresent: blobsPresent.load(ordering: .relaxed),
            failed: r.failures.values.reduce(0, +), retriedRecords: retriedItems.load(ordering: .relaxed),
            retryAfterHonoured: retryAfterHonoured.load(ordering: .relaxed), resumed: resumed.load(ordering: .relaxed),
            previouslyFailed: previouslyFailed.load(ordering: .relaxed), bodyBytes: bodyBytes.load(ordering: .relaxed),
            failures: r.failures, retryReasons: r.retries)
    }

    func lines(concurrency: Int) -> [ReportLine] {
        let c = snapshot()
        let n = Format.count
        var text =
            "\(n(c.requests)) requests (≤\(concurrency) in flight): \(n(c.stored)) stored "
            + "(\(n(c.blobsWritten)) new blobs, \(n(c.blobsPresent)) already in the store, \(Format.bytes(c.bodyBytes))), "
            + "\(n(c.failed)) failed"
        if c.resumed > 0 { text += ", \(n(c.resumed)) stored by an earlier run and skipped" }
        let counts: [String: Int64] = [
            "requests": c.requests, "stored": c.stored, "blobs_written": c.blobsWritten,
            "blobs_present": c.blobsPresent, "failed": c.failed, "retried_records": c.retriedRecords,
            "retry_after_honoured": c.retryAfterHonoured, "resumed": c.resumed, "body_bytes": c.bodyBytes,
            "backoff_ms": backoffNanos.load(ordering: .relaxed) / 1_000_000,
            "rate_wait_ms": rateWaitNanos.load(ordering: .relaxed) / 1_000_000,
        ]
        var out = [ReportLine(label: "fetch", text: text, counts: counts)]
        if c.retriedRecords > 0 {
            let why = c.retryReasons.sorted { $0.value > $1.value }.map { "\(n($0.value)) \($0.key)" }
            var t = "\(n(c.retriedRecords)) records retried (\(why.joined(separator: ", ")))"
            if c.retryAfterHonoured > 0 { t += ", Retry-After honoured \(n(c.retryAfterHonoured))×" }
            t += ", back-off \(Format.seconds(Double(backoffNanos.load(ordering: .relaxed)) / 1e9)) in all"
            out.append(ReportLine(label: "retries", text: t, counts: c.retryReasons))
        }
        if c.failed > 0 {
            let why = c.failures.sorted { $0.value > $1.value }.map { "\(n($0.value)) \($0.key)" }
            out.append(
                ReportLine(
                    label: "failed", text: why.joined(separator: ", ") + " (reasons in the error column)",
                    counts: c.failures))
        }
        return out
    }
}
