import Foundation
import SluiceCore

/// Runs SQL through the `psql` client, for checking what reached a PostgreSQL server in PostgreSQL's own
/// text form (independent of Sluice's decoding).
public enum Psql {
    /// The URL of the throwaway server `scripts/test` starts (`SLUICE_PG_URL`), or empty.
    public static var testURL: String { ProcessInfo.processInfo.environment["SLUICE_PG_URL"] ?? "" }

    /// Rows of `sql`, every column as text (NULL as nil).
    /// - Throws: ``SluiceError`` with psql's message when it fails.
    public static func rows(_ url: String, _ sql: String) throws -> [[String?]] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [
            "psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "\u{1f}", "-R", "\u{1e}", "-P",
            "null=\u{1}", "-c", sql,
        ]
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw SluiceError(.io, "psql: \(String(decoding: e, as: UTF8.self))")
        }
        var text = String(decoding: data, as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        if text.isEmpty { return [] }
        return text.split(separator: "\u{1e}", omittingEmptySubsequences: false).map { row in
            row.split(separator: "\u{1f}", omittingEmptySubsequences: false).map { $0 == "\u{1}" ? nil : String($0) }
        }
    }
}
