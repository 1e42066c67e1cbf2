import Foundation
import SluiceCSV
import SluiceCore
import SluiceJSONLines
import SluiceRuntime
import SluiceSQLite

/// Everything a load needs, from `sluice load` flags or a pipeline file, before it is turned into a
/// ``Pipeline``. Unset values take the documented defaults.
public struct LoadSpec: Sendable {
    /// Input files (`-` is standard input).
    public var inputs: [String] = []
    /// `csv` or `jsonl`; nil means from the first file's name.
    public var format: String?
    /// Declared schema (`id:int64,name:string`); nil means inferred.
    public var schema: String?
    /// CSV delimiter (one character, or `tab`).
    public var delimiter: String?
    /// CSV null tokens; nil means an unquoted empty field is null.
    public var nullTokens: [String]?
    /// Whether CSV input has a header. Default: true.
    public var header = true
    /// The target store URL (`sqlite:PATH`).
    public var into: String?
    /// Target table; nil means the first input's base name.
    public var table: String?
    /// Key columns (for upsert).
    public var key: [String] = []
    /// `append`, `upsert` or `replace`. Default: `append`.
    public var mode = "append"
    /// Rejects file; nil means `<table>.rejects.jsonl` beside the database.
    public var rejects: String?
    /// `N` or `N%`.
    public var maxErrors: String?
    /// Where to write the JSON report.
    public var reportJSON: String?
    /// Batching policy.
    public var batching = BatchingPolicy()
    /// Decode workers; nil means one per core.
    public var workers: Int?
    /// Fraction of the machine's memory the run may use. Default: 0.25.
    public var memoryFraction = 0.25
    /// Show the live progress line on a terminal. Default: true.
    public var progress = true

    /// An empty spec.
    public init() {}

    /// A store URL, parsed.
    public enum Store: Equatable, Sendable {
        /// `sqlite:PATH`.
        case sqlite(path: String)

        /// Parses `sqlite:PATH` (or `sqlite://PATH`).
        public static func parse(_ url: String) throws -> Store {
            if url.hasPrefix("sqlite://") { return .sqlite(path: String(url.dropFirst(9))) }
            if url.hasPrefix("sqlite:") { return .sqlite(path: String(url.dropFirst(7))) }
            let scheme = url.split(separator: ":").first.map(String.init) ?? url
            if ["postgres", "postgresql", "parquet", "jsonl"].contains(scheme) {
                throw SluiceError(.config, "store '\(scheme):' is not available in this version; use sqlite:PATH")
            }
            throw SluiceError(.config, "unknown store URL '\(url)'; expected sqlite:PATH")
        }
    }

    /// The format for `path`'s name (`.csv`, `.tsv`, `.jsonl`, `.ndjson`, each optionally `.gz`).
    public static func formatFromName(_ path: String) -> String? {
        var name = (path as NSString).lastPathComponent.lowercased()
        if name.hasSuffix(".gz") { name = String(name.dropLast(3)) }
        if name.hasSuffix(".csv") { return "csv" }
        if name.hasSuffix(".tsv") { return "tsv" }
        if name.hasSuffix(".jsonl") || name.hasSuffix(".ndjson") || name.hasSuffix(".json") { return "jsonl" }
        return nil
    }

    /// The table name derived from a file name (`data/events.csv.gz` → `events`).
    public static func tableFromName(_ path: String) -> String {
        var name = (path as NSString).lastPathComponent
        for ext in [".gz", ".csv", ".tsv", ".jsonl", ".ndjson", ".json"] where name.lowercased().hasSuffix(ext) {
            name = String(name.dropLast(ext.count))
        }
        let cleaned = String(name.map { $0.isLetter || $0.isNumber || $0 == "_" ? $0 : "_" })
        return cleaned.isEmpty || path == "-" ? "data" : cleaned
    }

    /// The format, resolved.
    public func recordFormat() throws -> any RecordFormat {
        guard let first = inputs.first else { throw SluiceError(.config, "no input files") }
        let name = format?.lowercased() ?? Self.formatFromName(first)
        switch name {
        case "csv", "tsv":
            var o = CSVOptions()
            o.header = header
            o.nullTokens = nullTokens
            if name == "tsv" { o.delimiter = 9 }
            if let d = delimiter {
                if d == "tab" || d == "\\t" {
                    o.delimiter = 9
                } else {
                    guard d.utf8.count == 1, let b = d.utf8.first, b != UInt8(ascii: "\""), b != 10, b != 13 else {
                        throw SluiceError(
                            .config,
                            "--delimiter must be one ASCII character other than a quote or newline (got '\(d)')")
                    }
                    o.delimiter = b
                }
            }
            return CSVFormat(options: o)
        case "jsonl", "ndjson", "json":
            return JSONLinesFormat()
        case nil:
            throw SluiceError(.config, "cannot tell the format of '\(first)' from its name; pass --format csv|jsonl")
        default:
            throw SluiceError(.config, "unknown format '\(name!)'; expected csv or jsonl")
        }
    }

