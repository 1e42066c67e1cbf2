import Foundation
import SluiceCore
import SluiceInterfaces

/// Settings of a ``FetchTransform``. The defaults suit many small objects from a few hosts.
public struct FetchOptions: Sendable {
    /// The input column holding each record's URL. Default: `url`.
    public var urlColumn = "url"
    /// Requests in flight at once, across hosts; also the most connections opened to one host over
    /// HTTP/1.1. Default: 16.
    public var concurrency = 16
    /// Requests per second to any one host (a token bucket); nil: no limit. Default: nil.
    public var rate: Double?
    /// Requests a host's bucket may send at once after a quiet spell. Default: 1 (evenly spaced).
    public var burst = 1
    /// Longest time for one attempt, from sending the request to the last body byte; also the longest
    /// silence while reading. Default: 30 s.
    public var timeout: Duration = .seconds(30)
    /// Longest time to open a connection. Default: 10 s.
    public var connectTimeout: Duration = .seconds(10)
    /// Largest body accepted; a larger one fails its record without retry. Default: 64 MiB.
    public var maxBodyBytes = 64 << 20
    /// Attempts and back-off for 5xx responses (and 408, 429), timeouts, resets and truncated bodies.
    /// Default: 4 attempts, 250 ms doubling to 10 s, full jitter.
    public var retry = RetryPolicy(maxAttempts: 4, baseDelay: .milliseconds(250), maxDelay: .seconds(10))
    /// The longest `Retry-After` honoured; a server asking for more fails the record. Default: 120 s.
    public var maxRetryAfter: Duration = .seconds(120)
    /// Skip URLs an earlier run stored (with their blob present), read from the sink's table. Default: true.
    public var resume = true
    /// Request headers sent with every request (a `User-Agent`, an `Authorization`).
    public var headers: [(name: String, value: String)] = [("User-Agent", "sluice")]
    /// Redirects followed. Default: 5.
    public var maxRedirects = 5

    /// The default settings.
    public init() {}

    /// Checks the settings.
    /// - Throws: ``SluiceError`` (`.config`) naming the bad setting.
    public func validate() throws {
        guard concurrency >= 1 && concurrency <= 10_000 else {
            throw SluiceError(.config, "fetch: concurrency must be between 1 and 10000, got \(concurrency)")
        }
        if let rate, !(rate > 0) { throw SluiceError(.config, "fetch: rate must be positive, got \(rate)") }
        guard burst >= 1 else { throw SluiceError(.config, "fetch: burst must be at least 1, got \(burst)") }
        guard timeout > .zero else { throw SluiceError(.config, "fetch: timeout must be positive") }
        guard connectTimeout > .zero else { throw SluiceError(.config, "fetch: connect_timeout must be positive") }
        guard maxBodyBytes >= 1 else { throw SluiceError(.config, "fetch: max_body must be at least 1 byte") }
        guard retry.maxAttempts >= 1 else { throw SluiceError(.config, "fetch: attempts must be at least 1") }
        guard !urlColumn.isEmpty else { throw SluiceError(.config, "fetch: url column is empty") }
    }
}

/// The columns a fetch adds to each record.
public enum FetchColumns {
    /// `status`: the final HTTP status, null when no response came.
    public static let status = "status"
    /// `bytes`: the body's length, for stored bodies.
    public static let bytes = "bytes"
    /// `sha256`: the body's SHA-256 in hex (its name in the blob store), for stored bodies.
    public static let sha256 = "sha256"
    /// `elapsed_ms`: from the first attempt's start to the record's end, retries and waits included.
    public static let elapsedMs = "elapsed_ms"
    /// `attempts`: requests made for the record.
    public static let attempts = "attempts"
    /// `error`: why the record failed, null when its body was stored.
    public static let error = "error"

    /// The added fields, in order.
    public static let fields: [Field] = [
        Field(status, .int64), Field(bytes, .int64), Field(sha256, .string), Field(elapsedMs, .float64),
        Field(attempts, .int64), Field(error, .string),
    ]
}
