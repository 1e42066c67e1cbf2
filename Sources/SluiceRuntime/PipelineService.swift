import ServiceLifecycle
import SluiceCore
import SluiceReport
import Synchronization

/// A pipeline run as a service of a `ServiceGroup` (swift-service-lifecycle): graceful shutdown (the group's
/// signals, SIGINT/SIGTERM in the CLI) stops the reading, and what was read is written and committed before
/// ``run()`` returns; cancelling the group's task does the same. The report is kept in ``report``.
public final class PipelineService: Service, Sendable {
    /// The pipeline.
    public let pipeline: Pipeline
    private let result = Locked<Result<RunReport, any Error>?>(nil)

    /// Wraps `pipeline`. To end the rest of a group with the run (a metrics endpoint), give the service
    /// `successTerminationBehavior: .gracefullyShutdownGroup`.
    public init(pipeline: Pipeline) { self.pipeline = pipeline }

    /// Runs the pipeline to its end, stopping its reading on graceful shutdown. A run that could not start
    /// rethrows its error here, and in ``report()``.
    public func run() async throws {
        do {
            let report = try await withGracefulShutdownHandler {
                try await pipeline.run()
            } onGracefulShutdown: { [pipeline] in
                pipeline.cancel()
            }
            result.withLock { $0 = .success(report) }
        } catch {
            result.withLock { $0 = .failure(error) }
            throw error
        }
    }

    /// The run's report once ``run()`` returned.
    ///
    /// - Throws: the error the run could not start with; ``CancellationError`` if it never ran.
    public func report() throws -> RunReport {
        guard let r = result.withLock({ $0 }) else { throw CancellationError() }
        return try r.get()
    }
}
