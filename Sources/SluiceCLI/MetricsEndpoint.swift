import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import SluiceCore

/// `--metrics HOST:PORT`: serves the Prometheus text format at `/metrics` for as long as the run lasts (a
/// service of the run's group: it closes on the group's graceful shutdown).
final class MetricsEndpoint: Service, Sendable {
    private let channel: any Channel
    /// The address it listens on (`127.0.0.1:9464`).
    let address: String

    private init(channel: any Channel, address: String) {
        self.channel = channel
        self.address = address
    }

    /// Binds `HOST:PORT` (port 0 picks a free one) and starts serving `registry`.
    ///
    /// - Throws: ``SluiceError`` (`.config`) when the address is malformed or cannot be bound.
    static func bind(_ hostPort: String, registry: PrometheusCollectorRegistry) async throws -> MetricsEndpoint {
        guard let colon = hostPort.lastIndex(of: ":"), let port = Int(hostPort[hostPort.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw SluiceError(.config, "--metrics takes HOST:PORT (127.0.0.1:9464), got '\(hostPort)'")
        }
        let host = String(hostPort[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        do {
            let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(MetricsHandler(registry: registry))
                    }
                }
                .bind(host: host.isEmpty ? "127.0.0.1" : host, port: port).get()
            let bound = channel.localAddress.map { "\($0.ipAddress ?? host):\($0.port ?? port)" } ?? hostPort
            return MetricsEndpoint(channel: channel, address: bound)
        } catch {
            throw SluiceError(.config, "--metrics \(hostPort): cannot listen there: \(error)")
        }
    }

    /// Serves until the group shuts down gracefully.
    func run() async throws {
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: { [channel] in
            channel.close(promise: nil)
        }
    }
}

/// Answers `GET /metrics` with the registry's text, anything else with 404.
private final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let found = head.method == .GET && path == "/metrics"
            let body: [UInt8] = found ? registry.emitToBuffer() : Array("not found: try /metrics\n".utf8)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
            headers.add(name: "Content-Length", value: "\(body.count)")
            let keepAlive = head.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(
                    .head(HTTPResponseHead(version: head.version, status: found ? .ok : .notFound, headers: headers))),
                promise: nil)
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive { done.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
        }
    }
}
