import Foundation
import SluiceReport
import Testing

func clock(busy: Double, overhead: Double = 0, starved: Double = 0, blocked: Double = 0, records: Int64) -> StageClock {
    var c = StageClock()
    c.busy = UInt64(busy * 1e9)
    c.overhead = UInt64(overhead * 1e9)
    c.starved = UInt64(starved * 1e9)
    c.blocked = UInt64(blocked * 1e9)
    c.records = records
    return c
}

func sampleReport(outcome: RunOutcome = .clean, rejected: Int64 = 0) -> RunReport {
    RunReport(
        outcome: outcome, abortReason: outcome == .aborted ? "too many rejected records" : nil,
        target: "sqlite:t.db table t (append)", wallSeconds: 2, recordsIn: 1_000_000 + rejected,
        recordsOut: 1_000_000, recordsRejected: rejected, bytesIn: 50_000_000, bytesDecoded: 100_000_000,
        peakRSSBytes: 80 << 20, rejectsFile: rejected > 0 ? "t.rejects.jsonl" : nil,
        stages: [
            StageReport(
                name: "read", threads: 1, clock: clock(busy: 0.5, blocked: 1.4, records: 1_000_000), wallSeconds: 2),
            StageReport(
                name: "decode", threads: 2, clock: clock(busy: 1.2, starved: 0.2, blocked: 2.4, records: 1_000_000),
                wallSeconds: 2),
            StageReport(
                name: "write", threads: 1, clock: clock(busy: 1.8, overhead: 0.05, starved: 0.1, records: 1_000_000),
                wallSeconds: 2),
            StageReport(
                name: "commit", threads: 1, clock: clock(busy: 1.99, records: 1_000_000), wallSeconds: 2, isDetail: true
            ),
        ], batchRows: 65_536, chunkBytes: 4 << 20, memoryBudgetBytes: 1 << 30)
}

@Suite struct RunReportTests {
    @Test func bottleneckIsTheMostSaturatedStageIgnoringDetailRows() {
        let r = sampleReport()
        #expect(r.bottleneck == "write")
        #expect(abs(r.bottleneckShare - 0.925) < 1e-9)
        #expect(r.stages[1].utilization == 0.3)
        #expect(r.stages[2].nsPerRecord == 1800)
        #expect(r.recordsPerSecond == 500_000)
        #expect(r.megabytesPerSecond == 50)
    }

    @Test func textNamesEveryStageAndTheOutcome() {
        let t = sampleReport(outcome: .completedWithRejects, rejected: 7).text
        #expect(t.contains("completed with 7 rejected records"))
        #expect(t.contains("1,000,007 in, 1,000,000 out, 7 rejected"))
        #expect(t.contains("rejects    t.rejects.jsonl"))
        #expect(t.contains("decode ×2"))
        #expect(t.contains("  · commit"))
        #expect(t.contains("bottleneck: write (busy 92% of its time)"))
        #expect(sampleReport(outcome: .aborted).text.contains("ABORTED: too many rejected records"))
    }

    @Test func jsonRoundTrips() throws {
        let r = sampleReport()
        let back = try JSONDecoder().decode(RunReport.self, from: r.json())
        #expect(back.recordsOut == 1_000_000 && back.stages.count == 4 && back.bottleneck == "write")
        let object = try JSONSerialization.jsonObject(with: r.json()) as! [String: Any]
        #expect(object["outcome"] as? String == "clean")
    }

    @Test func progressLineShowsRateAndETAWhenTheSizeIsKnown() {
        let known = ProgressLine.render(
            records: 500_000, bytesRead: 25, totalBytes: 100, elapsedSeconds: 2, rejected: 3)
        #expect(known == "500,000 records  250,000/s  3 rejected  25.0%  ETA 6.00 s")
        let unknown = ProgressLine.render(records: 10, bytesRead: 5, totalBytes: nil, elapsedSeconds: 1, rejected: 0)
        #expect(unknown == "10 records  10/s")
    }

    @Test func formatting() {
        #expect(Format.count(1_234_567) == "1,234,567" && Format.count(-1000) == "-1,000" && Format.count(12) == "12")
        #expect(Format.bytes(512) == "512 B" && Format.bytes(3 << 20) == "3.0 MiB")
        #expect(Format.seconds(0.25) == "250 ms" && Format.seconds(2.5) == "2.50 s")
        #expect(ProcessStats.peakRSS() > 1 << 20)
    }
}
