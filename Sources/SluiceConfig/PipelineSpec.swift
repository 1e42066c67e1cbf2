import Foundation
import Logging
import SluiceBlobStore
import SluiceCSV
import SluiceContent
import SluiceCore
import SluiceFiles
import SluiceHTTP
import SluicePostgres
import SluiceRuntime
import SluiceXML

/// Everything a run needs, from `sluice load` flags or a pipeline file, as typed values: each is parsed once,
/// where it is read (the command line or the pipeline file), and ``makePipeline()`` only assembles. Unset values
/// take the documented defaults.
public struct PipelineSpec: Sendable {
    /// Input files (`-` is standard input).
    public var inputs: [String] = []
    /// A registered format's name (``FormatRegistry``); nil means from the first file's name.
    public var format: String?
    /// Declared schema; nil means inferred.
    public var schema: Schema?
    /// CSV settings (null tokens, header); the delimiter is ``delimiter``.
    public var csv = CSVOptions()
    /// The CSV delimiter, when given; nil means the format's own (a comma for `csv`, a tab for `tsv`).
    public var delimiter: UInt8?
    /// The target store.
    public var store: Store?
    /// Target table; nil means the first input's base name.
    public var table: String?
    /// How rows are written. Default: append.
    public var mode: WriteMode = .append
    /// Parallel writer connections (PostgreSQL); nil means the sink's default.
    public var writers: Int?
    /// A PostgreSQL query as the source, instead of files.
    public var postgresSource: PostgresSourceSpec?
    /// Transforms applied by the decode workers, in order.
    public var transforms: [TransformSpec] = []
    /// Rejects file; nil means `<table>.rejects.jsonl` beside the database.
    public var rejects: String?
    /// Abort after this many rejects.
    public var maxErrors: ErrorLimit?
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
    /// Observers of the run besides the progress line (metrics). Default: none.
    public var observers: [any PipelineObserver] = []
    /// Where the stores' connections log. Default: `sluice`.
    public var logger = Logger(label: "sluice")
    /// XML input: the record path and, optionally, an explicit mapping.
    public var xml: XMLSourceSpec?
    /// Upserts: write only records whose content hash changed.
    public var skipUnchanged = false
    /// Upserts: delete stored records a complete, clean run did not contain.
    public var purgeMissing = false

    /// An empty spec.
    public init() {}

    /// A PostgreSQL query read with keyset pagination.
    public struct PostgresSourceSpec: Sendable {
        /// `postgres://…`.
        public var url: String
        /// The query.
        public var query: String
        /// The key column (unique, orderable).
        public var key: String
        /// Rows per page; nil means the batch size.
        public var pageRows: Int?
        /// Start after this key.
        public var startAfter: String?
        /// Checkpoint file (resume).
        public var checkpoint: String?

        /// Creates a spec.
        public init(
            url: String, query: String, key: String, pageRows: Int? = nil, startAfter: String? = nil,
            checkpoint: String? = nil
        ) {
            self.url = url
            self.query = query
            self.key = key
            self.pageRows = pageRows
            self.startAfter = startAfter
            self.checkpoint = checkpoint
        }
    }

    /// A transform, configured.
    public enum TransformSpec: Sendable {
        /// ``ReadHeadTransform``: `path` template, bytes to read, output column, template variables.
        case readHead(path: String, bytes: Int, column: String, variables: [String: String])
        /// ``MimeTransform``: input bytes column, output column, whether to answer known signatures without
        /// libmagic (``FastSignatures``).
        case mime(input: String, output: String, fastSignatures: Bool)
        /// ``FetchTransform``: the I/O-bound HTTP fetch, storing bodies under `blobRoot` (nil: hash only).
        /// It runs after the other transforms.
        case fetch(options: FetchOptions, blobRoot: String?, durability: BlobStore.Durability)
    }

