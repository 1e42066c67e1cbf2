import SluiceReport

/// Checks of a run report's accounting that every test of a run shape asserts.
public enum ReportInvariants {
    /// Rows of `report` that book more time than their threads lived: busy + overhead + starved + blocked must
    /// be at most threads × wall (with `slack` seconds for the clock reads around the run). Empty when the
    /// report is true.
    public static func overbooked(_ report: RunReport, slack: Double = 0.005) -> [String] {
        report.stages.compactMap { s in
            let booked = s.busySeconds + s.overheadSeconds + s.starvedSeconds + s.blockedSeconds
            let limit = Double(max(1, s.threads)) * report.wallSeconds + slack
            guard booked > limit else { return nil }
            return "\(s.name): \(booked) s booked on \(s.threads) thread(s) in a \(report.wallSeconds) s run"
        }
    }
}
