import Foundation
import SluiceCSV
import SluiceCore
import SluiceFiles
import SluiceRuntime
import SluiceSQLite
import SluiceTesting
import SluiceXML
import Testing

/// Every stage row of a real run's report books at most its threads' time: busy + overhead + starved +
/// blocked ≤ threads × wall.
@Suite struct RunShapeAccountingTests {
    @Test func fileIntoSQLiteBooksEachThreadOnce() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var csv = "id,name,value\n"
        for i in 1...60_000 { csv += "\(i),name \(i),\(Double(i) / 4)\n" }
        let path = try dir.write("e.csv", bytes: Array(csv.utf8))
        var o = PipelineOptions()
        o.batching = BatchingPolicy(maxRows: 2_000, maxBytes: 64 << 10, maxLatency: .seconds(1))
        o.rejectsPath = dir.file("rejects.jsonl")
        let report = try await Pipeline(
            source: FileSource(
                paths: [path], format: CSVFormat(), schema: try Schema.parse("id:int64,name:string,value:float64")),
            sink: SQLiteSink(path: dir.file("e.db"), table: "e", mode: .upsert(key: ["id"])), options: o
        ).run()
        #expect(report.outcome == .clean && report.recordsOut == 60_000)
        #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))\n\(report.text)")
        let names = report.stages.map(\.name)
        #expect(names.first?.hasPrefix("read ") == true && names.contains("dispatch") && names.contains("decode"))
        // The sink's phases are a breakdown of the writer's busy time, on the writer's thread.
        let write = try #require(report.stages.first { $0.name.hasPrefix("write ") })
        let phases = report.stages.filter(\.isDetail).map(\.busySeconds).reduce(0, +)
        #expect(phases <= write.busySeconds + 0.005, "\(report.text)")
    }

    @Test func xmlWithChildTablesIntoSQLiteBooksEachThreadOnce() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var xml = "<releases>\n"
        for i in 1...3_000 {
            xml += "<release id=\"\(i)\"><title>Title \(i)</title><artists>"
            for a in 0..<(i % 4) { xml += "<artist><id>\(a)</id><name>A\(a)</name></artist>" }
            xml += "</artists><genres><genre>Rock</genre><genre>Pop</genre></genres></release>\n"
        }
        xml += "</releases>\n"
        let path = try dir.write("r.xml", bytes: Array(xml.utf8))
        var o = PipelineOptions()
        o.batching = BatchingPolicy(maxRows: 500, maxBytes: 32 << 10, maxLatency: .seconds(1))
        o.rejectsPath = dir.file("rejects.jsonl")
        let report = try await Pipeline(
            source: FileSource(paths: [path], format: XMLFormat(record: "/releases/release")),
            sink: SQLiteSink(path: dir.file("r.db"), table: "release", mode: .upsert(key: ["id"])), options: o
        ).run()
        #expect(report.outcome == .clean && report.recordsOut == 3_000, "\(report.text)")
        #expect(report.childRowsOut == 4_500 + 6_000, "\(report.text)")
        #expect(ReportInvariants.overbooked(report).isEmpty, "\(ReportInvariants.overbooked(report))\n\(report.text)")
    }
}
