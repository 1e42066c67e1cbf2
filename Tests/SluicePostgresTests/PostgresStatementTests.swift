import SluiceCore
import Testing

@testable import SluicePostgres

/// The SQL a run sends, checked as text without a server.
@Suite struct PostgresStatementTests {
    private func column(_ name: String, _ oid: UInt32, _ type: String) -> PostgresColumn {
        PostgresColumn(name: name, oid: oid, sqlType: type, input: .string, encoding: .text)
    }

    @Test func anUpsertUpdatesOnlyRowsWhoseValuesDiffer() {
        let one = SQL.onConflict(key: ["id"], others: [column("v", PostgresOID.int8, "bigint")], table: "\"t\"")
        #expect(
            one
                == #" ON CONFLICT ("id") DO UPDATE SET "v" = EXCLUDED."v" WHERE ROW("t"."v") IS DISTINCT FROM ROW(EXCLUDED."v")"#
        )
        let two = SQL.onConflict(
            key: ["a", "b"], others: [column("j", PostgresOID.json, "json"), column("x", PostgresOID.xml, "xml")],
            table: "\"t\"")
        #expect(two.contains(#"ON CONFLICT ("a", "b") DO UPDATE SET "j" = EXCLUDED."j", "x" = EXCLUDED."x""#))
        // json and xml have no equality operator: they are compared as text.
        #expect(
            two.hasSuffix(
                #"WHERE ROW("t"."j"::text, "t"."x"::text) IS DISTINCT FROM ROW(EXCLUDED."j"::text, EXCLUDED."x"::text)"#
            ))
        #expect(SQL.onConflict(key: ["id"], others: [], table: "\"t\"") == #" ON CONFLICT ("id") DO NOTHING"#)
    }

    @Test func identifiersAndLiteralsAreQuoted() {
        #expect(SQL.ident(#"we"ird"#) == #""we""ird""#)
        #expect(SQL.table("app.events") == #""app"."events""#)
        #expect(SQL.literal("it's") == "'it''s'")
    }
}
