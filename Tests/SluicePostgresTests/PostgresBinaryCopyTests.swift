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
}
