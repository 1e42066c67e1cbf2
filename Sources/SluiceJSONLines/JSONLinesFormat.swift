import SluiceCore

/// The JSON Lines ``RecordFormat``: one JSON object per line.
///
/// - Keys map to schema fields by name; keys not in the schema are ignored; a missing key is null.
/// - Nested objects and arrays are kept as JSON text (in `json` or `string` fields).
/// - `\u` escapes, including surrogate pairs, are decoded; lone surrogates reject the record.
/// - Integers beyond 64 bits reject the record for `int64` fields, and are kept exactly as text in
///   `string` and `json` fields (and rounded in `float64` fields).
/// - **Duplicate keys**: a record naming the same schema field twice is rejected (which value was meant is
///   ambiguous); duplicates of ignored keys are not checked.
/// - A line that is not a JSON object, or is malformed, is rejected with its line number; blank lines are skipped.
public struct JSONLinesFormat: RecordFormat {
    /// Lines read to infer a schema. Default: 1,000.
    public var inferenceSampleRecords: Int

    /// Creates the format.
    public init(inferenceSampleRecords: Int = 1_000) { self.inferenceSampleRecords = inferenceSampleRecords }

    /// `jsonl`.
    public var name: String { "jsonl" }

    /// Skips a UTF-8 byte-order mark; JSON Lines has no header.
    public func preamble(_ head: UnsafeRawBufferPointer, atEOF: Bool, file: String) throws -> Preamble? {
        if head.count >= 3, head[0] == 0xEF, head[1] == 0xBB, head[2] == 0xBF {
            return Preamble(length: 3, lines: 0, header: nil)
        }
        if head.count < 3 && !atEOF { return nil }
        return Preamble(length: 0, lines: 0, header: nil)
    }

    /// Infers a schema from the keys and value kinds of the first lines, in first-seen key order.
    public func inferSchema(sample: UnsafeRawBufferPointer, header: [String]?) throws -> Schema {
        var inference = SchemaInference()
        guard let base = sample.baseAddress else { return inference.schema }
        let p = base.assumingMemoryBound(to: UInt8.self)
        let n = sample.count
        var i = 0
        var records = 0
        while i < n && records < inferenceSampleRecords {
            var e = i
            while e < n && p[e] != 0x0A { e += 1 }
            defer { i = e + 1 }
            var j = JSONSyntax.skipWhitespace(p, i, e)
            guard j < e, p[j] == UInt8(ascii: "{"), JSONSyntax.validate(p + i, e - i) != nil else { continue }
            records += 1
            j = JSONSyntax.skipWhitespace(p, j + 1, e)
            while j < e && p[j] == UInt8(ascii: "\"") {
                guard let ke = JSONSyntax.skipString(p, j, e) else { break }
                let key = JSONStrings.decode(p, j + 1, ke - 1) ?? ""
                j = JSONSyntax.skipWhitespace(p, ke, e) + 1
                j = JSONSyntax.skipWhitespace(p, j, e)
                guard let ve = JSONSyntax.skipValue(p, j, e, depth: 0) else { break }
                let kind: SchemaInference.JSONKind
                switch p[j] {
                case UInt8(ascii: "n"): kind = .null
                case UInt8(ascii: "t"), UInt8(ascii: "f"): kind = .bool
                case UInt8(ascii: "{"), UInt8(ascii: "["): kind = .nested
                case UInt8(ascii: "\""):
                    let len = ve - j - 2
                    kind = .string(
                        looksLikeTimestamp: len >= 10 && p[j + 5] == UInt8(ascii: "-")
                            && Timestamp.parseISO8601(p + j + 1, len) != nil)
                default:
                    if let v = ValueParsing.parseInt64(p + j, ve - j) {
                        inference.observe(integer: v, for: key)
                        kind = .integer
                    } else {
                        kind = .float
                    }
                }
                if case .integer = kind {} else { inference.observe(json: kind, for: key) }
                j = JSONSyntax.skipWhitespace(p, ve, e)
                if j < e && p[j] == UInt8(ascii: ",") { j = JSONSyntax.skipWhitespace(p, j + 1, e) }
            }
        }
        return inference.schema
    }

