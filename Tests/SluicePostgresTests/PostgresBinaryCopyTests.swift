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
}
