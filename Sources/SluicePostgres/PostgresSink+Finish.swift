import Foundation
import NIOCore
import PostgresNIO
import SluiceCore
import SluiceInterfaces
import SluiceReport
import Synchronization

// The end of a run: keys deferred to after the load, purging records the run did not contain, the replace
// swap, closing the connections.
extension PostgresSink {
    /// Ends the run: with `--purge-missing` and a `clean` run, deletes stored records (and their child rows)
    /// the run did not contain; for `replace`, swaps the new table in if the run was complete, else drops it;
    /// closes the connections.
    public func finish(_ end: RunEnd) throws {
        let (complete, clean) = (end.complete, end.clean)
        defer {
            for l in lanes { l.session?.close() }
            lanes = []
        }
        if !deferredKeys.isEmpty, let lane = lanes.first {
            // Built even after an aborted run: the rows that committed are there to stay.
            do { try buildDeferredKeys(on: try session(lane)) } catch let f as SluiceError where f.fromPostgres {
                throw f.fatal("PostgreSQL: building the child tables' keys: ")
            }
        }
        if let n = nested, options.changes.purgeMissing, let kc = n.keyColumn, let lane = lanes.first,
            n.stored != nil || n.seenTable != nil
        {
            do {
                let s = try session(lane)
                if let stored = n.stored {
                    try purge(on: s, clean: clean, complete: complete) {
                        // The stored keys the run never saw.
                        let gone = stored.unseen()
                        let column = Column(type: .int64, capacity: gone.count)
                        for k in gone { column.append(int64: k) }
                        let keys = RecordBatch(
                            schema: Schema([Field("k", .int64)]), columns: [column], count: gone.count)
                        var binds = PostgresBindings()
                        binds.append(try arrayParameter(keys, column: 0, as: kc, rows: nil, lane.encoder))
                        for child in n.children { try s.execute(child.delete, binds) }
                        return try s.rows(
                            "WITH d AS (DELETE FROM \(SQL.table(table)) WHERE \(SQL.ident(kc.name)) = ANY($1) RETURNING 1) "
                                + "SELECT count(*)::int8 FROM d", binds)
                    }
                } else if let seen = n.seenTable {
                    try purge(on: s, clean: clean, complete: complete) {
                        // The keys absent from the table of keys the run saw.
                        let k = SQL.ident(kc.name)
                        try s.execute("ANALYZE \(SQL.table(seen))")
                        try s.execute(
                            "CREATE TEMP TABLE sluice_gone ON COMMIT DROP AS SELECT t.\(k) AS k FROM \(SQL.table(table)) t "
                                + "WHERE NOT EXISTS (SELECT 1 FROM \(SQL.table(seen)) s WHERE s.k = t.\(k))")
                        for child in n.children {
                            let link = SQL.ident(child.columns[0].name)
                            try s.execute(
                                "DELETE FROM \(SQL.table(child.table)) c USING sluice_gone g WHERE c.\(link) = g.k")
                        }
                        return try s.rows(
                            "WITH d AS (DELETE FROM \(SQL.table(table)) t USING sluice_gone g WHERE t.\(k) = g.k RETURNING 1) "
                                + "SELECT count(*)::int8 FROM d")
                    }
                    try s.execute("DROP TABLE IF EXISTS \(SQL.table(seen))")
                }
            } catch let f as SluiceError where f.fromPostgres {
                throw f.fatal("PostgreSQL: purging missing records: ")
            }
        }
        guard case .replace = mode, let lane = lanes.first else { return }
        do {
            let s = try session(lane)
            if complete {
                let old = SQL.table(table)
                let bare = SQL.ident(String(table.split(separator: ".").last!))
                try s.execute("BEGIN")
                try s.execute("DROP TABLE IF EXISTS \(old)")
                try s.execute("ALTER TABLE \(SQL.table(writeTable)) RENAME TO \(bare)")
                try s.execute("COMMIT")
            } else {
                try s.execute("DROP TABLE IF EXISTS \(SQL.table(writeTable))")
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
