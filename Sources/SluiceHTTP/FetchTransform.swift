import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceBlobStore
import SluiceCore
import SluiceInterfaces
import SluiceReport
import Synchronization

/// Fetches each record's URL and stores the body by its SHA-256 in a ``BlobStore``: the W1 bulk downloader
/// as a pipeline stage.
///
/// One `HTTPClient` serves the run: connections are pooled and kept alive (HTTP/2 where a TLS server offers
/// it), at most ``FetchOptions/concurrency`` requests are in flight, each host gets a token-bucket
/// ``FetchOptions/rate``, and 5xx responses, timeouts, resets and truncated bodies are retried with
/// exponential back-off and jitter, honouring `Retry-After`. A body shorter than its `Content-Length` is an
/// error, never data. Every record comes out with ``FetchColumns`` — a failed one with its reason in `error`.
///
/// With ``FetchOptions/resume``, URLs that the sink's table already holds with a stored body (no error, a
/// hash, the blob present with that size) are not fetched again and not rewritten.
///
/// ```swift
/// let fetch = try FetchTransform(options: FetchOptions(), blobs: BlobStore(root: "thumbs"))
/// let pipeline = Pipeline(source: urls, io: fetch, sink: manifest)
/// ```
public final class FetchTransform: IOTransform, @unchecked Sendable {
    /// The settings.
    public let options: FetchOptions
    /// Where bodies go; nil: bodies are hashed and measured, not kept.
    public let blobs: BlobStore?

    private let clientLock = Locked<HTTPClient?>(nil)
    private let limiter: HostRateLimiter?
    private var urlIndex = 0
    /// URL → (sha256, bytes) of records an earlier run stored.
    private var stored: [String: (String, Int64)] = [:]
    private let stats = FetchStats()
    private let headers: HTTPHeaders
    private let closed = Atomic<Bool>(false)
    /// Set once the run stops: no record waits for a retry any more.
    private let stopping = Atomic<Bool>(false)
    /// Records waiting for their next attempt (back-off, `Retry-After`), with the reason of the last failure.
    private let waiting = Locked<[ObjectIdentifier: (item: FetchItem, status: Int?, reason: String)]>([:])

    /// Creates the stage.
    /// - Throws: ``SluiceError`` (`.config`) for bad settings.
    /// Where the client logs (the caller's; the executable bootstraps the backend).
    public let logger: Logger

    /// Creates the stage, storing bodies in `blobs` (nil: hash only) and logging to `logger`.
    public init(options: FetchOptions, blobs: BlobStore?, logger: Logger = Logger(label: "sluice.fetch")) throws {
        try options.validate()
        self.options = options
        self.logger = logger
        self.blobs = blobs
        limiter = options.rate.map { HostRateLimiter(rate: $0, burst: options.burst) }
        var h = HTTPHeaders()
        for (n, v) in options.headers { h.add(name: n, value: v) }
        headers = h
    }

    /// `fetch`.
    public var name: String { "fetch" }
    /// ``FetchOptions/concurrency``.
    public var concurrency: Int { options.concurrency }

    /// The input plus ``FetchColumns/fields``.
    /// - Throws: ``SluiceError`` (`.config`) when the URL column is missing or an added column is taken.
    public func outputSchema(for input: Schema) throws -> Schema {
        guard let i = input.index(of: options.urlColumn) else {
            throw SluiceError(.config, "fetch: the input has no URL column '\(options.urlColumn)' (it has \(input))")
        }
        guard input.fields[i].type == .string else {
            throw SluiceError(.config, "fetch: the URL column '\(options.urlColumn)' must be text")
        }
        for f in FetchColumns.fields where input.index(of: f.name) != nil {
            throw SluiceError(
                .config, "fetch: the input already has a column '\(f.name)', which the fetch adds; rename it")
        }
        urlIndex = i
        var s = input
        s.fields += FetchColumns.fields
        return s
    }

