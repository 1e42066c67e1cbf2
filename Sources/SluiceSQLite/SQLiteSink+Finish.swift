import CSQLite
import SluiceCore
import SluiceInterfaces
import SluiceReport
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

// The end of a run: purging records the run did not contain, the replace swap.
extension SQLiteSink {
    /// Ends the run: purges records the run did not contain if asked and the run was `clean`; for `replace`,
    /// swaps the staging table in if the run was complete, else drops it.
    public func finish(_ end: RunEnd) throws {
        let (complete, clean) = (end.complete, end.clean)
        guard let db = connection else { return }
        defer {
            nested = nil
            insert = nil
            insertMany = nil
            begin = nil
            commit = nil
            connection = nil
        }
        if options.changes.purgeMissing, let keyName = mode.keyColumns.first {
            if clean {
                let q = SQLiteConnection.quote
                do {
                    try db.exec("BEGIN")
                    try recordSkippedKeys(db)
                    for child in schema.children {
                        try db.exec(
                            "DELETE FROM \(q(child.name)) WHERE \(q(child.linkField.name)) NOT IN (SELECT k FROM temp.sluice_seen)"
                        )
                    }
                    try db.exec("DELETE FROM \(q(table)) WHERE \(q(keyName)) NOT IN (SELECT k FROM temp.sluice_seen)")
                    counts.purged = Int64(sqlite3_changes(db.handle))
                    try db.exec("COMMIT; DROP TABLE temp.sluice_seen")
                } catch {
                    _ = try? db.exec("ROLLBACK")
                    throw SluiceError.sink(.fatal, "purging missing records: \(error)")
                }
            } else {
                counts.purgeSkipped = TableConventions.purgeSkippedReason(complete: complete)
                _ = try? db.exec("DROP TABLE IF EXISTS temp.sluice_seen")
            }
        }
        if case .replace = mode {
            let q = SQLiteConnection.quote
            do {
                if complete {
                    try db.exec(
                        "BEGIN; DROP TABLE IF EXISTS \(q(table)); ALTER TABLE \(q(writeTable)) RENAME TO \(q(table)); COMMIT;"
                    )
                } else {
                    try db.exec("DROP TABLE IF EXISTS \(q(writeTable))")
                }
            } catch let e as SQLiteError {
                _ = try? db.exec("ROLLBACK")
                throw SluiceError.sink(.fatal, e.description)
            }
        }
    }
}