    /// Frames at line feeds.
    public func makeFramer() -> any RecordFramer { LineFramer() }

    /// A decoder for `schema`.
    public func makeDecoder(schema: Schema, header: [String]?, file: String) throws -> any RecordDecoder {
        JSONLinesDecoder(schema: schema)
    }
}

/// Frames records that end at line feeds.
public struct LineFramer: RecordFramer {
    /// Creates a framer.
    public init() {}

    /// The length up to and including the last line feed (everything at end of input).
    public mutating func completeLength(of buffer: UnsafeRawBufferPointer, atEOF: Bool) -> Int {
        if atEOF { return buffer.count }
        guard let base = buffer.baseAddress else { return 0 }
        let p = base.assumingMemoryBound(to: UInt8.self)
        var i = buffer.count
        while i > 0 {
            if p[i - 1] == 0x0A { return i }
            i -= 1
        }
        return 0
    }
}

/// Decodes JSON string contents.
enum JSONStrings {
    /// Decodes the contents of a JSON string (between the quotes) into `out`; returns the byte count or nil
    /// on a bad escape or lone surrogate. `out` needs room for `end - start` bytes.
    @inline(__always)
    static func unescape(
        _ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, into out: UnsafeMutablePointer<UInt8>
    )
        -> Int?
    {
        var i = start
        var o = 0
        while i < end {
            let c = p[i]
            if c != UInt8(ascii: "\\") {
                out[o] = c
                o += 1
                i += 1
                continue
            }
            let e = p[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "n"): out[o] = 0x0A
            case UInt8(ascii: "t"): out[o] = 0x09
            case UInt8(ascii: "r"): out[o] = 0x0D
            case UInt8(ascii: "b"): out[o] = 0x08
            case UInt8(ascii: "f"): out[o] = 0x0C
            case UInt8(ascii: "u"):
                guard var cp = hex4(p, i, end) else { return nil }
                i += 4
                if cp >= 0xD800 && cp <= 0xDBFF {
                    guard i + 6 <= end, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u"),
                        let lo = hex4(p, i + 2, end), lo >= 0xDC00 && lo <= 0xDFFF
                    else { return nil }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                    i += 6
                } else if cp >= 0xDC00 && cp <= 0xDFFF {
                    return nil
                }
                if cp < 0x80 {
                    out[o] = UInt8(cp)
                } else if cp < 0x800 {
                    out[o] = UInt8(0xC0 | (cp >> 6))
                    out[o + 1] = UInt8(0x80 | (cp & 0x3F))
                    o += 1
                } else if cp < 0x10000 {
                    out[o] = UInt8(0xE0 | (cp >> 12))
                    out[o + 1] = UInt8(0x80 | ((cp >> 6) & 0x3F))
                    out[o + 2] = UInt8(0x80 | (cp & 0x3F))
                    o += 2
                } else {
                    out[o] = UInt8(0xF0 | (cp >> 18))
                    out[o + 1] = UInt8(0x80 | ((cp >> 12) & 0x3F))
                    out[o + 2] = UInt8(0x80 | ((cp >> 6) & 0x3F))
                    out[o + 3] = UInt8(0x80 | (cp & 0x3F))
                    o += 3
                }
            default: out[o] = e  // \" \\ \/
            }
            o += 1
        }
        return o
    }

    @inline(__always)
    static func hex4(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int) -> UInt32? {
        guard i + 4 <= end, let a = JSONSyntax.hexValue(p[i]), let b = JSONSyntax.hexValue(p[i + 1]),
            let c = JSONSyntax.hexValue(p[i + 2]), let d = JSONSyntax.hexValue(p[i + 3])
        else { return nil }
        return a << 12 | b << 8 | c << 4 | d
    }

    /// Decodes a string's contents into a Swift `String`.
    static func decode(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> String? {
        let buf = UnsafeMutablePointer<UInt8>.allocate(capacity: max(end - start, 1))
        defer { buf.deallocate() }
        guard let n = unescape(p, start, end, into: buf) else { return nil }
        return String(decoding: UnsafeBufferPointer(start: buf, count: n), as: UTF8.self)
    }
}
