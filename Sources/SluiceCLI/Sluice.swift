import ArgumentParser
import CSluiceSupport
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import SluiceCSV
import SluiceConfig
import SluiceCore
import SluiceMetrics
import SluiceReport
import SluiceRuntime
import SluiceSQLite
import SluiceWorkloads
import UnixSignals

/// Exit statuses of the `sluice` command.
enum ExitStatus {
    /// Every record loaded.
    static let clean: Int32 = 0
    /// Aborted: too many errors, or a fatal error while running.
    static let aborted: Int32 = 1
    /// Bad usage, configuration or pipeline file; nothing was run.
    static let usage: Int32 = 2
    /// Completed, with rejected records (see the rejects file).
    static let completedWithRejects: Int32 = 3
    /// Completed, but a stage failed some records (fetches that failed after their retries; each failed
    /// record is written with its reason, e.g. in the `error` column).
    static let completedWithFailures: Int32 = 4
    /// Interrupted by SIGINT or SIGTERM after flushing what was read.
    static let interrupted: Int32 = 130
}

@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Move large volumes of records into stores fast, and see where every second went.",
        discussion: """
            Exit status: 0 clean, 3 completed with rejected records, 4 completed with failed records (e.g. \
            fetches that failed after their retries, written with their reason), 1 aborted (too many errors or \
            a fatal error), 2 nothing run (a usage or configuration error, or one found before anything ran: \
            unreadable input, no schema to infer, an unreachable database), 130 interrupted (SIGINT/SIGTERM; committed batches \
            are kept).
            """,
        subcommands: [Load.self, Run.self, Quickstart.self, Generate.self])

    static func main() async {
        // Batch buffers are allocated on decoder threads and freed on the writer thread; with glibc's
        // default thresholds their pages stay in arenas and peak RSS creeps up with input size. Giving
        // large buffers their own mappings keeps peak memory flat (measured: 2M rows 75 MiB, 20M 77 MiB).
        sluice_use_mmap_above(64 << 10)
        // Only the executable bootstraps logging: warnings and errors to standard error (SLUICE_LOG=debug …).
        let level = ProcessInfo.processInfo.environment["SLUICE_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let e as SluiceError {
            FileHandle.standardError.write(Data("sluice: \(e)\n".utf8))
            // A run that started ends with a report; an error that reaches here stopped it before anything ran.
            Foundation.exit(ExitStatus.usage)
        } catch let e as ExitCode {
            Foundation.exit(e.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(ExitStatus.usage)
        }
    }
}

/// Options shared by `load` and `run` that only affect reporting.
struct ReportOptions: ParsableArguments {
    @Option(name: .customLong("report-json"), help: "Also write the run report as JSON to this file.")
    var reportJSON: String?

    @Flag(name: .customLong("no-progress"), help: "Do not draw the live progress line.")
    var noProgress = false

    @Option(
        name: .customLong("metrics"),
        help: "Serve Prometheus metrics at http://HOST:PORT/metrics while the run lasts (e.g. 127.0.0.1:9464).")
    var metrics: String?
}

/// Runs a spec as a service group (the pipeline, and the metrics endpoint if asked for) with signal handling,
/// prints the report and exits with the matching status.
func execute(_ spec: PipelineSpec, reportJSON: String?, metrics: String?) async throws {
    var spec = spec
    let registry = metrics.map { _ in PrometheusCollectorRegistry() }
    if let registry {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        spec.observers.append(MetricsObserver())
    }
    // A configuration error ends the command before any port is opened.
    let pipeline = try spec.makePipeline()
    var endpoint: MetricsEndpoint?
    if let address = metrics, let registry {
        let e = try await MetricsEndpoint.bind(address, registry: registry)
        FileHandle.standardError.write(Data("sluice: metrics at http://\(e.address)/metrics\n".utf8))
        endpoint = e
    }
    let run = PipelineService(pipeline: pipeline)
    var services = [
        ServiceGroupConfiguration.ServiceConfiguration(
            service: run, successTerminationBehavior: .gracefullyShutdownGroup,
            failureTerminationBehavior: .gracefullyShutdownGroup)
    ]
    if let endpoint { services.append(.init(service: endpoint)) }
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(services: services, logger: Logger(label: "sluice")))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        tasks.addTask { await SignalPolicy.watch(group) }
        _ = try await tasks.next()
        tasks.cancelAll()
    }
    let report = try run.report()
    FileHandle.standardError.write(Data(report.text.utf8))
    if let path = reportJSON ?? spec.reportJSON {
        do { try report.json().write(to: URL(fileURLWithPath: path)) } catch {
            FileHandle.standardError.write(Data("sluice: cannot write the report to \(path): \(error)\n".utf8))
        }
    }
    let status = ExitStatus.of(report)
    if status != ExitStatus.clean { throw ExitCode(status) }
}

