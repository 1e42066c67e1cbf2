import NIOCore
import PostgresNIO
import SluiceCore

extension PostgresSession {
    /// Rows handed from the task that reads a statement's result to the caller at a time.
    static let rowPageSize = 4096

    /// Runs one statement and hands each row to `body` as it arrives (no array of all rows), under the same
    /// guard as every other statement: when the connection closes and no rows have come for
    /// ``closedGrace``, it throws a lost-connection error instead of waiting for good.
    ///
    /// A task of its own reads the result into pages of ``rowPageSize`` rows (at most two pages wait), and
    /// each wait for a page is bounded (``bounded(by:_:)``): one task hop and one lock per page, never per row.
    /// `body` runs on the caller's task only, and never after this returns.
    /// - Throws: ``SluiceError``, or what `body` throws.
    public func forEachRow(
        _ sql: String, _ binds: PostgresBindings = PostgresBindings(), _ body: (PostgresRow) throws -> Void
    ) async throws {
        let (c, logger) = (connection, logger)
        let query = PostgresQuery(unsafeSQL: sql, binds: binds)
        let pages = RowPages()
        let reader = Task {
            do {
                var page: [PostgresRow] = []
                page.reserveCapacity(Self.rowPageSize)
                for try await row in try await c.query(query, logger: logger) {
                    page.append(row)
                    if page.count == Self.rowPageSize {
                        try await pages.put(page)
                        page.removeAll(keepingCapacity: true)
                    }
                }
                if !page.isEmpty { try await pages.put(page) }
                pages.finish(nil)
            } catch {
                pages.finish(error)
            }
        }
        defer {
            pages.abandon()
            reader.cancel()
        }
        do {
            while let page = try await Self.bounded(by: c, { try await pages.take() }) {
                for row in page { try body(row) }
            }
        } catch let e as SluiceError {
            throw e
        } catch { throw SluiceError.postgres(error) }
    }
}

/// Pages of rows between the task that reads a result and the caller: at most two wait; the reader waits
/// while they do, the caller while none does. Thread-safe.
final class RowPages: Sendable {
    private struct State {
        var pages: [[PostgresRow]] = []
        var end: (any Error)?? = nil
        var abandoned = false
        var taker: CheckedContinuation<[PostgresRow]?, any Error>?
        var putter: CheckedContinuation<Void, any Error>?
    }
    private let state = Locked(State())
    private static let waiting = 2

    /// Adds a page; waits while two wait. Throws once the caller has stopped taking.
    func put(_ page: [PostgresRow]) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let (taker, resume) = state.withLock { st -> (CheckedContinuation<[PostgresRow]?, any Error>?, Bool?) in
                if st.abandoned { return (nil, false) }
                if let t = st.taker {
                    st.taker = nil
                    return (t, true)
                }
                st.pages.append(page)
                if st.pages.count < Self.waiting { return (nil, true) }
                st.putter = c
                return (nil, nil)
            }
            if let taker {
                taker.resume(returning: page)
            }
            switch resume {
            case true?: c.resume()
            case false?: c.resume(throwing: CancellationError())
            case nil: break
            }
        }
    }

    /// Ends the stream: `error` nil when every row was read.
    func finish(_ error: (any Error)?) {
        let taker = state.withLock { st -> CheckedContinuation<[PostgresRow]?, any Error>? in
            st.end = .some(error)
            let t = st.taker
            st.taker = nil
            return t
        }
        if let taker {
            if let error { taker.resume(throwing: error) } else { taker.resume(returning: nil) }
        }
    }

    /// The next page, or nil after the last.
    func take() async throws -> [PostgresRow]? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<[PostgresRow]?, any Error>) in
            enum Now {
                case page([PostgresRow], CheckedContinuation<Void, any Error>?)
                case end((any Error)?)
                case wait
            }
            let now = state.withLock { st -> Now in
                if !st.pages.isEmpty {
                    let p = st.pages.removeFirst()
                    let putter = st.putter
                    st.putter = nil
                    if let putter, st.pages.count < Self.waiting {
                        return .page(p, putter)
                    }
                    st.putter = putter
                    return .page(p, nil)
                }
                if let end = st.end { return .end(end) }
                st.taker = c
                return .wait
            }
            switch now {
            case .page(let p, let putter):
                putter?.resume()
                c.resume(returning: p)
            case .end(let error?): c.resume(throwing: error)
            case .end(nil): c.resume(returning: nil)
            case .wait: break
            }
        }
    }

    /// The caller stops taking (it returned or threw): a waiting reader is released, later pages are refused.
    func abandon() {
        let putter = state.withLock { st -> CheckedContinuation<Void, any Error>? in
            st.abandoned = true
            st.pages.removeAll()
            let p = st.putter
            st.putter = nil
            return p
        }
        putter?.resume(throwing: CancellationError())
    }
}
