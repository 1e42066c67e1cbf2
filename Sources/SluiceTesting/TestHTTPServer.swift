import Crypto
import Foundation
import Hummingbird
import Logging
import NIOCore
import SluiceCore
import Synchronization

/// A fault the ``TestHTTPServer`` injects into a response.
public enum TestFault: String, Sendable, CaseIterable {
    /// `503 Service Unavailable` with `Retry-After`.
    case unavailable = "503"
    /// No response until well past the client's timeout.
    case stall
    /// `404 Not Found` (on every attempt).
    case notFound = "404"
    /// The head promises the whole body, the connection closes after half of it.
    case truncated

    /// Whether a retry can get past it (it hits only the first ``TestServerOptions/faultAttempts`` attempts).
    public var isTransient: Bool { self != .notFound }
}

/// How a ``TestHTTPServer`` behaves. The defaults are W1's: 20–50 ms per response, no faults.
public struct TestServerOptions: Sendable {
    /// Latency injected into every response, uniform in this range, in milliseconds. Default: 20…50.
    public var latencyMs: ClosedRange<Double> = 20...50
    /// Extra delay before a new connection's first response, uniform in this range (ms); nil: none.
    public var newConnectionPenaltyMs: ClosedRange<Double>?
    /// The share of objects that carry each fault (decided per object id, deterministically). Default: none.
    public var faultRates: [TestFault: Double] = [:]
    /// How many attempts at an object a transient fault hits before the object is served. Default: 1.
    public var faultAttempts = 1
    /// The `Retry-After` of a 503, in seconds. Default: 1.
    public var retryAfterSeconds = 1
    /// How long a stalled response waits before it is sent. Default: 10 s.
    public var stallSeconds = 10.0
    /// Seeds object sizes, contents, latencies and fault assignment. Default: 1.
    public var seed: UInt64 = 1

    /// W1's fault mix: 1% 503 with Retry-After, 0.5% stalls past the timeout, 0.2% 404, 0.1% truncated bodies.
    public static let w1Faults: [TestFault: Double] = [
        .unavailable: 0.01, .stall: 0.005, .notFound: 0.002, .truncated: 0.001,
    ]

    /// The W1 defaults.
    public init() {}
}

/// The objects a ``TestHTTPServer`` serves: `GET /o/ID` returns a deterministic body of 5–80 KB (median
/// 20 KB, log-uniform on each side of the median) that begins with the id, so every body differs.
public struct TestObjects: Sendable {
    /// The seed.
    public let seed: UInt64
    private let pool: [UInt8]

    /// Smallest, median and largest body sizes.
    public static let sizes = (min: 5 * 1024, median: 20 * 1024, max: 80 * 1024)

    /// The objects of `seed`.
    public init(seed: UInt64 = 1) {
        self.seed = seed
        var rng = SplitMix(seed: seed ^ 0x5eed)
        var p = [UInt8](repeating: 0, count: 128 * 1024)
        p.withUnsafeMutableBytes { raw in
            for i in stride(from: 0, to: raw.count, by: 8) {
                raw.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self)
            }
        }
        pool = p
    }

    /// A number in [0, 1) fixed by `id` and `salt`.
    public func unit(_ id: Int, salt: UInt64) -> Double {
        var r = SplitMix(seed: seed &+ UInt64(bitPattern: Int64(id)) &* 0x9E37_79B9_7F4A_7C15 &+ salt)
        return Double(r.next() >> 11) / Double(1 << 53)
    }

    /// The body size of object `id`.
    public func size(of id: Int) -> Int {
        let u = unit(id, salt: 1)
        let (lo, mid, hi) = (Double(Self.sizes.min), Double(Self.sizes.median), Double(Self.sizes.max))
        let s = u < 0.5 ? lo * pow(mid / lo, u * 2) : mid * pow(hi / mid, (u - 0.5) * 2)
        return min(Self.sizes.max, max(Self.sizes.min, Int(s)))
    }

    /// The body of object `id`, written into `buffer` (one copy from the pool; what the server sends).
    public func writeBody(of id: Int, into buffer: inout ByteBuffer) {
        let n = size(of: id)
        buffer.reserveCapacity(minimumWritableBytes: n)
        buffer.writeInteger(Int64(id), endianness: .little)
        let start = Int(UInt64(bitPattern: Int64(id)) &* 2_654_435_761 % UInt64(pool.count - Self.sizes.max))
        _ = pool.withUnsafeBytes { p in
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: p[(start + 8)..<(start + n)]))
        }
    }

    /// The body of object `id`.
    public func body(of id: Int) -> [UInt8] {
        let n = size(of: id)
        var out = [UInt8](repeating: 0, count: n)
        withUnsafeBytes(of: Int64(id).littleEndian) { idBytes in
            for i in 0..<8 { out[i] = idBytes[i] }
        }
        let start = Int(UInt64(bitPattern: Int64(id)) &* 2_654_435_761 % UInt64(pool.count - Self.sizes.max))
        out.withUnsafeMutableBufferPointer { o in
            pool.withUnsafeBufferPointer { p in
                for i in 8..<n { o[i] = p[start + i] }
            }
        }
        return out
    }

    /// The fault object `id` carries under `rates`, if any.
    public func fault(of id: Int, rates: [TestFault: Double]) -> TestFault? {
        let u = unit(id, salt: 3)
        var edge = 0.0
        for f in TestFault.allCases {
            edge += rates[f] ?? 0
            if u < edge { return f }
        }
        return nil
    }
}

