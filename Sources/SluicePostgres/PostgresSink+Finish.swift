import Foundation
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceInterfaces
import SluiceReport
import Synchronization

// The end of a run: keys deferred to after the load, purging records the run did not contain, the replace
// swap; on a session of its own (the writers' sessions closed with their lanes).
extension PostgresSink {
    /// Ends the run: with `--purge-missing` and a `clean` run, deletes stored records (and their child rows)
    /// the run did not contain; for `replace`, swaps the new table in if the run was complete, else drops it.
    /// Runs on a session of its own, opened only when there is something to do.
    public func finish(_ end: RunEnd) async throws {
        let purging =
            nested.map {
                options.changes.purgeMissing && $0.keyColumn != nil && ($0.stored != nil || $0.seenTable != nil)
            } ?? false
        var replacing = false
        if case .replace = mode { replacing = true }
        guard opened, !deferredKeys.isEmpty || purging || replacing else { return }
        do {
            try await PostgresSession.with(location, logger: logger) { s in
                try await finish(end, on: s)
            }
        } catch let f as SluiceError where f.fromPostgres && f.code == .connectionLost {
            throw f.fatal("PostgreSQL: ending the run: ")
        }
    }

    private func finish(_ end: RunEnd, on s: PostgresSession) async throws {
        let (complete, clean) = (end.complete, end.clean)
        if !deferredKeys.isEmpty {
            // Built even after an aborted run: the rows that committed are there to stay.
            do { try await buildDeferredKeys(on: s) } catch let f as SluiceError where f.fromPostgres {
                throw f.fatal("PostgreSQL: building the child tables' keys: ")
            }
        }
        if let n = nested, options.changes.purgeMissing, let kc = n.keyColumn, n.stored != nil || n.seenTable != nil {
            let encoder = PostgresBinaryEncoder()
            do {
                if let stored = n.stored {
                    try await purge(on: s, clean: clean, complete: complete) {
                        // The stored keys the run never saw.
                        let gone = stored.unseen()
                        let column = Column(type: .int64, capacity: gone.count)
                        for k in gone { column.append(int64: k) }
                        let keys = RecordBatch(
                            schema: Schema([Field("k", .int64)]), columns: [column], count: gone.count)
                        var binds = PostgresBindings()
                        binds.append(try arrayParameter(keys, column: 0, as: kc, rows: nil, encoder))
                        for child in n.children { try await s.execute(child.delete, binds) }
                        return try await s.rows(
                            "WITH d AS (DELETE FROM \(SQL.table(table)) WHERE \(SQL.ident(kc.name)) = ANY($1) RETURNING 1) "
                                + "SELECT count(*)::int8 FROM d", binds)
                    }
                } else if let seen = n.seenTable {
                    try await purge(on: s, clean: clean, complete: complete) {
                        // The keys absent from the table of keys the run saw.
                        let k = SQL.ident(kc.name)
                        try await s.execute("ANALYZE \(SQL.table(seen))")
                        try await s.execute(
                            "CREATE TEMP TABLE sluice_gone ON COMMIT DROP AS SELECT t.\(k) AS k FROM \(SQL.table(table)) t "
                                + "WHERE NOT EXISTS (SELECT 1 FROM \(SQL.table(seen)) s WHERE s.k = t.\(k))")
                        for child in n.children {
                            let link = SQL.ident(child.columns[0].name)
                            try await s.execute(
                                "DELETE FROM \(SQL.table(child.table)) c USING sluice_gone g WHERE c.\(link) = g.k")
                        }
                        return try await s.rows(
                            "WITH d AS (DELETE FROM \(SQL.table(table)) t USING sluice_gone g WHERE t.\(k) = g.k RETURNING 1) "
                                + "SELECT count(*)::int8 FROM d")
                    }
                    try await s.execute("DROP TABLE IF EXISTS \(SQL.table(seen))")
                }
            } catch let f as SluiceError where f.fromPostgres {
                throw f.fatal("PostgreSQL: purging missing records: ")
            }
        }
        guard case .replace = mode else { return }
        do {
            if complete {
                let old = SQL.table(table)
                let bare = SQL.ident(String(table.split(separator: ".").last!))
                try await s.execute("BEGIN")
                try await s.execute("DROP TABLE IF EXISTS \(old)")
                try await s.execute("ALTER TABLE \(SQL.table(writeTable)) RENAME TO \(bare)")
                try await s.execute("COMMIT")
            } else {
                try await s.execute("DROP TABLE IF EXISTS \(SQL.table(writeTable))")
            }
        } catch let f as SluiceError where f.fromPostgres {
            throw f.fatal("PostgreSQL: ")
        }
    }
}

extension PostgresBinaryEncoder {
    /// Drops what was written after `offset`.
    func rewind(to offset: Int) {
        precondition(offset <= count)
        count = offset
    }
}
