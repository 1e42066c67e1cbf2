import Foundation

/// The live progress line on a terminal: records, rate and, when the input size is known, percent and ETA.
/// Silent when standard error is not a terminal.
public struct ProgressLine: Sendable {
    /// Whether standard error is a terminal.
    public static var isTerminal: Bool { isatty(2) == 1 }

    /// Renders one line for the given counters.
    public static func render(
        records: Int64, bytesRead: Int64, totalBytes: Int64?, elapsedSeconds: Double, rejected: Int64
    ) -> String {
        let rate = elapsedSeconds > 0 ? Double(records) / elapsedSeconds : 0
        var s = "\(Format.count(records)) records  \(Format.count(Int64(rate)))/s"
        if rejected > 0 { s += "  \(Format.count(rejected)) rejected" }
        if let total = totalBytes, total > 0 {
            let fraction = min(1, Double(bytesRead) / Double(total))
            s += String(format: "  %.1f%%", fraction * 100)
            if fraction > 0.001 {
                let eta = elapsedSeconds / fraction - elapsedSeconds
                s += "  ETA \(Format.seconds(max(0, eta)))"
            }
        }
        return s
    }

    /// Writes `line` over the current terminal line.
    public static func draw(_ line: String) {
        FileHandle.standardError.write(Data(("\r\u{1B}[2K" + line).utf8))
    }

    /// Clears the progress line.
    public static func clear() {
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }
}
