import SluiceCore

/// CSV dialect options (RFC 4180 by default).
public struct CSVOptions: Sendable, Hashable {
    /// The field delimiter. Default: `,`.
    public var delimiter: UInt8 = UInt8(ascii: ",")
    /// Whether the first record is a header naming the fields. Default: `true`.
    public var header: Bool = true
    /// Unquoted field values that mean null. Default: `nil`, meaning an unquoted empty field is null
    /// (a quoted empty field `""` is always the empty string).
    public var nullTokens: [String]? = nil
    /// A quoted field longer than this makes its record malformed (bounds look-ahead on a stray quote).
    /// Default: 16 MiB.
    public var maxRecordBytes: Int = 16 << 20
    /// Records read to infer a schema. Default: 1,000.
    public var inferenceSampleRecords: Int = 1_000
    /// A header with an empty or repeated name is an error. Default: `false`: an empty name becomes
    /// `column<N>` (N its 1-based position, as for a file without a header) and a repeated one gets a suffix
    /// (`Name_2`), both listed in the run report.
    public var strictHeader: Bool = false

    /// Creates default options.
    public init() {}
}

/// The CSV ``RecordFormat``: RFC 4180 with a header, quoted fields, doubled quotes, embedded newlines,
/// CRLF, a UTF-8 byte-order mark, configurable delimiter and null tokens.
///
/// A malformed record (unterminated quote, text after a closing quote) is rejected at its own first line
/// and decoding resumes on the next line; a record with the wrong number of fields is rejected; a stray
/// quote inside an unquoted field is kept as text.
public struct CSVFormat: RecordFormat {
    /// The dialect.
    public var options: CSVOptions

    /// Creates the format.
    public init(options: CSVOptions = CSVOptions()) { self.options = options }

    /// `csv`.
    public var name: String { "csv" }

    /// Skips a byte-order mark and reads the header record.
    public func preamble(_ head: UnsafeRawBufferPointer, atEOF: Bool, file: String) throws -> Preamble? {
        let p = head.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(bitPattern: 1)!
        let n = head.count
        var start = 0
        if n >= 3, p[0] == 0xEF, p[1] == 0xBB, p[2] == 0xBF { start = 3 }
        if !atEOF && n < 3 { return nil }
        guard options.header else { return Preamble(length: start, lines: 0, header: nil) }
        var names: [String] = []
        var visitor = CollectingVisitor(limit: 100_000)
        defer { visitor.release() }
        switch CSVGrammar.scanRecord(p, start, n, atEnd: atEOF, Dialect(options), &visitor) {
        case .incomplete:
            return nil
        case .empty:
            // An empty file holds no records; there is no header to check.
            return Preamble(length: start, lines: 0, header: nil)
        case .malformed(let reason, _, _, _):
            throw SluiceError(.format, "malformed header: \(reason)", position: SourcePosition(file: file, line: 1))
        case .complete(let end, let lines):
            for f in 0..<visitor.count {
                let field = visitor.fields[f]
                var bytes = Array(UnsafeBufferPointer(start: p + field.start, count: field.end - field.start))
                if field.escaped { bytes = CSVGrammar.unescape(bytes) }
                guard ValueParsing.isValidUTF8(bytes, bytes.count) else {
                    throw SluiceError(
                        .format, "header field \(f + 1) is not valid UTF-8",
                        position: SourcePosition(file: file, line: 1))
                }
                names.append(String(decoding: bytes, as: UTF8.self).sluiceTrimmed())
            }
            let (header, notes) = try Self.uniqueNames(names, strict: options.strictHeader, file: file)
            return Preamble(length: end, lines: lines, header: header, notes: notes)
        }
    }

    /// The header's names with every empty one named `column<N>` and every repeat suffixed (`Name_2`), never
    /// taking a name the header gives another column; and a note for each change. Strict: the first empty or
    /// repeated name is an error.
    static func uniqueNames(_ names: [String], strict: Bool, file: String) throws -> ([String], [String]) {
        var given = Set(names)
        var used = Set<String>()
        var out: [String] = []
        var notes: [String] = []
        for (f, name) in names.enumerated() {
            if name.isEmpty || used.contains(name) {
                if strict {
                    throw SluiceError(
                        .format,
                        name.isEmpty
                            ? "header field \(f + 1) is empty (without --strict-header it would be named column\(f + 1))"
                            : "header names column '\(name)' twice (without --strict-header the repeat would get a suffix)",
                        position: SourcePosition(file: file, line: 1))
                }
                let base = name.isEmpty ? "column\(f + 1)" : name
                var candidate = name.isEmpty ? base : "\(base)_2"
                var k = name.isEmpty ? 2 : 3
                // Every name taken so far is in `given` (the header's own and those generated).
                while given.contains(candidate) {
                    candidate = "\(base)_\(k)"
                    k += 1
                }
                notes.append(
                    name.isEmpty
                        ? "field \(f + 1) has no name: named \(candidate)"
                        : "field \(f + 1) repeats '\(name)': named \(candidate)")
                given.insert(candidate)
                used.insert(candidate)
                out.append(candidate)
            } else {
                used.insert(name)
                out.append(name)
            }
        }
        return (out, notes)
    }

