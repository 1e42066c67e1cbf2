import SluiceCSV
import SluiceCore
import SluiceFiles
import SluiceRuntime
import SluiceSQLite

func loadEvents(csv: String, database: String) async throws -> RunReport {
    let schema = try Schema.parse("id:int64!,name:string,ts:timestamp,value:float64,tags:string")
    let source = FileSource(paths: [csv], format: CSVFormat(), schema: schema)
    let sink = SQLiteSink(path: database, table: "events", mode: .upsert(key: ["id"]))
    var options = PipelineOptions()
    options.rejectsPath = database + ".rejects.jsonl"
    options.maxErrors = ErrorLimit("1%")
    let report = try await Pipeline(source: source, sink: sink, options: options).run()
    print(report.text)  // the run report: rates, per-stage time, the bottleneck
    return report
}