/// The SHA-256 of `bytes` in lowercase hex: a body's name in a blob store.
public func sha256Hex(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

/// A small deterministic generator (SplitMix64).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// An HTTP/1.1 server on loopback for tests and benchmarks (Hummingbird): serves ``TestObjects`` at
/// `/o/ID` with injected latency, an optional new-connection penalty and faults, and counts the
/// connections it accepted and the requests it answered.
///
/// A request can also ask for a fault: `/o/ID?fault=503|stall|404|truncated[&times=N]` (N attempts, by
/// default ``TestServerOptions/faultAttempts``; a large N makes it permanent).
///
/// ```swift
/// let server = try await TestHTTPServer.start()
/// defer { server.stopBlocking() }
/// let url = server.url(id: 7)
/// ```
public final class TestHTTPServer: Sendable {
    /// The port on 127.0.0.1.
    public let port: Int
    /// The settings.
    public let options: TestServerOptions
    /// The objects served.
    public let objects: TestObjects
    private let counters: Counters
    private let task: Task<Void, any Error>

    final class Counters: Sendable {
        let connections = Atomic<Int>(0)
        let requests = Atomic<Int>(0)
        let inFlight = Atomic<Int>(0)
        let maxInFlight = Atomic<Int>(0)
        let attempts = Locked<[Int: Int]>([:])
    }

    private init(
        port: Int, options: TestServerOptions, objects: TestObjects, counters: Counters, task: Task<Void, any Error>
    ) {
        self.port = port
        self.options = options
        self.objects = objects
        self.counters = counters
        self.task = task
    }

    /// Connections accepted so far.
    public var connectionsAccepted: Int { counters.connections.load(ordering: .relaxed) }
    /// Requests answered (or started) so far.
    public var requestsServed: Int { counters.requests.load(ordering: .relaxed) }
    /// The most requests the server was answering at one time.
    public var maxConcurrentRequests: Int { counters.maxInFlight.load(ordering: .relaxed) }
    /// Requests seen for object `id`.
    public func attempts(of id: Int) -> Int { counters.attempts.withLock { $0[id] ?? 0 } }

    /// The URL of object `id`, optionally asking for `fault` on its first `times` attempts.
    public func url(id: Int, fault: TestFault? = nil, times: Int? = nil) -> String {
        var u = "http://127.0.0.1:\(port)/o/\(id)"
        if let fault { u += "?fault=\(fault.rawValue)" + (times.map { "&times=\($0)" } ?? "") }
        return u
    }

    /// The fault object `id` gets from the configured mix (not counting faults asked for in the URL).
    public func fault(of id: Int) -> TestFault? { objects.fault(of: id, rates: options.faultRates) }

    /// Starts a server on a free port of 127.0.0.1.
    public static func start(_ options: TestServerOptions = TestServerOptions()) async throws -> TestHTTPServer {
        let objects = TestObjects(seed: options.seed)
        let counters = Counters()
        let router = Router(context: ServerContext.self)
        router.get("/o/:id") { request, context -> Response in
            try await respond(request, context, objects: objects, options: options, counters: counters)
        }
        var logger = Logger(label: "sluice-test-server")
        logger.logLevel = .critical
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let penalty = options.newConnectionPenaltyMs
        let app = Application(
            router: router,
            server: .http1(
                configuration: .init(
                    additionalChannelHandlers: [ConnectionGate(counters: counters, penaltyMs: penalty)])),
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: nil, backlog: 1024),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            },
            logger: logger)
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var port = 0
        for await p in portStream {
            port = p
            break
        }
        guard port > 0 else {
            task.cancel()
            throw TestServerError(message: "the test HTTP server did not start")
        }
        return TestHTTPServer(port: port, options: options, objects: objects, counters: counters, task: task)
    }

    /// ``start(_:)`` from synchronous code (a benchmark's main thread; never from a Swift concurrency task).
    public static func startBlocking(_ options: TestServerOptions = TestServerOptions()) throws -> TestHTTPServer {
        let box = Locked<Result<TestHTTPServer, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                let server = try await start(options)
                box.withLock { $0 = .success(server) }
            } catch {
                box.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        return try box.withLock { $0! }.get()
    }

    /// Stops the server.
    public func stop() async {
        task.cancel()
        _ = await task.result
    }

    /// ``stop()`` from synchronous code.
    public func stopBlocking() {
        let done = DispatchSemaphore(value: 0)
        Task {
            await stop()
            done.signal()
        }
        done.wait()
    }

    private static func respond(
        _ request: Request, _ context: ServerContext, objects: TestObjects, options: TestServerOptions,
        counters: Counters
    ) async throws -> Response {
        counters.requests.add(1, ordering: .relaxed)
        let now = counters.inFlight.add(1, ordering: .relaxed).newValue
        defer { counters.inFlight.subtract(1, ordering: .relaxed) }
        var seen = counters.maxInFlight.load(ordering: .relaxed)
        while now > seen {
            let (done, current) = counters.maxInFlight.compareExchange(
                expected: seen, desired: now, ordering: .relaxed)
            if done { break }
            seen = current
        }
        guard let id = context.parameters.get("id", as: Int.self) else { return Response(status: .badRequest) }
        let query = request.uri.queryParameters
        let asked = query.get("fault").flatMap { TestFault(rawValue: $0) }
        let fault = asked ?? objects.fault(of: id, rates: options.faultRates)
        let times = query.get("times").flatMap { Int($0) } ?? options.faultAttempts
        let attempt = counters.attempts.withLock { a -> Int in
            a[id, default: 0] += 1
            return a[id]!
        }
        let u = objects.unit(id, salt: 100 &+ UInt64(attempt))
        let ms = options.latencyMs.lowerBound + (options.latencyMs.upperBound - options.latencyMs.lowerBound) * u
        // The connection's event loop keeps precise timers (Task.sleep may add a few milliseconds of leeway,
        // which would count against the client being measured).
        try await context.channel.eventLoop.scheduleTask(in: .microseconds(Int64(ms * 1000))) {}.futureResult.get()
        let active = fault.flatMap { f in !f.isTransient || attempt <= times ? f : nil }
        switch active {
        case .notFound:
            return Response(status: .notFound)
        case .unavailable:
            return Response(status: .serviceUnavailable, headers: [.retryAfter: "\(options.retryAfterSeconds)"])
        case .stall:
            try await Task.sleep(for: .milliseconds(Int64(options.stallSeconds * 1000)))
        default:
            break
        }
        var buffer = ByteBuffer()
        objects.writeBody(of: id, into: &buffer)
        let total = buffer.readableBytes
        if active == .truncated {
            let half = buffer.getSlice(at: 0, length: total / 2)!
            let channel = context.channel
            return Response(
                status: .ok, headers: [.contentType: "application/octet-stream"],
                body: ResponseBody(contentLength: total) { writer in
                    try await writer.write(half)
                    try await Task.sleep(for: .milliseconds(20))
                    try await channel.close()
                    throw TestServerError(message: "truncated on purpose")
                })
        }
        return Response(
            status: .ok, headers: [.contentType: "application/octet-stream"], body: ResponseBody(byteBuffer: buffer))
    }
}