    /// The name of the format `path`'s name selects (`.csv`, `.tsv`, `.jsonl`, `.ndjson`, `.xml`, each
    /// optionally `.gz`).
    public static func formatFromName(_ path: String) -> String? { FormatRegistry.forPath(path)?.names[0] }

    /// The table name derived from a file name (`data/events.csv.gz` → `events`).
    public static func tableFromName(_ path: String) -> String {
        let name = FormatRegistry.baseName(path).stem
        let cleaned = String(name.map { $0.isLetter || $0.isNumber || $0 == "_" ? $0 : "_" })
        return cleaned.isEmpty || path == "-" ? "data" : cleaned
    }

    /// The format, from the registry.
    public func recordFormat() throws -> any RecordFormat {
        guard let first = inputs.first else { throw SluiceError(.config, "no input files") }
        let kind: FormatKind
        if let format {
            guard let k = FormatRegistry.named(format) else {
                throw SluiceError(.config, "unknown format '\(format)'; expected \(FormatRegistry.names)")
            }
            kind = k
        } else {
            guard let k = FormatRegistry.forPath(first) else {
                throw SluiceError(
                    .config, "cannot tell the format of '\(first)' from its name; pass --format csv|jsonl")
            }
            kind = k
        }
        return try kind.make(self)
    }

    /// The target.
    public func target() throws -> Store {
        guard let store else { throw SluiceError(.config, "no target: pass --into sqlite:PATH or postgres://HOST/DB") }
        return store
    }

    /// The resolved table name.
    public var tableName: String {
        table ?? (postgresSource != nil ? "data" : Self.tableFromName(inputs.first ?? "data"))
    }

    /// The resolved rejects path: beside a store's local file, or in the current directory.
    public func rejectsPath() throws -> String {
        if let rejects { return rejects }
        guard let db = try target().path else {
            return tableName.replacingOccurrences(of: "/", with: "_") + ".rejects.jsonl"
        }
        let dir = (db as NSString).deletingLastPathComponent
        return (dir.isEmpty ? "" : dir + "/") + tableName + ".rejects.jsonl"
    }

    /// Builds the pipeline.
    /// - Throws: ``SluiceError`` with code `.config` for anything inconsistent.
    public func makePipeline() throws -> Pipeline {
        let key = mode.keyColumns
        let source: any SourceBase
        if let pg = postgresSource {
            guard inputs.isEmpty else { throw SluiceError(.config, "give input files or a postgres source, not both") }
            source = try PostgresSource(
                url: pg.url, query: pg.query, key: pg.key, pageRows: pg.pageRows, startAfter: pg.startAfter,
                checkpoint: pg.checkpoint, logger: logger)
        } else {
            guard !inputs.isEmpty else { throw SluiceError(.config, "no input files") }
            let format = try recordFormat()
            var declared = schema
            if let x = format as? XMLFormat {
                guard schema == nil else {
                    throw SluiceError(.config, "XML input takes a mapping (fields:), not a schema")
                }
                declared = x.declaredSchema
            }
            if let declared {
                for k in key where declared.index(of: k) == nil {
                    throw SluiceError(.config, "--key column '\(k)' is not in --schema (\(declared))")
                }
            }
            source = FileSource(paths: inputs, format: format, schema: declared, requiredFields: key)
        }
        let store = try target()
        var tracking = ChangeTracking(skipUnchanged: skipUnchanged, purgeMissing: purgeMissing)
        tracking.hashColumn = xml != nil ? xml!.hashColumn : "content_hash"
        tracking.sourceHashColumn = xml?.effectiveSourceHashColumn
        let sink = try StoreRegistry.kind(of: store).makeSink(
            store, SinkRequest(table: tableName, mode: mode, changes: tracking, writers: writers, spec: self))
        if !self.transforms.isEmpty, let x = xml, !x.children.filter({ !$0.asJSON }).isEmpty || x.fields == nil {
            throw SluiceError(
                .config,
                "transforms cannot run on XML records with child tables yet; map the children as JSON (as: json) or drop the transforms"
            )
        }
        var io: (any IOTransform)?
        for (i, t) in self.transforms.enumerated() {
            guard case .fetch(let o, let root, let durability) = t else { continue }
            guard i == self.transforms.count - 1 else {
                throw SluiceError(.config, "fetch must be the last transform (it runs after the others)")
            }
            if o.resume, case .append = mode {
                throw SluiceError(
                    .config,
                    "fetch resumes from its table: use sink mode upsert with key [\(o.urlColumn)] (or fetch.resume: false)"
                )
            }
            io = try FetchTransform(
                options: o, blobs: root.map { try BlobStore(root: $0, durability: durability) }, logger: logger)
        }
        let transforms: [any Transform] = try self.transforms.compactMap { t -> (any Transform)? in
            switch t {
            case .fetch:
                return nil
            case .readHead(let path, let bytes, let column, let variables):
                guard bytes > 0 else { throw SluiceError(.config, "read_head: bytes must be positive") }
                return ReadHeadTransform(
                    path: try PathTemplate(path, variables: variables), bytes: bytes, column: column)
            case .mime(let input, let output, let fast):
                return try MimeTransform(input: input, output: output, fastSignatures: fast)
            }
        }
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
        options.maxErrors = maxErrors
        options.rejectsPath = try rejectsPath()
        options.showProgress = progress
        options.observers = observers
        guard batching.maxRows >= 1, batching.maxBytes >= 1024 else {
            throw SluiceError(.config, "batching needs max_rows ≥ 1 and max_bytes ≥ 1 KiB")
        }
        return Pipeline(source: source, transforms: transforms, io: io, sink: sink, options: options)
    }
}

