import NIOCore
import SluiceCore
import Testing

@testable import SluicePostgres

/// Pins the binary-COPY pass-through (`PostgresSession+BinaryCopy.swift`): PostgresNIO offers text COPY only,
/// and Sluice passes its own `COPY … (FORMAT binary)` statement through the table-name parameter.
@Suite(.enabled(if: PG.available, "SLUICE_PG_URL is not set: run scripts/test, which starts PostgreSQL"))
struct PostgresBinaryCopyTests {
    @Test func aBinaryCopyStatementGoesThroughPostgresNIOsCopyFrom() async throws {
        let t = PG.table("bincopy")
        try await PG.exec("CREATE TABLE \(t) (id bigint, name text)")
        // PGCOPY binary: signature, flags, header extension; per tuple: field count, (length, bytes)…; trailer.
        var data = ByteBuffer()
        data.writeBytes(Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0x00])
        data.writeInteger(Int32(0))
        data.writeInteger(Int32(0))
        for (id, name) in [(Int64(1), "one"), (Int64(2), "twö")] {
            data.writeInteger(Int16(2))
            data.writeInteger(Int32(8))
            data.writeInteger(id)
            data.writeInteger(Int32(name.utf8.count))
            data.writeBytes(Array(name.utf8))
        }
        data.writeInteger(Int16(-1))
        try await PostgresSession.with(PostgresLocation(url: PG.url)) { session in
            try await session.copyIn(statement: "COPY \"\(t)\" (id, name) FROM STDIN WITH (FORMAT binary)", data: data)
        }
        #expect(try PG.texts("SELECT id, name FROM \(t) ORDER BY id") == [["1", "one"], ["2", "twö"]])
    }

    /// A COPY that never finishes on a connection that closed is given up after the grace period, with a
    /// retryable lost-connection error, so the batch is retried instead of hanging its writer for good.
    @Test func aCopyStuckOnAClosedConnectionFailsWithinItsGrace() async throws {
        let session = try await PostgresSession.connect(PostgresLocation(url: PG.url))
        await session.close()
        let started = ContinuousClock.now
        let e = await #expect(throws: SluiceError.self) {
            try await PostgresSession.bounded(by: session.connection) {
                try await Task.sleep(for: .seconds(3600))
            }
        }
        #expect(e?.code == .connectionLost && e?.kind == .retry)
        #expect(ContinuousClock.now - started < .seconds(10))
    }

    /// On an open connection the guard stays out of the way: the COPY's own result comes back.
    @Test func aBoundedCopyReturnsItsOwnOutcome() async throws {
        try await PostgresSession.with(PostgresLocation(url: PG.url)) { session in
            try await PostgresSession.bounded(by: session.connection) { try await Task.sleep(for: .milliseconds(250)) }
            await #expect(throws: SluiceError.self) {
                try await PostgresSession.bounded(by: session.connection) { throw SluiceError(.sink, "own failure") }
            }
        }
    }
    /// `forEachRow` reads a result in pages on a task of its own and hands every row over in order; a
    /// connection lost mid-result fails the call (within the statement guard's grace) instead of leaving it
    /// waiting, and `body` is not called after the call returned.
    @Test func rowsArriveInPagesAndALostConnectionFailsTheStream() async throws {
        let location = try PostgresLocation(url: PG.url)
        final class Count: @unchecked Sendable {
            var rows = 0
            var sum: Int64 = 0
        }
        try await PostgresSession.with(location) { s in
            let c = Count()
            try await s.forEachRow("SELECT g::int8 FROM generate_series(1, 20000) g") { row in
                c.rows += 1
                c.sum += try row.decode(Int64.self)
            }
            #expect(c.rows == 20000 && c.sum == 200_010_000)
            try await s.forEachRow("SELECT 1 WHERE false") { _ in c.rows += 1 }
            #expect(c.rows == 20000)
        }
        let victim = try await PostgresSession.connect(location)
        let pid = try await victim.rows("SELECT pg_backend_pid()")[0].decode(Int32.self)
        let killer = try await PostgresSession.connect(location)
        let kill = Task {
            try await Task.sleep(for: .milliseconds(400))
            _ = try await killer.rows("SELECT pg_terminate_backend(\(pid))")
        }
        let seen = Count()
        let started = ContinuousClock.now
        await #expect(throws: SluiceError.self) {
            try await victim.forEachRow("SELECT g, pg_sleep(0.001) FROM generate_series(1, 1000000) g") { _ in
                seen.rows += 1
            }
        }
        let after = seen.rows
        try await kill.value
        try await Task.sleep(for: .milliseconds(200))
        #expect(seen.rows == after, "body ran after forEachRow returned")
        #expect(after < 1_000_000)
        #expect(ContinuousClock.now - started < .seconds(10))
        await killer.close()
        await victim.close()
    }
}

/// `CommitOrder`: with several writers appending, a batch commits only after every earlier batch is done.
@Suite struct CommitOrderTests {
    @Test func aBatchWaitsForEveryEarlierBatchAndNoLonger() async throws {
        let order = CommitOrder()
        await order.waitForEarlierBatches(0)  // nothing comes before the first batch
        final class Flag: @unchecked Sendable { var set = false }
        let third = Flag()
        let waiter = Task {
            await order.waitForEarlierBatches(2)
            third.set = true
        }
        order.release(1)  // out of order: batch 0 is still in flight
        try await Task.sleep(for: .milliseconds(100))
        #expect(!third.set && order.next == 0)
        order.release(0)
        await waiter.value
        #expect(third.set && order.next == 2)
        order.release(3)
        order.release(2)
        #expect(order.next == 4)
        await order.waitForEarlierBatches(4)
    }
}
