import Foundation
import SluiceCSV
import SluiceCore
import SluiceInterfaces
import SluiceJSONLines
import SluicePostgres
import SluiceSQLite
import SluiceXML

/// A record format the configuration knows: its names, the file extensions that select it, and how to make it
/// from a spec. A new format is one file plus one entry in ``FormatRegistry/builtIn``.
public struct FormatKind: Sendable {
    /// The name (`csv`), then aliases (`ndjson`).
    public var names: [String]
    /// File extensions (without the dot, before any `.gz`) that select it.
    public var extensions: [String]
    /// Makes the format for a spec.
    public var make: @Sendable (PipelineSpec) throws -> any RecordFormat

    /// Creates a kind.
    public init(
        names: [String], extensions: [String], make: @escaping @Sendable (PipelineSpec) throws -> any RecordFormat
    ) {
        self.names = names
        self.extensions = extensions
        self.make = make
    }
}

/// The formats by name and by file extension.
public enum FormatRegistry {
    /// The built-in formats.
    public static let builtIn: [FormatKind] = [
        FormatKind(names: ["csv"], extensions: ["csv"]) { spec in
            var o = spec.csv
            o.delimiter = spec.delimiter ?? UInt8(ascii: ",")
            return CSVFormat(options: o)
        },
        FormatKind(names: ["tsv"], extensions: ["tsv"]) { spec in
            var o = spec.csv
            o.delimiter = spec.delimiter ?? 9
            return CSVFormat(options: o)
        },
        FormatKind(names: ["jsonl", "ndjson", "json"], extensions: ["jsonl", "ndjson", "json"]) { _ in
            JSONLinesFormat()
        },
        FormatKind(names: ["xml"], extensions: ["xml"]) { spec in
            guard let x = spec.xml else {
                throw SluiceError(.config, "XML input needs the record path (record: /releases/release)")
            }
            return try x.format(sinkKey: spec.mode.keyColumns)
        },
    ]

    /// The format called `name` (case-insensitive).
    public static func named(_ name: String) -> FormatKind? {
        builtIn.first { $0.names.contains(name.lowercased()) }
    }

    /// The format a file name selects (`events.csv.gz` → csv), if any.
    public static func forPath(_ path: String) -> FormatKind? {
        let ext = baseName(path).extension
        return builtIn.first { $0.extensions.contains(ext) }
    }

    /// A file's name without its directory, `.gz` and format extension, and that extension.
    static func baseName(_ path: String) -> (stem: String, extension: String) {
        var name = (path as NSString).lastPathComponent
        if name.lowercased().hasSuffix(".gz") { name = String(name.dropLast(3)) }
        guard let dot = name.lastIndex(of: ".") else { return (name, "") }
        let ext = name[name.index(after: dot)...].lowercased()
        guard builtIn.contains(where: { $0.extensions.contains(ext) }) else { return (name, ext) }
        return (String(name[..<dot]), ext)
    }

    /// Every name a format answers to, for messages.
    public static var names: String { builtIn.map { $0.names[0] }.joined(separator: ", ") }
}

/// Where a run writes, parsed once from its URL.
public struct Store: Sendable, Equatable, CustomStringConvertible {
    /// The store kind's scheme (`sqlite`, `postgres`, `discard`).
    public var scheme: String
    /// The URL as given.
    public var url: String
    /// The local file the store writes, when it is one (a SQLite database): rejects go beside it.
    public var path: String?

    /// A parsed store (a store kind's parser makes these).
    public init(scheme: String, url: String, path: String? = nil) {
        self.scheme = scheme
        self.url = url
        self.path = path
    }

    /// Parses a store URL with the registered kinds.
    /// - Throws: ``SluiceError`` (`.config`) for an unknown scheme or a malformed URL.
    public static func parse(_ url: String) throws -> Store {
        for kind in StoreRegistry.builtIn {
            if let store = try kind.parse(url) { return store }
        }
        let scheme = url.split(separator: ":").first.map(String.init) ?? url
        if ["parquet", "jsonl", "csv"].contains(scheme) {
            throw SluiceError(
                .config, "store '\(scheme):' is not available in this version; use sqlite:PATH or postgres://")
        }
        throw SluiceError(.config, "unknown store URL '\(url)'; expected sqlite:PATH or postgres://HOST/DB")
    }

    /// The URL.
    public var description: String { url }
}