extension PipelineSpec {
    /// How XML records map to rows.
    public struct XMLSourceSpec: Sendable {
        /// The record path (`/releases/release`).
        public var record: String
        /// The key column (links child tables); nil: the sink's key, else `id` when there is one.
        public var key: String?
        /// The content-hash column; nil: none. Default: `content_hash`.
        public var hashColumn: String? = "content_hash"
        /// Explicit parent fields; nil: inferred from the document.
        public var fields: [XMLFieldMapping]?
        /// Explicit child tables and JSON list columns (used only with explicit fields).
        public var children: [XMLChildMapping] = []
        /// Keep a bare `&` as text. Default: true.
        public var tolerant = true
        /// The source-hash column (a hash of each record's raw bytes, kept with the content hash so that update
        /// runs skip decoding unchanged records); nil: none. Default: `source_hash`.
        public var sourceHashColumn: String? = "source_hash"
        /// Trim whitespace around element text (``XMLMapping/trim``). Default: false, text is kept exactly.
        public var trim = false

        /// The source-hash column in use (none without a content-hash column).
        public var effectiveSourceHashColumn: String? {
            XMLMapping.sourceHashColumn(sourceHashColumn, hashColumn: hashColumn)
        }

        /// Creates a spec for records at `record`.
        public init(record: String) { self.record = record }

        /// The key linking child rows: the source's, else a single sink key.
        public func linkKey(sinkKey: [String]) -> String? { key ?? (sinkKey.count == 1 ? sinkKey[0] : nil) }

        /// The explicit mapping, if `fields` were given.
        public func mapping(sinkKey: [String]) -> XMLMapping? {
            fields.map {
                XMLMapping(
                    record: record, key: linkKey(sinkKey: sinkKey), fields: $0, children: children,
                    hashColumn: hashColumn, tolerant: tolerant, sourceHashColumn: sourceHashColumn, trim: trim)
            }
        }

        /// The format: the explicit mapping, or one inferred from the document.
        public func format(sinkKey: [String]) throws -> XMLFormat {
            if let m = mapping(sinkKey: sinkKey) { return try XMLFormat(mapping: m) }
            return XMLFormat(
                record: record, key: linkKey(sinkKey: sinkKey), hashColumn: hashColumn, tolerant: tolerant,
                sourceHashColumn: sourceHashColumn, trim: trim)
        }
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
