import Foundation
import PostgresNIO
import SluiceCore
import SluicePostgres
import SluiceRuntime
import SluiceTesting
import Synchronization
import Testing

/// The throwaway server `scripts/test` starts (`SLUICE_PG_URL`); tests that need it are disabled without it.
enum PG {
    static let url = Psql.testURL
    static var available: Bool { !url.isEmpty }

    private static let counter = Atomic<Int>(0)

    /// A table name no other test uses.
    static func table(_ base: String) -> String {
        "\(base)_\(getpid())_\(counter.add(1, ordering: .relaxed).newValue)"
    }

    /// Runs SQL statements on a new connection.
    static func exec(_ statements: String...) async throws {
        try await PostgresSession.with(PostgresLocation(url: url)) { s in
            for sql in statements { try await s.execute(sql) }
        }
    }

    /// Rows of a query, every column in PostgreSQL's text form (NULL as nil), read with `psql`.
    static func texts(_ sql: String) throws -> [[String?]] { try Psql.rows(url, sql) }

    /// Runs `rows` through a pipeline into a PostgreSQL sink.
    @discardableResult
    static func load(
        _ rows: [[Value]], schema: Schema, table: String, mode: WriteMode, batchSize: Int = 3, writers: Int = 2,
        rejects: String? = nil
    ) async throws -> RunReport {
        var o = PipelineOptions()
        o.rejectsPath = rejects
        var so = PostgresSinkOptions()
        so.writers = writers
        let report = try await Pipeline(
            source: ArraySource(schema: schema, rows: rows, batchSize: batchSize),
            sink: PostgresSink(url: url, table: table, mode: mode, options: so), options: o
        ).run()
        #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))")
        return report
    }

    /// Reads a query back through the keyset source.
    static func read(_ query: String, key: String, pageRows: Int = 2) async throws -> (Schema?, [[Value]]) {
        let sink = CollectingSink()
        var o = PipelineOptions()
        o.rejectsPath = nil
        let report = try await Pipeline(
            source: PostgresSource(url: url, query: query, key: key, pageRows: pageRows), sink: sink, options: o
        ).run()
        #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))")
        return (sink.schema, sink.rows)
    }
}