/// What a store kind needs to make its sink.
public struct SinkRequest: Sendable {
    /// The target table.
    public var table: String
    /// How rows are written.
    public var mode: WriteMode
    /// Content-hash use.
    public var changes: ChangeTracking
    /// Parallel writers, when the user asked for a number.
    public var writers: Int?
    /// The spec, for store-specific settings (the logger).
    public var spec: PipelineSpec
}

/// A store the configuration knows: how to recognise and parse its URLs, and how to make its sink. A new store
/// is one file plus one entry in ``StoreRegistry/builtIn``.
public struct StoreKind: Sendable {
    /// The scheme (`sqlite`).
    public var scheme: String
    /// Parses `url` when it belongs to this kind (nil when it does not).
    public var parse: @Sendable (String) throws -> Store?
    /// Makes the sink.
    public var makeSink: @Sendable (Store, SinkRequest) throws -> any SinkBase

    /// Creates a kind.
    public init(
        scheme: String, parse: @escaping @Sendable (String) throws -> Store?,
        makeSink: @escaping @Sendable (Store, SinkRequest) throws -> any SinkBase
    ) {
        self.scheme = scheme
        self.parse = parse
        self.makeSink = makeSink
    }
}

/// The stores by URL scheme.
public enum StoreRegistry {
    /// The built-in stores.
    public static let builtIn: [StoreKind] = [
        StoreKind(
            scheme: "sqlite",
            parse: { url in
                guard url.hasPrefix("sqlite:") else { return nil }
                let path = String(url.dropFirst(url.hasPrefix("sqlite://") ? 9 : 7))
                guard !path.isEmpty else { throw SluiceError(.config, "sqlite: URL needs a path (sqlite:events.db)") }
                return Store(scheme: "sqlite", url: url, path: path)
            },
            makeSink: { store, r in
                var o = SQLiteSinkOptions()
                o.changes = r.changes
                return SQLiteSink(path: store.path!, table: r.table, mode: r.mode, options: o)
            }),
        StoreKind(
            scheme: "postgres",
            parse: { url in
                guard url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") else { return nil }
                _ = try PostgresLocation(url: url)
                return Store(scheme: "postgres", url: url)
            },
            makeSink: { store, r in
                var o = PostgresSinkOptions()
                o.changes = r.changes
                if let writers = r.writers {
                    guard writers >= 1 else { throw SluiceError(.config, "writers must be at least 1") }
                    o.writers = writers
                }
                return try PostgresSink(url: store.url, table: r.table, mode: r.mode, options: o, logger: r.spec.logger)
            }),
        StoreKind(
            scheme: "discard",
            parse: { url in url == "discard:" || url == "discard" ? Store(scheme: "discard", url: "discard:") : nil },
            makeSink: { _, _ in DiscardSink() }),
    ]

    /// The kind of `store`.
    static func kind(of store: Store) -> StoreKind { builtIn.first { $0.scheme == store.scheme }! }
}

extension WriteMode {
    /// The mode called `name` with its key, set columns and filter, as the command line and pipeline files
    /// give them.
    /// - Throws: ``SluiceError`` (`.config`) for an unknown mode or a missing key or set.
    public static func parse(
        _ name: String, key: [String], set: [String] = [], filter: String? = nil
    ) throws
        -> WriteMode
    {
        switch name.lowercased() {
        case "append": return .append
        case "replace": return .replace
        case "upsert":
            guard !key.isEmpty else { throw SluiceError(.config, "--mode upsert needs --key COLUMN[,COLUMN]") }
            return .upsert(key: key)
        case "update":
            guard !key.isEmpty else { throw SluiceError(.config, "--mode update needs --key COLUMN[,COLUMN]") }
            guard !set.isEmpty else { throw SluiceError(.config, "--mode update needs --set COLUMN[,COLUMN]") }
            return .update(key: key, set: set, filter: filter)
        default:
            throw SluiceError(.config, "unknown mode '\(name)'; expected append, upsert, update or replace")
        }
    }
}

extension CSVOptions {
    /// The delimiter byte a `--delimiter` or `delimiter:` value names (one ASCII character, or `tab`).
    /// - Throws: ``SluiceError`` (`.config`) for anything else.
    public static func delimiter(_ text: String) throws -> UInt8 {
        if text == "tab" || text == "\\t" { return 9 }
        guard text.utf8.count == 1, let b = text.utf8.first, b != UInt8(ascii: "\""), b != 10, b != 13, b < 128 else {
            throw SluiceError(
                .config, "--delimiter must be one ASCII character other than a quote or newline (got '\(text)')")
        }
        return b
    }
}
