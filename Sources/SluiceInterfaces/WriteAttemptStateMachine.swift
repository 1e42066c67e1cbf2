import SluiceCore

/// What to do after a failed attempt, for any retried operation (a sink's batch, a fetch): retry after a
/// delay, or give up. Pure: the caller supplies the randomness and does the waiting.
public enum RetryDecision: Sendable, Equatable {
    /// Try again after this long.
    case retry(after: Duration)
    /// Every attempt was used.
    case attemptsExhausted
    /// The other side asked for a wait longer than the caller allows (`Retry-After` over `max_retry_after`).
    case waitTooLong(Duration)
}

extension RetryPolicy {
    /// The decision after attempt number `attempt` (1-based) failed: a jittered back-off (`unit` in 0…1), at
    /// least `retryAfter` when the other side asked for one, unless that exceeds `maxRetryAfter`.
    public func decide(
        afterAttempt attempt: Int, unit: Double, retryAfter: Duration? = nil, maxRetryAfter: Duration? = nil
    ) -> RetryDecision {
        guard attempt < maxAttempts else { return .attemptsExhausted }
        var wait = delay(retry: attempt - 1, unit: unit)
        if let asked = retryAfter {
            if let limit = maxRetryAfter, asked > limit { return .waitTooLong(asked) }
            wait = max(wait, asked)
        }
        return .retry(after: wait)
    }
}

/// Writing one batch with retries and bisection, as a pure state machine: it says which rows to write next,
/// when to wait, which rows to reject, and when the batch is done or failed; the writer thread does the I/O.
///
/// A failure of kind ``SluiceError/Kind/retry`` is retried with the policy's back-off (each part of a
/// bisected batch has its own attempts); one of kind ``SluiceError/Kind/bisect`` splits the rows in halves
/// until the refused rows stand alone, and those are rejected while the rest are written; any other failure
/// ends the batch.
public struct WriteAttemptStateMachine: Sendable {
    /// The next step.
    public enum Action: Sendable {
        /// Write these rows of the batch (one transaction).
        case write(Range<Int>)
        /// Wait this long, then call ``resume()``.
        case sleep(Duration)
        /// The batch is done.
        case done(Outcome)
        /// The batch cannot be written.
        case fail(SluiceError)
    }

    /// What writing a batch came to: rows written, rows rejected (by batch row) with the reason, child rows
    /// written.
    public struct Outcome: Sendable, Equatable {
        /// Rows written.
        public var written = 0
        /// Rows the store refused.
        public var rejected: [Rejected] = []
        /// Child-table rows written with them.
        public var childRows = 0
    }

    /// A row the store refused, by its index in the batch.
    public struct Rejected: Sendable, Equatable {
        /// The row's index in the batch.
        public var row: Int
        /// Why.
        public var reason: String

        /// A rejected row.
        public init(row: Int, reason: String) {
            self.row = row
            self.reason = reason
        }
    }

    private let policy: RetryPolicy
    private var pending: [Range<Int>]
    private var current: Range<Int>
    private var attempt = 1
    private var outcome = Outcome()

    /// A machine for a batch of `rows` rows.
    public init(rows: Int, policy: RetryPolicy) {
        self.policy = policy
        current = 0..<rows
        pending = []
    }

    /// The first step: write every row.
    public func start() -> Action { .write(current) }

    /// The rows written last succeeded: `written` rows, `refused` rows (indices relative to the rows written)
    /// with their reasons, `childRows` child rows.
    public mutating func succeeded(
        written n: Int, refused: [(row: Int, reason: String)], childRows kids: Int
    )
        -> Action
    {
        outcome.written += n
        outcome.childRows += kids
        outcome.rejected += refused.map { Rejected(row: current.lowerBound + $0.row, reason: $0.reason) }
        return advance()
    }

    /// The rows written last failed with `error`; `unit` (0…1) picks the back-off's jitter.
    public mutating func failed(_ error: SluiceError, unit: Double) -> Action {
        switch error.kind {
        case .retry:
            guard case .retry(let wait) = policy.decide(afterAttempt: attempt, unit: unit) else {
                return .fail(error)
            }
            attempt += 1
            return .sleep(wait)
        case .bisect:
            if current.count <= 1 {
                outcome.rejected.append(Rejected(row: current.lowerBound, reason: error.rejectReason))
                return advance()
            }
            let mid = current.lowerBound + current.count / 2
            pending.append(mid..<current.upperBound)
            current = current.lowerBound..<mid
            attempt = 1
            return .write(current)
        case .fatal:
            return .fail(error)
        }
    }

    /// After a ``Action/sleep(_:)``: write the same rows again.
    public func resume() -> Action { .write(current) }

    private mutating func advance() -> Action {
        guard let next = pending.popLast() else { return .done(outcome) }
        current = next
        attempt = 1
        return .write(current)
    }
}