/// An error of the test server.
public struct TestServerError: Error, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    /// The message.
    public var description: String { message }
}

/// The request context: Hummingbird's basics plus the connection, so a response can cut it.
struct ServerContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Counts each accepted connection and, with a penalty, holds its first request back for a while.
final class ConnectionGate: ChannelInboundHandler, RemovableChannelHandler {
    // Parts are forwarded untouched; the type is never unwrapped.
    typealias InboundIn = Never
    typealias InboundOut = Never

    private var penaltyMs: ClosedRange<Double>?
    private var held: [NIOAny] = []
    private var holding = false

    init(counters: TestHTTPServer.Counters, penaltyMs: ClosedRange<Double>?) {
        counters.connections.add(1, ordering: .relaxed)
        self.penaltyMs = penaltyMs
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let range = penaltyMs else {
            if holding {
                held.append(data)
            } else {
                context.fireChannelRead(data)
            }
            return
        }
        penaltyMs = nil
        holding = true
        held.append(data)
        let ms = Double.random(in: range)
        let loop = context.eventLoop.assumeIsolated()
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        loop.scheduleTask(in: .microseconds(Int64(ms * 1000))) {
            let h = me.value
            h.holding = false
            let parts = h.held
            h.held = []
            for p in parts { ctx.value.fireChannelRead(p) }
            ctx.value.fireChannelReadComplete()
        }
    }
}