    /// Reads which URLs an earlier run stored (when resuming) and starts the HTTP client.
    public func open(stored rows: StoredRows) async throws {
        if options.resume {
            let found = Locked<(stored: [String: (String, Int64)], failed: Int64)>(([:], 0))
            _ = try await rows.forEach(
                columns: [options.urlColumn, FetchColumns.sha256, FetchColumns.bytes, FetchColumns.error]
            ) { row in
                guard let url = row[0] else { return }
                found.withLock {
                    if row[3] == nil, let sha = row[1], let n = row[2].flatMap({ Int64($0) }) {
                        $0.stored[url] = (sha, n)
                    } else {
                        $0.failed += 1
                    }
                }
            }
            let (s, failed) = found.withLock { $0 }
            stored = s
            stats.previouslyFailed.store(failed, ordering: .relaxed)
        }
        var config = HTTPClient.Configuration()
        config.timeout = .init(
            connect: .nanoseconds(options.connectTimeout.nanoseconds), read: .nanoseconds(options.timeout.nanoseconds))
        config.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: options.concurrency)
        // A refused or failed connection fails the attempt at once; the fetch's own retry policy decides.
        config.connectionPool.retryConnectionEstablishment = false
        config.redirectConfiguration =
            options.maxRedirects > 0 ? .follow(max: options.maxRedirects, allowCycles: false) : .disallow
        config.decompression = .disabled
        let client = HTTPClient(
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: config,
            backgroundActivityLogger: logger)
        clientLock.withLock { $0 = client }
    }

    /// Starts fetching row `row`'s URL, or returns false when an earlier run stored it.
    public func start(_ batch: RecordBatch, row: Int, completion: IOCompletion) -> Bool {
        let column = batch.columns[urlIndex]
        let item = FetchItem(completion: completion, started: MonotonicClock.now())
        guard !column.isNull(row) else {
            finish(item, status: nil, error: "no URL (the \(options.urlColumn) field is empty)")
            return true
        }
        let url = column.string(at: row).trimmingCharacters(in: .whitespaces)
        if let (sha, n) = stored[url], blobs?.contains(sha256: sha, size: n) ?? true {
            stats.resumed.add(1, ordering: .relaxed)
            return false
        }
        item.url = url
        attempt(item)
        return true
    }

    /// With a `batch` blob store: syncs the blobs this batch's rows name before they commit.
    public func willEmit(_ batch: RecordBatch) throws { try blobs?.sync() }

    /// The run is stopping: records waiting for a retry end now, failed with their last reason (a re-run
    /// fetches them again) — a `Retry-After` of minutes must not hold up a Ctrl-C.
    public func interrupt() {
        stopping.store(true, ordering: .relaxed)
        let abandoned = waiting.withLock { w -> [(item: FetchItem, status: Int?, reason: String)] in
            defer { w.removeAll() }
            return Array(w.values)
        }
        for a in abandoned {
            finish(
                a.item, status: a.status, error: "\(a.reason) (the run stopped before attempt \(a.item.attempts + 1))")
        }
    }

    /// Shuts the HTTP client down (requests still in flight fail as cancelled).
    public func close() {
        interrupt()
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        let client = clientLock.withLock { c -> HTTPClient? in
            defer { c = nil }
            return c
        }
        try? client?.shutdown().wait()
    }

    /// Requests, stored bodies, retries and failures by reason.
    public var reportLines: [ReportLine] { stats.lines(concurrency: options.concurrency) }

    /// URLs that failed after their retries (each written with its reason in the `error` column).
    public var failedRecords: Int64 { stats.snapshot().failed }

    /// What the fetch did so far.
    public var counts: FetchCounts { stats.snapshot() }

    // MARK: - One attempt

    private func attempt(_ item: FetchItem) {
        guard let client = clientLock.withLock({ $0 }) else {
            finish(item, status: nil, error: "cancelled: the run stopped")
            return
        }
        let request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: item.url, method: .GET, headers: headers)
        } catch {
            finish(item, status: nil, error: "bad URL '\(item.url)': \(Self.describe(error).reason)")
            return
        }
        let delay = limiter?.reserve(host: request.url.host ?? "", now: MonotonicClock.now()) ?? 0
        let go = { @Sendable [self] in
            item.attempts += 1
            stats.requests.add(1, ordering: .relaxed)
            let collector = BodyCollector(limit: options.maxBodyBytes)
            let task = client.execute(
                request: request, delegate: collector, eventLoop: .indifferent,
                deadline: .now() + .nanoseconds(options.timeout.nanoseconds), logger: logger)
            task.futureResult.whenComplete { [self] result in completed(item, result) }
        }
        if delay > 0 {
            stats.rateWaitNanos.add(Int64(delay), ordering: .relaxed)
            MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .nanoseconds(Int64(delay))) { go() }
        } else {
            go()
        }
    }

    private func completed(_ item: FetchItem, _ result: Result<BodyCollector.Response, any Error>) {
        switch result {
        case .success(let r):
            let code = Int(r.status.code)
            if (200..<300).contains(code) {
                store(item, r)
                return
            }
            let reason = "HTTP \(code) \(r.status.reasonPhrase)"
            if [408, 429, 500, 502, 503, 504].contains(code) {
                retryOrFail(item, status: code, reason: reason, retryAfter: r.retryAfter)
            } else {
                finish(item, status: code, error: reason)
            }
        case .failure(let e):
            let (reason, retryable) = Self.describe(
                e, timeout: options.timeout, limit: options.maxBodyBytes, host: URL(string: item.url)?.host ?? "")
            if retryable && !closed.load(ordering: .relaxed) {
                retryOrFail(item, status: nil, reason: reason, retryAfter: nil)
            } else {
                finish(item, status: nil, error: reason)
            }
        }
    }

    private func retryOrFail(_ item: FetchItem, status: Int?, reason: String, retryAfter: RetryAfter?) {
        stats.note(retryReason: reason)
        let asked = retryAfter.map { Duration.nanoseconds($0.nanoseconds(now: Date())) }
        let wait: Int64
        switch options.retry.decide(
            afterAttempt: item.attempts, unit: Double.random(in: 0...1), retryAfter: asked,
            maxRetryAfter: options.maxRetryAfter)
        {
        case .attemptsExhausted:
            let tries = item.attempts == 1 ? "1 attempt" : "\(item.attempts) attempts"
            finish(item, status: status, error: "\(reason) (after \(tries))")
            return
        case .waitTooLong(let d):
            finish(
                item, status: status,
                error:
                    "\(reason): the server asked to retry after \(d.nanoseconds / 1_000_000_000) s, more than max_retry_after (\(Int64(options.maxRetryAfter.seconds)) s)"
            )
            return
        case .retry(let d):
            wait = d.nanoseconds
            if asked != nil { stats.retryAfterHonoured.add(1, ordering: .relaxed) }
        }
        if item.attempts == 1 { stats.retriedItems.add(1, ordering: .relaxed) }
        stats.backoffNanos.add(wait, ordering: .relaxed)
        let id = ObjectIdentifier(item)
        let queued = waiting.withLock { w -> Bool in
            guard !stopping.load(ordering: .relaxed) else { return false }
            w[id] = (item, status, reason)
            return true
        }
        guard queued else {
            finish(item, status: status, error: "\(reason) (the run stopped before attempt \(item.attempts + 1))")
            return
        }
        MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .nanoseconds(wait)) { [self] in
            // Gone when the run stopped meanwhile (``interrupt()`` finished the record).
            if waiting.withLock({ $0.removeValue(forKey: id) }) != nil { attempt(item) }
        }
    }

    private func store(_ item: FetchItem, _ r: BodyCollector.Response) {
        let hex = r.sha256
        let n = Int64(r.body.readableBytes)
        let write = { @Sendable [self] in
            do {
                if let blobs {
                    let wrote = try r.body.withUnsafeReadableBytes { try blobs.write($0, sha256: hex) }
                    if wrote {
                        stats.blobsWritten.add(1, ordering: .relaxed)
                    } else {
                        stats.blobsPresent.add(1, ordering: .relaxed)
                    }
                }
                stats.bodyBytes.add(n, ordering: .relaxed)
                finish(item, status: Int(r.status.code), bytes: n, sha256: hex, error: nil)
            } catch {
                finish(item, status: Int(r.status.code), error: "\(error)")
            }
        }
        if blobs?.durability == .each {
            // An fsync per blob blocks for milliseconds: keep it off the event loops, whose every stall delays
            // the responses of all their connections.
            NIOThreadPool.singleton.submit { _ in write() }
        } else {
            // Writing into the page cache (~0.1 ms with the file's creation) costs less here than a hop to
            // another thread and back (measured on W1 at concurrency 64: 2–9% faster).
            write()
        }
    }

    private func finish(
        _ item: FetchItem, status: Int?, bytes: Int64? = nil, sha256: String? = nil, error: String?
    ) {
        let ms = Double(MonotonicClock.now() - item.started) / 1e6
        if let error { stats.note(failure: error) } else { stats.stored.add(1, ordering: .relaxed) }
        item.completion.finish([
            status.map { .int64(Int64($0)) } ?? .null, bytes.map { .int64($0) } ?? .null,
            sha256.map { .string($0) } ?? .null, .float64(ms), .int64(Int64(item.attempts)),
            error.map { .string($0) } ?? .null,
        ])
    }

    /// A readable reason for a failed attempt, and whether another attempt may succeed.
    static func describe(
        _ error: any Error, timeout: Duration = .seconds(30), limit: Int = 0, host: String = ""
    ) -> (reason: String, retryable: Bool) {
        switch error {
        case let e as BodyCollector.Failure:
            switch e {
            case .tooLarge(let n):
                return ("body larger than max_body (\(limit) bytes\(n.map { "; Content-Length \($0)" } ?? ""))", false)
            case .truncated(let got, let expected):
                return ("body ended after \(got) of \(expected) bytes (Content-Length)", true)
            }
        case let e as HTTPClientError:
            let t = Self.format(timeout)
            switch e {
            case .readTimeout: return ("timed out: no data for \(t)", true)
            case .deadlineExceeded: return ("timed out: no complete response within \(t)", true)
            case .connectTimeout: return ("timed out connecting", true)
            case .remoteConnectionClosed: return ("the server closed the connection before the response ended", true)
            case .cancelled, .alreadyShutdown: return ("cancelled: the run stopped", false)
            case .invalidURL, .emptyHost, .emptyScheme: return ("invalid URL", false)
            case .redirectLimitReached: return ("too many redirects", false)
            case .redirectCycleDetected: return ("redirect cycle", false)
            default:
                if "\(e)".contains("unsupportedScheme") { return ("unsupported URL scheme", false) }
                return ("\(e)", true)
            }
        case let e as HTTPParserError:
            if case .invalidEOFState = e { return ("the connection closed before the body was complete", true) }
            return ("malformed response (\(e))", true)
        case let e as NIOConnectionError:
            let inner = e.connectionErrors.first.map { "\($0.error)" } ?? "\(e)"
            return ("cannot connect to \(e.host):\(e.port): \(inner)", true)
        case let e as IOError:
            return ("cannot reach \(host): \(String(cString: strerror(e.errnoCode)))", true)
        default:
            return ("\(error)", true)
        }
    }

    private static func format(_ d: Duration) -> String {
        let s = d.seconds
        return s >= 1 ? (s == s.rounded() ? "\(Int(s)) s" : String(format: "%.1f s", s)) : "\(Int(s * 1000)) ms"
    }
}

/// One record's fetch, across its attempts. Touched by one attempt at a time.
final class FetchItem: @unchecked Sendable {
    let completion: IOCompletion
    let started: UInt64
    var url = ""
    var attempts = 0

    init(completion: IOCompletion, started: UInt64) {
        self.completion = completion
        self.started = started
    }
}

/// A `Retry-After` header: delay seconds or an HTTP date.
enum RetryAfter: Sendable, Equatable {
    case seconds(Int64)
    case date(Date)

    /// Parses `120` or `Wed, 21 Oct 2015 07:28:00 GMT`; nil for anything else.
    init?(_ text: String) {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let s = Int64(t), s >= 0 {
            self = .seconds(s)
            return
        }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let d = f.date(from: t) else { return nil }
        self = .date(d)
    }

    /// The delay it asks for, from `now`.
    func nanoseconds(now: Date) -> Int64 {
        switch self {
        case .seconds(let s): return s * 1_000_000_000
        case .date(let d): return max(0, Int64(d.timeIntervalSince(now) * 1e9))
        }
    }
}