extension ExitStatus {
    /// The exit status a report's typed outcome and counts call for.
    static func of(_ report: RunReport) -> Int32 {
        switch report.outcome {
        case .clean: return report.recordsFailed > 0 ? completedWithFailures : clean
        case .completedWithRejects: return completedWithRejects
        case .aborted: return aborted
        case .interrupted: return interrupted
        }
    }
}

/// SIGINT and SIGTERM, counted together: the first shuts the service group down gracefully (reading stops,
/// what was read is written and committed, the report is printed); a second signal of either kind quits at
/// once with status 130.
enum SignalPolicy {
    static func watch(_ group: ServiceGroup) async {
        var received = 0
        for await signal in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
            received += 1
            if received > 1 { Foundation.exit(ExitStatus.interrupted) }
            FileHandle.standardError.write(
                Data("\nsluice: stopping (\(signal)); flushing what was read. Again to quit at once.\n".utf8))
            await group.triggerGracefulShutdown()
        }
    }
}

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load CSV or JSON Lines files (optionally gzip) into a store.",
        discussion: """
            Examples:
              sluice load events.csv.gz --into sqlite:events.db --table events --key id --mode upsert
              sluice load a.jsonl b.jsonl --into sqlite:out.db --table t --schema id:int64,name:string,ts:timestamp
              sluice load events.csv --into postgres://localhost/app --table events
              sluice load events.csv --into postgres://localhost/app --table events --key id --mode upsert
              sluice load mimes.csv --into postgres://localhost/app --table inode --key blobid --mode update --set mime_type
            """)

    @Argument(help: "Input files (`-` for standard input). Gzip is detected from the content.")
    var files: [String]

    @Option(
        help: "Target store URL: sqlite:PATH or postgres://USER@HOST:PORT/DB (?host=/socket/dir for a Unix socket).")
    var into: String

    @Option(help: "Target table (default: the first file's base name).")
    var table: String?

    @Option(help: "Input format: csv, tsv or jsonl (default: from the file name).")
    var format: String?

    @Option(
        help:
            "Schema as name:type,… (types: int64, float64, bool, string, bytes, timestamp, json; `!` = not null). Default: inferred from the first records."
    )
    var schema: String?

    @Option(help: "Key column(s), comma-separated, for --mode upsert or update.")
    var key: String?

    @Option(help: "append, upsert, update or replace (default: append).")
    var mode: String = "append"

    @Option(help: "Column(s) that --mode update sets, comma-separated.")
    var set: String?

    @Option(name: .customLong("where"), help: "SQL condition on the target row that --mode update also requires.")
    var filter: String?

    @Option(help: "PostgreSQL writer connections in parallel (default: 2).")
    var writers: Int?

    @Option(help: "CSV field delimiter (one character, or `tab`).")
    var delimiter: String?

    @Option(
        name: .customLong("null"),
        help:
            "CSV token meaning null (repeatable; then the only nulls). Default: an unquoted empty field, and NA, NULL, \\N and the like in numeric, boolean and timestamp columns."
    )
    var nullTokens: [String] = []

    @Flag(name: .customLong("no-header"), help: "The CSV input has no header row (fields map by position).")
    var noHeader = false

    @Flag(
        name: .customLong("strict-header"),
        help:
            "An empty or repeated CSV header name is an error (default: named column<N>, or suffixed _2, and listed in the report)."
    )
    var strictHeader = false

    @Option(help: "File for rejected records (default: <table>.rejects.jsonl beside the database).")
    var rejects: String?

    @Option(name: .customLong("max-errors"), help: "Abort after this many rejected records (N), or this share (N%).")
    var maxErrors: String?

    @Option(name: .customLong("batch-rows"), help: "Maximum rows per batch (default: 65536).")
    var batchRows: Int?

    @Option(help: "Decode workers (default: one per core).")
    var workers: Int?

    @Option(name: .customLong("memory-fraction"), help: "Share of the machine's memory to budget (default: 0.25).")
    var memoryFraction: Double = 0.25

    @OptionGroup var report: ReportOptions

    func run() async throws {
        // Every option becomes a typed value here, once; errors are usage errors (exit status 2).
        func names(_ text: String?) -> [String] {
            text.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? []
        }
        var spec = PipelineSpec()
        spec.inputs = files
        spec.store = try Store.parse(into)
        spec.table = table
        spec.format = format
        spec.schema = try schema.map { try Schema.parse($0) }
        spec.mode = try WriteMode.parse(mode, key: names(key), set: names(set), filter: filter)
        spec.writers = writers
        spec.delimiter = try delimiter.map(CSVOptions.delimiter)
        spec.csv.nullTokens = nullTokens.isEmpty ? nil : nullTokens
        spec.csv.header = !noHeader
        spec.csv.strictHeader = strictHeader
        spec.rejects = rejects
        if let maxErrors {
            guard let limit = ErrorLimit(maxErrors) else {
                throw SluiceError(
                    .config, "--max-errors takes a count (100) or a percentage (0.5%), got '\(maxErrors)'")
            }
            spec.maxErrors = limit
        }
        if let batchRows {
            guard batchRows >= 1 else { throw ValidationError("--batch-rows must be at least 1") }
            spec.batching.maxRows = batchRows
        }
        spec.workers = workers
        spec.memoryFraction = memoryFraction
        spec.progress = !report.noProgress
        try await execute(spec, reportJSON: report.reportJSON, metrics: report.metrics)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a pipeline described in a YAML file.")

    @Argument(help: "The pipeline file.")
    var pipeline: String

    @Flag(
        name: .customLong("skip-unchanged"),
        help: "Upserts: write only records that are new or whose content hash differs from the stored one.")
    var skipUnchanged = false

    @Flag(
        name: .customLong("purge-missing"),
        help: "Upserts: after a complete run with no rejected record, delete stored records the input did not contain.")
    var purgeMissing = false

    @OptionGroup var report: ReportOptions

    func run() async throws {
        var spec = try PipelineFile.load(path: pipeline)
        if skipUnchanged { spec.skipUnchanged = true }
        if purgeMissing { spec.purgeMissing = true }
        spec.progress = !report.noProgress
        try await execute(spec, reportJSON: report.reportJSON, metrics: report.metrics)
    }
}

