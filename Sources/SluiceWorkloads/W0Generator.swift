import CZlib
import Foundation
import SluiceCore
import SluiceRuntime

/// A small, fast, deterministic pseudo-random generator (SplitMix64).
public struct SplitMix64: Sendable {
    private var state: UInt64
    /// Seeds the generator.
    public init(seed: UInt64) { state = seed }
    /// The next 64 random bits.
    @inline(__always)
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A number in `0..<n`.
    @inline(__always)
    public mutating func below(_ n: UInt64) -> UInt64 { next() % n }
}

/// The W0 flat-file workload: `id int64, name text(12–20), ts timestamp, value float64, tags text (0–3
/// comma-separated words)`, generated deterministically from a seed, streamed to a file (optionally gzip)
/// in constant memory.
public struct W0Generator: Sendable {
    /// Output formats.
    public enum Format: String, Sendable, CaseIterable {
        /// CSV with a header; tags quoted when they hold commas.
        case csv
        /// JSON Lines.
        case jsonl
    }

    /// The schema of the rows.
    public static let schema = Schema([
        Field("id", .int64), Field("name", .string), Field("ts", .timestamp), Field("value", .float64),
        Field("tags", .string),
    ])

    /// The `--schema` text of ``schema``.
    public static let schemaSpec = "id:int64,name:string,ts:timestamp,value:float64,tags:string"

    static let words: [[UInt8]] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
        "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
        "xray", "yankee", "zulu", "red", "green", "blue", "urgent",
    ].map { Array($0.utf8) }

    /// Rows to generate.
    public var rows: Int
    /// The seed. Default: 42.
    public var seed: UInt64 = 42
    /// The first id. Default: 1.
    public var firstID: Int64 = 1

    /// Creates a generator of `rows` rows.
    public init(rows: Int, seed: UInt64 = 42, firstID: Int64 = 1) {
        self.rows = rows
        self.seed = seed
        self.firstID = firstID
    }

    /// One generated row's values.
    public struct Row {
        /// The id.
        public var id: Int64
        /// 12–20 lowercase letters.
        public var name: (UnsafeMutablePointer<UInt8>, Int)
        /// Microseconds since the epoch.
        public var ts: Int64
        /// Cents as a value with two decimals.
        public var cents: Int64
        /// Indices of 0–3 words.
        public var tags: (Int, Int, Int, Int)
    }

    /// Calls `body` with each row in order. The name buffer is reused between rows.
    public func forEachRow(_ body: (Row) throws -> Void) rethrows {
        var rng = SplitMix64(seed: seed)
        let name = UnsafeMutablePointer<UInt8>.allocate(capacity: 32)
        defer { name.deallocate() }
        let base: Int64 = 1_704_067_200_000_000  // 2024-01-01T00:00:00Z
        for i in 0..<rows {
            let r = rng.next()
            let len = 12 + Int(r % 9)
            var bits = rng.next()
            for k in 0..<len {
                if k % 12 == 0 && k > 0 { bits = rng.next() }
                name[k] = UInt8(97 + bits % 26)
                bits /= 26
            }
            let ts = base + Int64(i) * 1_000_000 + Int64(rng.below(1_000_000))
            let cents = Int64(rng.below(100_000_000)) - 50_000_000
            let t = rng.next()
            let nt = Int(t % 4)
            let w = Self.words.count
            try body(
                Row(
                    id: firstID + Int64(i), name: (name, len), ts: ts, cents: cents,
                    tags: (nt, Int((t >> 8) % UInt64(w)), Int((t >> 20) % UInt64(w)), Int((t >> 32) % UInt64(w)))))
        }
    }

    /// Writes the rows to `path` in `format`, gzip-compressed (at `gzipLevel`, default 6) when `gzip` is true.
    public func write(to path: String, format: Format, gzip: Bool = false, gzipLevel: Int32 = 6) throws {
        let out = try ByteSink(path: path, gzip: gzip, level: gzipLevel)
        var buf: [UInt8] = []
        buf.reserveCapacity(1 << 20)
        if format == .csv { buf.append(contentsOf: Array("id,name,ts,value,tags\n".utf8)) }
        var tsBuf = [UInt8](repeating: 0, count: 32)
        try forEachRow { row in
            let quoteTags = format == .jsonl || row.tags.0 > 1
            if format == .jsonl {
                buf.append(contentsOf: Array("{\"id\":".utf8))
                appendInt(row.id, to: &buf)
                buf.append(contentsOf: Array(",\"name\":\"".utf8))
                buf.append(contentsOf: UnsafeBufferPointer(start: row.name.0, count: row.name.1))
                buf.append(contentsOf: Array("\",\"ts\":\"".utf8))
            } else {
                appendInt(row.id, to: &buf)
                buf.append(UInt8(ascii: ","))
                buf.append(contentsOf: UnsafeBufferPointer(start: row.name.0, count: row.name.1))
                buf.append(UInt8(ascii: ","))
            }
            tsBuf.withUnsafeMutableBufferPointer { Timestamp.format(micros: row.ts, into: $0.baseAddress!) }
            buf.append(contentsOf: tsBuf[0..<Timestamp.formattedLength])
            buf.append(contentsOf: format == .jsonl ? Array("\",\"value\":".utf8) : [UInt8(ascii: ",")])
            appendCents(row.cents, to: &buf)
            buf.append(contentsOf: format == .jsonl ? Array(",\"tags\":".utf8) : [UInt8(ascii: ",")])
            if quoteTags { buf.append(UInt8(ascii: "\"")) }
            let picks = [row.tags.1, row.tags.2, row.tags.3]
            for k in 0..<row.tags.0 {
                if k > 0 { buf.append(UInt8(ascii: ",")) }
                buf.append(contentsOf: Self.words[picks[k]])
            }
            if quoteTags { buf.append(UInt8(ascii: "\"")) }
            buf.append(contentsOf: format == .jsonl ? Array("}\n".utf8) : [UInt8(ascii: "\n")])
            if buf.count >= 1 << 20 {
                try out.write(buf)
                buf.removeAll(keepingCapacity: true)
            }
        }
        try out.write(buf)
        try out.close()
    }

    @inline(__always)
    func appendInt(_ v: Int64, to buf: inout [UInt8]) {
        if v < 0 { buf.append(UInt8(ascii: "-")) }
        var x = v.magnitude
        var tmp:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &tmp) { t in
            repeat {
                t[n] = UInt8(48 + x % 10)
                x /= 10
                n += 1
            } while x > 0
            for k in stride(from: n - 1, through: 0, by: -1) { buf.append(t[k]) }
        }
    }

    @inline(__always)
    func appendCents(_ c: Int64, to buf: inout [UInt8]) {
        if c < 0 { buf.append(UInt8(ascii: "-")) }
        let m = c.magnitude
        appendInt(Int64(m / 100), to: &buf)
        buf.append(UInt8(ascii: "."))
        buf.append(UInt8(48 + (m / 10) % 10))
        buf.append(UInt8(48 + m % 10))
    }
}

