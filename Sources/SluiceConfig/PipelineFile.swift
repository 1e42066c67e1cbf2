import Foundation
import SluiceBlobStore
import SluiceCSV
import SluiceContent
import SluiceCore
import SluiceFiles
import SluiceHTTP
import SluicePostgres
import SluiceRuntime
import SluiceXML
import Yams

/// Reads a pipeline file (YAML) into a ``PipelineSpec``. Unknown keys and wrong types are errors naming the
/// file, line and column. Relative paths are taken relative to the pipeline file's directory.
///
/// ```yaml
/// source:
///   path: events.csv.gz          # or paths: [a.csv, b.csv]
///   format: csv                  # csv | jsonl; default: from the file name
///   schema: id:int64,name:string # or a mapping {id: int64, name: string}; default: inferred
///   delimiter: ","
///   null: ["", "NULL"]
///   header: true
/// transforms: []
/// sink:
///   url: sqlite:events.db        # or postgres://user@host/db
///   table: events
///   mode: upsert                 # append | upsert | update | replace
///   key: [id]
///   writers: 2                   # PostgreSQL writer connections
/// batching:
///   max_rows: 65536
///   max_bytes: 4MiB
///   max_latency: 1s
///   workers: 2
///   memory_fraction: 0.25
/// errors:
///   rejects: events.rejects.jsonl
///   max_errors: 1%
/// ```
///
/// A PostgreSQL query as the source, with content transforms (the W2 backfill):
///
/// ```yaml
/// vars:
///   root: ${BLOB_ROOT:-/srv/blobs}       # ${NAME} and ${NAME:-default} read the environment
/// source:
///   type: postgres
///   url: ${DATABASE_URL}
///   query: SELECT DISTINCT blobid FROM inode WHERE mime_type IS NULL
///   key: blobid                          # keyset pagination on this column
///   page_rows: 10000
///   checkpoint: backfill.checkpoint      # resume after the last committed key
/// transforms:
///   - read_head: {path: "{root}/{blobid:0:2}/{blobid:2:2}/{blobid}", bytes: 2048}
///   - mime: {from: head, as: mime_type, fast_signatures: true}
/// sink:
///   url: ${DATABASE_URL}
///   table: inode
///   mode: update
///   key: [blobid]
///   set: [mime_type]
///   where: mime_type IS NULL
/// ```
public enum PipelineFile {
    /// Parses the file at `path`.
    public static func load(path: String) throws -> PipelineSpec {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw SluiceError(
                .config, "cannot read the pipeline file: \(error.localizedDescription)",
                position: SourcePosition(file: path))
        }
        let base = (path as NSString).deletingLastPathComponent
        return try parse(text, file: path, baseDirectory: base)
    }

    /// The deepest nesting a pipeline file may have (a real one nests a handful of levels).
    static let nestingLimit = 100

    /// Refuses text that may nest deeper than ``nestingLimit`` before the YAML parser sees it: the parser
    /// recurses once per level, so a file of a few thousand `- ` or `[` would overflow the stack (found by
    /// FuzzPipelineYAML). The bound is cheap and generous: a line's indentation, plus the `- ` / `? ` / `: `
    /// indicators that open collections on it, plus the flow brackets (`[`, `{`) open outside quotes.
    /// - Throws: ``SluiceError`` naming the file and the line.
    static func checkNesting(_ text: String, file: String) throws {
        var flow = 0
        var line = 0
        for raw in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            line += 1
            var indent = 0
            var compact = 0
            var i = raw.startIndex
            while i < raw.endIndex, raw[i] == UInt8(ascii: " ") {
                indent += 1
                i = raw.index(after: i)
            }
            var quote: UInt8? = nil
            var previous: UInt8 = UInt8(ascii: " ")
            var deepestFlow = flow
            while i < raw.endIndex {
                let c = raw[i]
                let next = raw.index(after: i) < raw.endIndex ? raw[raw.index(after: i)] : UInt8(ascii: " ")
                if let q = quote {
                    if c == q { quote = nil }
                } else if c == UInt8(ascii: "#") && (previous == UInt8(ascii: " ") || previous == UInt8(ascii: "\t")) {
                    break
                } else if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") {
                    quote = c
                } else if c == UInt8(ascii: "[") || c == UInt8(ascii: "{") {
                    flow += 1
                    deepestFlow = max(deepestFlow, flow)
                } else if c == UInt8(ascii: "]") || c == UInt8(ascii: "}") {
                    flow = max(0, flow - 1)
                } else if (c == UInt8(ascii: "-") || c == UInt8(ascii: "?") || c == UInt8(ascii: ":"))
                    && (next == UInt8(ascii: " ") || next == UInt8(ascii: "\t"))
                {
                    compact += 1
                }
                previous = c
                i = raw.index(after: i)
            }
            if indent + compact + deepestFlow > nestingLimit {
                throw SluiceError(
                    .config, "the YAML nests deeper than \(nestingLimit) levels here",
                    position: SourcePosition(file: file, line: line))
            }
        }
    }

    /// Parses pipeline YAML text; `file` names it in errors.
    public static func parse(_ text: String, file: String, baseDirectory: String = "") throws -> PipelineSpec {
        try checkNesting(text, file: file)
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let e as YamlError {
            throw SluiceError(.config, "not valid YAML: \(e)", position: SourcePosition(file: file))
        }
        guard let root else {
            throw SluiceError(.config, "the pipeline file is empty", position: SourcePosition(file: file))
        }
        let r = Reader(file: file, base: baseDirectory)
        var spec = PipelineSpec()
        let top = try r.mapping(
            root, "the pipeline", allowed: ["vars", "source", "transforms", "sink", "batching", "errors"])
        guard let source = top["source"] else { throw r.error(root, "missing 'source'") }
        guard let sink = top["sink"] else { throw r.error(root, "missing 'sink'") }
        var vars: [String: (text: String, fromEnvironment: Bool)] = [:]
        if let v = top["vars"] {
            guard case .mapping(let m) = v else { throw r.error(v, "'vars' must be a mapping") }
            for (k, val) in m { vars[try r.string(k, "a var name")] = try r.scalar(val, "vars entry") }
        }

        try parseSink(sink, r, &spec)
        if case .mapping(let sm) = source, sm["type"] != nil {
            let src = try r.mapping(
                source, "source",
                allowed: ["type", "url", "query", "key", "page_rows", "start_after", "checkpoint"])
            let type = try r.string(src["type"]!, "source.type")
            guard type == "postgres" else {
                throw r.error(src["type"]!, "source.type must be postgres (files need no type)")
            }
            guard let url = src["url"], let query = src["query"], let key = src["key"] else {
                throw r.error(source, "a postgres source needs 'url', 'query' and 'key'")
            }
            let u = try r.string(url, "source.url")
            do { _ = try PostgresLocation(url: u) } catch let e as SluiceError { throw r.error(url, e.message) }
            spec.postgresSource = PipelineSpec.PostgresSourceSpec(
                url: u, query: try r.string(query, "source.query"), key: try r.string(key, "source.key"),
                pageRows: try src["page_rows"].map { try r.int($0, "source.page_rows", min: 1) },
                startAfter: try src["start_after"].map { try r.string($0, "source.start_after") },
                checkpoint: try src["checkpoint"].map { try r.path($0, "source.checkpoint") })
        } else {
            try parseFileSource(source, r, &spec)
        }

        if let t = top["transforms"] {
            guard case .sequence(let seq) = t else { throw r.error(t, "'transforms' must be a list") }
            for item in seq { spec.transforms.append(try parseTransform(item, r, vars: vars)) }
        }
        try parseRest(top, r, &spec)
        return spec
    }

    private static func parseTransform(
        _ item: Node, _ r: Reader, vars: [String: (text: String, fromEnvironment: Bool)]
    ) throws
        -> PipelineSpec.TransformSpec
    {
        let m = try r.mapping(item, "a transform", allowed: ["read_head", "mime", "fetch"])
        guard m.count == 1, let (name, body) = m.first else {
            throw r.error(item, "a transform is one of read_head: {…}, mime: {…} or fetch: {…}")
        }
        switch name {
        case "fetch":
            return try parseFetch(body, r)
        case "read_head":
            let b = try r.mapping(body, "read_head", allowed: ["path", "bytes", "as"])
            guard let p = b["path"] else { throw r.error(body, "read_head needs 'path' (a template like {root}/{id})") }
            var path = try r.string(p, "read_head.path")
            // The template is a path: a leading {var} is resolved as the path it holds (relative to this file
            // when the file wrote it, to the working directory when the environment gave it); a template that
            // starts with text is relative to this file.
            var values = vars.mapValues(\.text)
            if path.hasPrefix("{"), let close = path.firstIndex(of: "}"),
                let v = vars[String(path[path.index(after: path.startIndex)..<close])]
            {
                values[String(path[path.index(after: path.startIndex)..<close])] = r.resolve(v)
            } else {
                path = r.resolve((path, false))
            }
            do { _ = try PathTemplate(path, variables: values) } catch let e as SluiceError {
                throw r.error(p, e.message)
            }
            return .readHead(
                path: path, bytes: try b["bytes"].map { try r.int($0, "read_head.bytes", min: 1) } ?? 2048,
                column: try b["as"].map { try r.string($0, "read_head.as") } ?? "head", variables: values)
        default:
            let b = try r.mapping(body, "mime", allowed: ["from", "as", "fast_signatures"])
            return .mime(
                input: try b["from"].map { try r.string($0, "mime.from") } ?? "head",
                output: try b["as"].map { try r.string($0, "mime.as") } ?? "mime_type",
                fastSignatures: try b["fast_signatures"].map { try r.bool($0, "mime.fast_signatures") } ?? false)
        }
    }

    /// `fetch:` — the HTTP fetch stage and its blob store.
    private static func parseFetch(_ body: Node, _ r: Reader) throws -> PipelineSpec.TransformSpec {
        let b = try r.mapping(
            body, "fetch",
            allowed: [
                "url", "concurrency", "rate", "burst", "timeout", "connect_timeout", "max_body", "attempts", "backoff",
                "max_backoff", "max_retry_after", "resume", "headers", "max_redirects", "blobs",
            ])
        var o = FetchOptions()
        func duration(_ key: String) throws -> Duration? {
            guard let v = b[key] else { return nil }
            guard let d = Units.duration(try r.string(v, "fetch.\(key)")), d > .zero else {
                throw r.error(v, "fetch.\(key) must be a positive duration (e.g. 500ms, 30s)")
            }
            return d
        }
        if let v = b["url"] { o.urlColumn = try r.string(v, "fetch.url") }
        if let v = b["concurrency"] { o.concurrency = try r.int(v, "fetch.concurrency", min: 1) }
        if let v = b["rate"] {
            guard let x = Double(try r.string(v, "fetch.rate")), x > 0 else {
                throw r.error(v, "fetch.rate must be a positive number of requests per second per host")
            }
            o.rate = x
        }
        if let v = b["burst"] { o.burst = try r.int(v, "fetch.burst", min: 1) }
        if let d = try duration("timeout") { o.timeout = d }
        if let d = try duration("connect_timeout") { o.connectTimeout = d }
        if let v = b["max_body"] {
            guard let n = Units.bytes(try r.string(v, "fetch.max_body")), n >= 1 else {
                throw r.error(v, "fetch.max_body must be a size (e.g. 64MiB)")
            }
            o.maxBodyBytes = n
        }
        if let v = b["attempts"] { o.retry.maxAttempts = try r.int(v, "fetch.attempts", min: 1) }
        if let d = try duration("backoff") { o.retry.baseDelay = d }
        if let d = try duration("max_backoff") { o.retry.maxDelay = d }
        if let d = try duration("max_retry_after") { o.maxRetryAfter = d }
        if let v = b["resume"] { o.resume = try r.bool(v, "fetch.resume") }
        if let v = b["max_redirects"] { o.maxRedirects = try r.int(v, "fetch.max_redirects", min: 0) }
        if let v = b["headers"] {
            guard case .mapping(let hm) = v else { throw r.error(v, "fetch.headers must be a mapping of name: value") }
            o.headers = try hm.map { (try r.string($0.key, "header name"), try r.string($0.value, "header value")) }
        }
        var root: String?
        var durability = BlobStore.Durability.batch
        if let v = b["blobs"] {
            if case .mapping = v {
                let bm = try r.mapping(v, "fetch.blobs", allowed: ["root", "fsync"])
                guard let rv = bm["root"] else { throw r.error(v, "fetch.blobs needs 'root' (a directory)") }
                root = try r.path(rv, "fetch.blobs.root")
                if let f = bm["fsync"] {
                    let text = try r.string(f, "fetch.blobs.fsync")
                    guard let d = BlobStore.Durability(rawValue: text) else {
                        throw r.error(f, "fetch.blobs.fsync must be none, batch or each (got '\(text)')")
                    }
                    durability = d
                }
            } else {
                root = try r.path(v, "fetch.blobs")
            }
        }
        do { try o.validate() } catch let e as SluiceError { throw r.error(body, e.message) }
        return .fetch(options: o, blobRoot: root, durability: durability)
    }

    private static func parseFileSource(_ source: Node, _ r: Reader, _ spec: inout PipelineSpec) throws {
        let src = try r.mapping(
            source, "source",
            allowed: [
                "path", "paths", "format", "schema", "delimiter", "null", "header", "strict_header", "record", "key",
                "hash", "fields",
                "children", "tolerant", "source_hash", "trim",
            ])
        if let p = src["path"] { spec.inputs = [try r.path(p, "source.path")] }
        if let ps = src["paths"] {
            if src["path"] != nil { throw r.error(ps, "give either source.path or source.paths, not both") }
            guard case .sequence(let seq) = ps else { throw r.error(ps, "source.paths must be a list") }
            spec.inputs = try seq.map { try r.path($0, "an entry of source.paths") }
        }
        if spec.inputs.isEmpty { throw r.error(source, "source needs 'path' or 'paths'") }
        if let f = src["format"] { spec.format = try r.string(f, "source.format") }
        if let s = src["schema"] {
            do {
                if case .mapping(let m) = s {
                    spec.schema = try Schema.fields(
                        m.map {
                            (try r.string($0.key, "schema field name"), try r.string($0.value, "schema field type"))
                        })
                } else {
                    spec.schema = try Schema.parse(try r.string(s, "source.schema"))
                }
            } catch let e as SluiceError where e.position == nil { throw r.error(s, e.message) }
        }
        if let d = src["delimiter"] {
            do { spec.delimiter = try CSVOptions.delimiter(try r.string(d, "source.delimiter")) } catch let e
                as SluiceError where e.position == nil
            { throw r.error(d, e.message) }
        }
        if let n = src["null"] {
            if case .sequence = n {
                spec.csv.nullTokens = try r.strings(n, "source.null")
            } else {
                spec.csv.nullTokens = [try r.string(n, "source.null")]
            }
        }
        if let h = src["header"] { spec.csv.header = try r.bool(h, "source.header") }
        if let h = src["strict_header"] { spec.csv.strictHeader = try r.bool(h, "source.strict_header") }
        try parseXML(src, source, r, &spec)
    }

    /// XML record path and mapping.
    private static func parseXML(_ src: [String: Node], _ source: Node, _ r: Reader, _ spec: inout PipelineSpec) throws
    {
        let isXML =
            spec.format?.lowercased() == "xml"
            || (spec.format == nil && spec.inputs.first.flatMap(PipelineSpec.formatFromName) == "xml")
        let xmlKeys = ["record", "key", "hash", "fields", "children", "tolerant", "source_hash", "trim"]
        guard isXML else {
            if let k = xmlKeys.first(where: { src[$0] != nil }) {
                throw r.error(src[k]!, "source.\(k) applies to XML input only (format: xml)")
            }
            return
        }
        guard let rec = src["record"] else {
            throw r.error(source, "XML input needs source.record, the record elements' path (e.g. /releases/release)")
        }
        var x = PipelineSpec.XMLSourceSpec(record: try r.string(rec, "source.record"))
        if let k = src["key"] { x.key = try r.string(k, "source.key") }
        /// A column name, or a boolean: `true` for `name`, `false` for none.
        func column(_ v: Node, _ name: String, _ what: String) throws -> String? {
            if case .scalar = v, let b = v.bool { return b ? name : nil }
            return try r.string(v, what)
        }
        if let h = src["hash"] { x.hashColumn = try column(h, "content_hash", "source.hash") }
        if let t = src["tolerant"] { x.tolerant = try r.bool(t, "source.tolerant") }
        if let t = src["trim"] { x.trim = try r.bool(t, "source.trim") }
        if let h = src["source_hash"] { x.sourceHashColumn = try column(h, "source_hash", "source.source_hash") }
        if let f = src["fields"] { x.fields = try xmlFields(f, "source.fields", r) }
        if let c = src["children"] {
            guard x.fields != nil else { throw r.error(c, "source.children needs source.fields (an explicit mapping)") }
            guard case .mapping(let m) = c else { throw r.error(c, "source.children must be a mapping of table: {…}") }
            for (k, v) in m {
                let table = try r.string(k, "a child table name")
                let body = try r.mapping(v, "source.children.\(table)", allowed: ["path", "fields", "as", "trim"])
                guard let p = body["path"], let f = body["fields"] else {
                    throw r.error(v, "source.children.\(table) needs 'path' and 'fields'")
                }
                var asJSON = false
                if let a = body["as"] {
                    let s = try r.string(a, "source.children.\(table).as")
                    guard s == "json" || s == "table" else { throw r.error(a, "'as' must be table or json") }
                    asJSON = s == "json"
                }
                x.children.append(
                    XMLChildMapping(
                        table: table, path: try r.string(p, "source.children.\(table).path"),
                        fields: try xmlFields(f, "source.children.\(table).fields", r), asJSON: asJSON,
                        trim: try body["trim"].map { try r.bool($0, "source.children.\(table).trim") }))
            }
        }
        if let mapping = x.mapping(sinkKey: spec.mode.keyColumns) {
            do { _ = try mapping.schema() } catch let e as SluiceError { throw r.error(src["fields"]!, e.message) }
        }
        spec.format = "xml"
        spec.xml = x
    }

    /// `name: path` or `name: {path: …, type: …, trim: …, repeated: …}` entries, in file order.
    private static func xmlFields(_ node: Node, _ what: String, _ r: Reader) throws -> [XMLFieldMapping] {
        guard case .mapping(let m) = node else { throw r.error(node, "\(what) must be a mapping of column: path") }
        var out: [XMLFieldMapping] = []
        for (k, v) in m {
            let name = try r.string(k, "a column name")
            if case .mapping = v {
                let b = try r.mapping(v, "\(what).\(name)", allowed: ["path", "type", "trim", "repeated"])
                guard let p = b["path"] else { throw r.error(v, "\(what).\(name) needs 'path'") }
                var type = FieldType.string
                if let t = b["type"] {
                    let tn = try r.string(t, "\(what).\(name).type")
                    guard let ft = FieldType(rawValue: tn) else {
                        throw r.error(
                            t, "unknown type '\(tn)' (\(FieldType.allCases.map(\.rawValue).joined(separator: ", ")))")
                    }
                    type = ft
                }
                var repeated = XMLRepeated.reject
                if let rp = b["repeated"] {
                    let text = try r.string(rp, "\(what).\(name).repeated")
                    guard let v = XMLRepeated(rawValue: text) else {
                        throw r.error(rp, "\(what).\(name).repeated must be reject, first or list (got '\(text)')")
                    }
                    repeated = v
                }
                out.append(
                    XMLFieldMapping(
                        name, path: try r.string(p, "\(what).\(name).path"), type: type,
                        trim: try b["trim"].map { try r.bool($0, "\(what).\(name).trim") }, repeated: repeated))
            } else {
                out.append(XMLFieldMapping(name, path: try r.string(v, "\(what).\(name)")))
            }
        }
        return out
    }

    private static func parseSink(_ sink: Node, _ r: Reader, _ spec: inout PipelineSpec) throws {
        let snk = try r.mapping(
            sink, "sink",
            allowed: ["url", "table", "mode", "key", "set", "where", "writers", "skip_unchanged", "purge_missing"])
        guard let url = snk["url"] else { throw r.error(sink, "sink needs 'url' (sqlite:PATH or postgres://…)") }
        let value = try r.scalar(url, "sink.url")
        var u = value.text
        if u.hasPrefix("sqlite:") && !u.hasPrefix("sqlite://") {
            u = "sqlite:" + r.resolve((String(u.dropFirst(7)), value.fromEnvironment))
        }
        do { spec.store = try Store.parse(u) } catch let e as SluiceError { throw r.error(url, e.message) }
        if let t = snk["table"] { spec.table = try r.string(t, "sink.table") }
        var mode = "append"
        if let m = snk["mode"] {
            mode = try r.string(m, "sink.mode")
            guard ["append", "upsert", "update", "replace"].contains(mode) else {
                throw r.error(m, "sink.mode must be append, upsert, update or replace")
            }
        }
        let key = try snk["key"].map { try r.names($0, "sink.key") } ?? []
        let set = try snk["set"].map { try r.names($0, "sink.set") } ?? []
        let filter = try snk["where"].map { try r.string($0, "sink.where") }
        if let w = snk["writers"] { spec.writers = try r.int(w, "sink.writers", min: 1) }
        if let v = snk["skip_unchanged"] { spec.skipUnchanged = try r.bool(v, "sink.skip_unchanged") }
        if let v = snk["purge_missing"] { spec.purgeMissing = try r.bool(v, "sink.purge_missing") }
        if (mode == "upsert" || mode == "update") && key.isEmpty {
            throw r.error(sink, "sink.mode \(mode) needs sink.key")
        }
        if mode == "update" && set.isEmpty { throw r.error(sink, "sink.mode update needs sink.set") }
        do { spec.mode = try WriteMode.parse(mode, key: key, set: set, filter: filter) } catch let e as SluiceError {
            throw r.error(sink, e.message)
        }
    }

    private static func parseRest(_ top: [String: Node], _ r: Reader, _ spec: inout PipelineSpec) throws {
        if let b = top["batching"] {
            let bm = try r.mapping(
                b, "batching", allowed: ["max_rows", "max_bytes", "max_latency", "workers", "memory_fraction"])
            if let v = bm["max_rows"] { spec.batching.maxRows = try r.int(v, "batching.max_rows", min: 1) }
            if let v = bm["max_bytes"] {
                guard let n = Units.bytes(try r.string(v, "batching.max_bytes")), n >= 1024 else {
                    throw r.error(v, "batching.max_bytes must be a size of at least 1KiB (e.g. 4MiB)")
                }
                spec.batching.maxBytes = n
            }
            if let v = bm["max_latency"] {
                guard let d = Units.duration(try r.string(v, "batching.max_latency")) else {
                    throw r.error(v, "batching.max_latency must be a duration (e.g. 500ms, 1s)")
                }
                spec.batching.maxLatency = d
            }
            if let v = bm["workers"] { spec.workers = try r.int(v, "batching.workers", min: 1) }
            if let v = bm["memory_fraction"] {
                guard let f = Double(try r.string(v, "batching.memory_fraction")), f > 0, f <= 1 else {
                    throw r.error(v, "batching.memory_fraction must be a number in (0, 1]")
                }
                spec.memoryFraction = f
            }
        }
        if let e = top["errors"] {
            let em = try r.mapping(e, "errors", allowed: ["rejects", "max_errors"])
            if let v = em["rejects"] { spec.rejects = try r.path(v, "errors.rejects") }
            if let v = em["max_errors"] {
                guard let limit = ErrorLimit(try r.string(v, "errors.max_errors")) else {
                    throw r.error(v, "errors.max_errors must be a count (100) or a percentage (1%)")
                }
                spec.maxErrors = limit
            }
        }
    }

    private struct Reader {
        let file: String
        let base: String

        func error(_ node: Node, _ message: String) -> SluiceError {
            SluiceError(
                .config, message, position: SourcePosition(file: file, line: node.mark?.line, column: node.mark?.column)
            )
        }

        func mapping(_ node: Node, _ what: String, allowed: [String]) throws -> [String: Node] {
            guard case .mapping(let m) = node else { throw error(node, "\(what) must be a mapping") }
            var out: [String: Node] = [:]
            for (k, v) in m {
                let key = try string(k, "a key")
                guard allowed.contains(key) else {
                    throw error(k, "unknown key '\(key)' in \(what) (allowed: \(allowed.joined(separator: ", ")))")
                }
                if out[key] != nil { throw error(k, "key '\(key)' appears twice in \(what)") }
                out[key] = v
            }
            return out
        }

        /// A scalar's text with `${NAME}` and `${NAME:-default}` replaced from the environment: every value of
        /// a pipeline file is expanded, here and only here. `fromEnvironment` says whether the text starts with
        /// a value the environment supplied (not a default written in the file), which decides what a relative
        /// path is relative to.
        func scalar(_ node: Node, _ what: String) throws -> (text: String, fromEnvironment: Bool) {
            guard case .scalar(let sc) = node else { throw error(node, "\(what) must be a single value") }
            let s = sc.string
            var out = ""
            var fromEnvironment = false
            var rest = Substring(s)
            while let open = rest.range(of: "${") {
                out += rest[..<open.lowerBound]
                guard let close = rest[open.upperBound...].firstIndex(of: "}") else {
                    throw error(node, "\(what): '${' is never closed")
                }
                let inner = rest[open.upperBound..<close]
                let parts = inner.split(separator: ":-", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(parts[0])
                if let v = ProcessInfo.processInfo.environment[name], !v.isEmpty {
                    if out.isEmpty { fromEnvironment = true }
                    out += v
                } else if parts.count == 2 {
                    out += parts[1]
                } else {
                    throw error(node, "\(what): environment variable \(name) is not set (write ${\(name):-default})")
                }
                rest = rest[rest.index(after: close)...]
            }
            return (out + rest, fromEnvironment)
        }

        /// A scalar's expanded text.
        func string(_ node: Node, _ what: String) throws -> String { try scalar(node, what).text }

        /// A path: one written in the pipeline file is relative to the file's directory; one that comes from
        /// the environment (`${DUMP}`) is relative to the working directory, as on the command line.
        func path(_ node: Node, _ what: String) throws -> String { resolve(try scalar(node, what)) }

        /// ``path(_:_:)`` for text already expanded.
        func resolve(_ value: (text: String, fromEnvironment: Bool)) -> String {
            let p = value.text
            if p == "-" || p.hasPrefix("/") || value.fromEnvironment || base.isEmpty || p.isEmpty { return p }
            return base + "/" + p
        }

        /// A list of names, or one comma-separated string.
        func names(_ node: Node, _ what: String) throws -> [String] {
            if case .sequence = node { return try strings(node, what) }
            return try string(node, what).split(separator: ",").map {
                String($0).trimmingCharacters(in: .whitespaces)
            }
        }

        func strings(_ node: Node, _ what: String) throws -> [String] {
            guard case .sequence(let seq) = node else { throw error(node, "\(what) must be a list") }
            return try seq.map { try string($0, "an entry of \(what)") }
        }

        func bool(_ node: Node, _ what: String) throws -> Bool {
            guard case .scalar = node else { throw error(node, "\(what) must be true or false") }
            switch try string(node, what).lowercased() {
            case "true", "yes", "on": return true
            case "false", "no", "off": return false
            default: throw error(node, "\(what) must be true or false")
            }
        }

        func int(_ node: Node, _ what: String, min: Int) throws -> Int {
            guard case .scalar = node, let i = Int(try string(node, what).replacingOccurrences(of: "_", with: "")),
                i >= min
            else {
                throw error(node, "\(what) must be an integer ≥ \(min)")
            }
            return i
        }
    }
}