struct Quickstart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a demo dataset, load it into sluice-demo.db and print the run report.")

    @Option(help: "Rows to generate.")
    var rows: Int = 1_000_000

    @Option(help: "Directory for the demo CSV.")
    var dir: String = "sluice-demo"

    @Option(help: "The demo database.")
    var database: String = "sluice-demo.db"

    func run() async throws {
        guard rows >= 1 else { throw ValidationError("--rows must be at least 1") }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let csv = dir + "/events.csv.gz"
        let t0 = MonotonicClock.now()
        print("sluice quickstart: writing \(Format.count(Int64(rows))) W0 rows to \(csv) …")
        fflush(nil)  // all output streams: keeps stdout ordered with the report on stderr when redirected
        try W0Generator(rows: rows).write(to: csv, format: .csv, gzip: true, gzipLevel: 1)
        print(String(format: "  generated in %.2f s", Double(MonotonicClock.now() - t0) / 1e9))
        print("sluice quickstart: sluice load \(csv) --into sqlite:\(database) --table events --key id --mode upsert\n")
        fflush(nil)  // all output streams: keeps stdout ordered with the report on stderr when redirected
        var spec = PipelineSpec()
        spec.inputs = [csv]
        spec.store = try Store.parse("sqlite:" + database)
        spec.table = "events"
        spec.mode = .upsert(key: ["id"])
        spec.schema = try Schema.parse(W0Generator.schemaSpec)
        do {
            try await execute(spec, reportJSON: nil, metrics: nil)
        } catch let e as ExitCode where e.rawValue != 0 {
            throw e
        }
        let db = try SQLiteConnection(path: database)
        let rows = try db.query("SELECT count(*), min(ts), max(ts), round(sum(value), 2) FROM events")
        if let r = rows.first {
            print(
                "\nsluice-demo.db now holds \(r[0] ?? "0") events from \(r[1] ?? "-") to \(r[2] ?? "-") (sum of value \(r[3] ?? "-"))."
            )
        }
        print("Try: sqlite3 \(database) 'SELECT * FROM events LIMIT 5'")
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the deterministic W0 dataset (id, name, ts, value, tags) for trying and benchmarking.")

    @Option(help: "Rows to generate.")
    var rows: Int = 2_000_000

    @Option(help: "csv or jsonl.")
    var format: String = "csv"

    @Flag(help: "Compress with gzip.")
    var gzip = false

    @Option(help: "Random seed.")
    var seed: UInt64 = 42

    @Option(name: .shortAndLong, help: "Output file.")
    var output: String

    func run() throws {
        guard let f = W0Generator.Format(rawValue: format) else {
            throw ValidationError("--format must be csv or jsonl")
        }
        guard rows >= 0 else { throw ValidationError("--rows must not be negative") }
        try W0Generator(rows: rows, seed: seed).write(to: output, format: f, gzip: gzip)
    }
}