/// Writes bytes to a file, optionally through gzip (zlib).
public final class ByteSink {
    private let handle: FileHandle
    private let gzip: Bool
    private var stream = z_stream()
    private var out: [UInt8]

    /// Creates (truncating) `path`; `level` is the zlib compression level (1 fastest … 9 smallest).
    public init(path: String, gzip: Bool, level: Int32 = 6) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path)
        else {
            throw SluiceError(.io, "cannot create \(path)")
        }
        handle = h
        self.gzip = gzip
        out = [UInt8](repeating: 0, count: 1 << 18)
        if gzip {
            guard sluice_deflate_init2(&stream, level, 15 + 16) == Z_OK else {
                throw SluiceError(.io, "zlib init failed")
            }
        }
    }

    /// Appends bytes.
    public func write(_ bytes: [UInt8]) throws {
        if !gzip {
            try handle.write(contentsOf: bytes)
            return
        }
        try bytes.withUnsafeBufferPointer { b in try deflateChunk(b, flush: Z_NO_FLUSH) }
    }

    private func deflateChunk(_ b: UnsafeBufferPointer<UInt8>, flush: Int32) throws {
        stream.next_in = UnsafeMutablePointer(mutating: b.baseAddress)
        stream.avail_in = UInt32(b.count)
        repeat {
            let produced: Int = out.withUnsafeMutableBufferPointer { o in
                stream.next_out = o.baseAddress
                stream.avail_out = UInt32(o.count)
                deflate(&stream, flush)
                return o.count - Int(stream.avail_out)
            }
            if produced > 0 { try handle.write(contentsOf: out[0..<produced]) }
        } while stream.avail_out == 0 || (flush == Z_FINISH && stream.avail_in > 0)
    }

    /// Finishes the stream and closes the file.
    public func close() throws {
        if gzip {
            try deflateChunk(UnsafeBufferPointer(start: nil, count: 0), flush: Z_FINISH)
            deflateEnd(&stream)
        }
        try handle.close()
    }
}

/// A source that emits ready-made W0 batches (no parsing): a few distinct batches built up front and
/// re-emitted until `rows` rows went out. It measures the framework's own cost per record.
public final class GeneratorSource: Source, @unchecked Sendable {
    /// Rows to emit.
    public let rows: Int
    /// Progress counters.
    public let progress = SourceProgress()
    private var templates: [RecordBatch] = []
    private var emitted = 0
    private var index = 0

    /// Creates a source emitting `rows` rows.
    public init(rows: Int) { self.rows = rows }

    /// `generator`.
    public var name: String { "generator" }

    /// Builds the template batches.
    public func open(context: SourceContext) throws -> Schema {
        let per = max(1, min(context.maxRows, rows))
        let gen = W0Generator(rows: per * 4)
        var builder = RecordBatchBuilder(schema: W0Generator.schema, rowCapacity: per)
        gen.forEachRow { row in
            W0Generator.append(row, to: builder)
            if builder.count == per {
                templates.append(builder.build())
                builder = RecordBatchBuilder(schema: W0Generator.schema, rowCapacity: per)
            }
        }
        return W0Generator.schema
    }

    /// The next batch.
    public func next() throws -> SourceItem? {
        guard emitted < rows else { return nil }
        var batch = templates[index % templates.count]
        if emitted + batch.count > rows { batch = batch.slice(0..<(rows - emitted)) }
        index += 1
        emitted += batch.count
        return .batch(batch)
    }
}

extension W0Generator {
    /// Appends `row` to a builder of ``schema`` (no heap allocation per row; no tags is null).
    @inline(__always)
    public static func append(_ row: Row, to builder: RecordBatchBuilder) {
        let c = builder.columns
        c[0].append(int64: row.id)
        c[1].append(bytes: UnsafeRawBufferPointer(start: row.name.0, count: row.name.1))
        c[2].append(int64: row.ts)
        c[3].append(double: Double(row.cents) / 100)
        if row.tags.0 == 0 {
            c[4].appendNull()
        } else {
            let out = c[4].beginBytes(reserving: 3 * 10)
            var n = 0
            for k in 0..<row.tags.0 {
                let pick = k == 0 ? row.tags.1 : k == 1 ? row.tags.2 : row.tags.3
                if k > 0 {
                    out[n] = UInt8(ascii: ",")
                    n += 1
                }
                for b in words[pick] {
                    out[n] = b
                    n += 1
                }
            }
            c[4].endBytes(length: n)
        }
        builder.finishRow()
    }
}
