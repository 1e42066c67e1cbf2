import NIOCore
import PostgresNIO
import SluiceCore

// The guard every statement of a session runs under: PostgresNIO 1.33.2 can leave an operation pending for
// good on a connection that closed under it; pinned by `PostgresBinaryCopyTests` (a stuck operation fails
// within its grace) and `ServerRestartTests` (a server restart mid-load).
extension PostgresSession {
    /// How long a statement may go on after its connection closed before the caller is told the connection is
    /// lost.
    static let closedGrace: TimeAmount = .seconds(2)

    /// Runs `operation` (one statement, a COPY, closing) and returns its result — or, when the connection
    /// closes and `operation` has not finished ``closedGrace`` later, throws a lost-connection error (kind
    /// retry). PostgresNIO 1.33.2 can leave an operation waiting for good on a connection that closed under it
    /// (measured: a server restart during an append load left a writer lane suspended for good, no thread
    /// left running); so that the batch is retried instead, the operation runs as a task of its own that is
    /// abandoned then (it holds only the dead connection). One task per statement, never per row.
    static func bounded<T: Sendable>(
        by connection: PostgresConnection, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let outcome = BoundedOutcome<T>()
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            outcome.set(c)
            // While the operation runs, look at the connection every 100 ms (never per row).
            let closedAt = Locked<NIODeadline?>(nil)
            let watch = connection.closeFuture.eventLoop.scheduleRepeatedTask(
                initialDelay: .milliseconds(100), delay: .milliseconds(100)
            ) { task in
                guard connection.isClosed else { return }
                let now = NIODeadline.now()
                let since = closedAt.withLock { at -> NIODeadline in
                    if at == nil { at = now }
                    return at!
                }
                guard now - since >= closedGrace else { return }
                task.cancel()
                outcome.finish(
                    .failure(
                        SluiceError(
                            .connectionLost, "the connection closed during a statement", kind: .retry,
                            underlying: PostgresClientFailure(text: "connection closed during a statement"))))
            }
            outcome.whenFinished { watch.cancel() }
            Task {
                do {
                    outcome.finish(.success(try await operation()))
                } catch {
                    outcome.finish(.failure(error))
                }
            }
        }
    }
}

/// The continuation of a bounded operation, resumed once: by the operation, or by the watchdog of its
/// connection.
private final class BoundedOutcome<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var done = false
        var onFinish: (@Sendable () -> Void)?
    }
    private let state = Locked(State())

    func set(_ c: CheckedContinuation<T, any Error>) { state.withLock { $0.continuation = c } }

    /// Runs `action` once the outcome is known (at once if it is).
    func whenFinished(_ action: @escaping @Sendable () -> Void) {
        let now = state.withLock { st -> Bool in
            if st.done { return true }
            st.onFinish = action
            return false
        }
        if now { action() }
    }

    func finish(_ result: Result<T, any Error>) {
        var continuation: CheckedContinuation<T, any Error>?
        var action: (@Sendable () -> Void)?
        state.withLock { st in
            guard !st.done else { return }
            st.done = true
            continuation = st.continuation
            action = st.onFinish
            st.onFinish = nil
        }
        action?()
        continuation?.resume(with: result)
    }
}