    /// Infers types from up to ``CSVOptions/inferenceSampleRecords`` records of `sample`.
    public func inferSchema(sample: UnsafeRawBufferPointer, header: [String]?) throws -> Schema {
        let p = sample.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(bitPattern: 1)!
        let n = sample.count
        var inference = header.map { SchemaInference(names: $0) } ?? SchemaInference()
        var i = 0
        var records = 0
        var visitor = CollectingVisitor(limit: 100_000)
        defer { visitor.release() }
        let dialect = Dialect(options)
        let nullTokens = options.nullTokens.map { $0.map { Array($0.utf8) } }
        while i < n, records < options.inferenceSampleRecords {
            visitor.count = 0
            switch CSVGrammar.scanRecord(p, i, n, atEnd: true, dialect, &visitor) {
            case .incomplete, .empty:
                i = n
            case .malformed(_, let recover, _, _):
                i = recover
            case .complete(let end, _):
                i = end
                records += 1
                for f in 0..<visitor.count {
                    let field = visitor.fields[f]
                    let name = header.map { f < $0.count ? $0[f] : "column\(f + 1)" } ?? "column\(f + 1)"
                    let raw = UnsafeRawBufferPointer(start: p + field.start, count: field.end - field.start)
                    let isNull =
                        !field.quoted
                        && (nullTokens.map { $0.contains { $0.elementsEqual(raw) } } ?? (raw.count == 0))
                    // Without null tokens of the user's, `NA`, `NULL`, `\N`… do not make a numeric column text.
                    let isMissing =
                        !field.quoted && nullTokens == nil && raw.count > 0
                        && Bytes.isMissingToken(p + field.start, raw.count)
                    inference.observe(text: isNull ? nil : raw, missing: isMissing, for: name)
                }
            }
        }
        return inference.schema
    }

    /// A framer that follows the same grammar as the decoder.
    public func makeFramer() -> any RecordFramer { CSVFramer(options: options) }

    /// A decoder mapping header columns to `schema` fields by name (by position without a header).
    public func makeDecoder(schema: Schema, header: [String]?, file: String) throws -> any RecordDecoder {
        var mapping: [Int] = []
        let width: Int
        if let header {
            for field in schema.fields {
                guard let i = header.firstIndex(of: field.name) else {
                    throw SluiceError(
                        .config,
                        "the schema's field '\(field.name)' is not a column of the header (\(header.joined(separator: ",")))",
                        position: SourcePosition(file: file, line: 1))
                }
                mapping.append(i)
            }
            width = header.count
        } else {
            mapping = Array(0..<schema.count)
            width = schema.count
        }
        return CSVDecoder(schema: schema, options: options, columnOfField: mapping, width: width)
    }
}

/// Frames CSV records with the decoder's own grammar, so that chunks split exactly where records end.
struct CSVFramer: RecordFramer {
    let options: CSVOptions

    /// Cuts after whole records, never inside the bytes a broken record's reason was read from: a broken
    /// record covers its first line, but telling why may have taken bytes past it, and the decoder must see
    /// them too to give the same reason whatever the chunk size.
    mutating func completeLength(of buffer: UnsafeRawBufferPointer, atEOF: Bool) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        let p = base.assumingMemoryBound(to: UInt8.self)
        let n = buffer.count
        var i = 0
        var cut = 0
        var needed = 0
        var visitor = NoVisitor()
        while i < n {
            switch CSVGrammar.scanRecord(p, i, n, atEnd: atEOF, Dialect(options), &visitor) {
            case .incomplete: return cut
            case .empty: return n
            case .complete(let end, _): i = end
            case .malformed(_, let recover, _, let scanned):
                i = recover
                needed = max(needed, scanned)
            }
            if i >= needed { cut = i }
        }
        return cut
    }
}