    /// The write mode, resolved.
    public func writeMode() throws -> WriteMode {
        switch mode.lowercased() {
        case "append":
            return .append
        case "upsert":
            guard !key.isEmpty else { throw SluiceError(.config, "--mode upsert needs --key COLUMN[,COLUMN]") }
            return .upsert(key: key)
        case "replace":
            return .replace
        default:
            throw SluiceError(.config, "unknown mode '\(mode)'; expected append, upsert or replace")
        }
    }

    /// The database path of the target.
    public func databasePath() throws -> String {
        guard let into else { throw SluiceError(.config, "no target: pass --into sqlite:PATH") }
        switch try Store.parse(into) {
        case .sqlite(let path):
            guard !path.isEmpty else { throw SluiceError(.config, "sqlite: URL needs a path (sqlite:events.db)") }
            return path
        }
    }

    /// The resolved table name.
    public var tableName: String { table ?? Self.tableFromName(inputs.first ?? "data") }

    /// The resolved rejects path.
    public func rejectsPath() throws -> String {
        if let rejects { return rejects }
        let db = try databasePath()
        let dir = (db as NSString).deletingLastPathComponent
        return (dir.isEmpty ? "" : dir + "/") + tableName + ".rejects.jsonl"
    }

    /// Builds the pipeline.
    /// - Throws: ``SluiceError`` with code `.config` for anything inconsistent.
    public func makePipeline() throws -> Pipeline {
        guard !inputs.isEmpty else { throw SluiceError(.config, "no input files") }
        let format = try recordFormat()
        let declared = try schema.map { try Schema.parse($0) }
        let mode = try writeMode()
        if let declared {
            for k in key where declared.index(of: k) == nil {
                throw SluiceError(.config, "--key column '\(k)' is not in --schema (\(declared))")
            }
        }
        let source = FileSource(paths: inputs, format: format, schema: declared, requiredFields: key)
        let sink = SQLiteSink(path: try databasePath(), table: tableName, mode: mode)
        var options = PipelineOptions()
        options.batching = batching
        if let workers {
            guard workers >= 1 else { throw SluiceError(.config, "workers must be at least 1") }
            options.workers = workers
        }
        guard memoryFraction > 0 && memoryFraction <= 1 else {
            throw SluiceError(.config, "memory fraction must be in (0, 1], got \(memoryFraction)")
        }
        options.memory = MemoryBudget.detect(fraction: memoryFraction)
        if let maxErrors {
            guard let limit = ErrorLimit(maxErrors) else {
                throw SluiceError(
                    .config, "--max-errors takes a count (100) or a percentage (0.5%), got '\(maxErrors)'")
            }
            options.maxErrors = limit
        }
        options.rejectsPath = try rejectsPath()
        options.showProgress = progress
        guard batching.maxRows >= 1, batching.maxBytes >= 1024 else {
            throw SluiceError(.config, "batching needs max_rows ≥ 1 and max_bytes ≥ 1 KiB")
        }
        return Pipeline(source: source, sink: sink, options: options)
    }
}

/// Parses sizes and durations written in configuration.
public enum Units {
    /// `4MiB`, `512KiB`, `1GB`, `4096` → bytes.
    public static func bytes(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1000), ("MB", 1_000_000),
            ("GB", 1_000_000_000),
            ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("B", 1),
        ]
        for (suffix, mult) in units where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v >= 0 else {
                return nil
            }
            return Int(v * Double(mult))
        }
        return Int(t)
    }

    /// `500ms`, `2s`, `1m`, `1.5` (seconds) → a duration.
    public static func duration(_ text: String) -> Duration? {
        let t = text.trimmingCharacters(in: .whitespaces)
        for (suffix, scale) in [("ms", 0.001), ("s", 1.0), ("m", 60.0)] where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count)), v >= 0 else { return nil }
            return .milliseconds(Int64(v * scale * 1000))
        }
        guard let v = Double(t), v >= 0 else { return nil }
        return .milliseconds(Int64(v * 1000))
    }
}
