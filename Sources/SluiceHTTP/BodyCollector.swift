import AsyncHTTPClient
import Crypto
import NIOCore
import NIOHTTP1

/// Receives one response: keeps a 2xx body (up to a limit) while hashing it, and checks it against its
/// `Content-Length`. Other responses' bodies are read and dropped, so their connection can be reused.
final class BodyCollector: HTTPClientResponseDelegate, @unchecked Sendable {
    /// What one attempt received.
    struct Response: Sendable {
        /// The final status (after redirects).
        var status: HTTPResponseStatus
        /// The body of a 2xx response; empty otherwise.
        var body: ByteBuffer
        /// The body's SHA-256, hex; empty for other responses.
        var sha256: String
        /// The response's `Retry-After`, if it had one.
        var retryAfter: RetryAfter?
    }

    /// Why an attempt's body was refused.
    enum Failure: Error, Equatable {
        /// Larger than the limit (the declared length, when there was one).
        case tooLarge(Int?)
        /// Fewer bytes than `Content-Length` said, or more.
        case truncated(got: Int, expected: Int)
    }

    private let limit: Int
    private var status: HTTPResponseStatus = .ok
    private var keep = false
    private var expected: Int?
    private var retryAfter: RetryAfter?
    private var body = ByteBuffer()
    private var hasher = SHA256()

    init(limit: Int) { self.limit = limit }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        status = head.status
        keep = (200..<300).contains(Int(head.status.code))
        expected = head.headers.first(name: "content-length").flatMap { Int($0) }
        retryAfter = head.headers.first(name: "retry-after").flatMap { RetryAfter($0) }
        if keep {
            if let e = expected, e > limit { return task.eventLoop.makeFailedFuture(Failure.tooLarge(e)) }
            body = ByteBufferAllocator().buffer(capacity: expected ?? 16_384)
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        guard keep else { return task.eventLoop.makeSucceededVoidFuture() }
        if body.readableBytes + buffer.readableBytes > limit {
            return task.eventLoop.makeFailedFuture(Failure.tooLarge(expected))
        }
        buffer.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
        var b = buffer
        body.writeBuffer(&b)
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
        guard keep else { return Response(status: status, body: ByteBuffer(), sha256: "", retryAfter: retryAfter) }
        if let e = expected, body.readableBytes != e { throw Failure.truncated(got: body.readableBytes, expected: e) }
        return Response(status: status, body: body, sha256: Self.hex(hasher.finalize()), retryAfter: retryAfter)
    }

    private static let digits = Array("0123456789abcdef".utf8)

    /// Lowercase hex of a digest.
    static func hex(_ digest: SHA256.Digest) -> String {
        String(unsafeUninitializedCapacity: 64) { out in
            var i = 0
            digest.withUnsafeBytes { raw in
                for b in raw {
                    out[i] = digits[Int(b >> 4)]
                    out[i + 1] = digits[Int(b & 15)]
                    i += 2
                }
            }
            return i
        }
    }
}
