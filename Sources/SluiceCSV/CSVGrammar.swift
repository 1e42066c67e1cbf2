import SluiceCore

/// Receives field boundaries from ``CSVGrammar/scanRecord(_:_:_:atEnd:_:_:)``.
protocol FieldVisitor {
    mutating func field(start: Int, end: Int, quoted: Bool, escaped: Bool)
}

/// Ignores fields (the framer only needs boundaries).
struct NoVisitor: FieldVisitor {
    /// Gives the visitor storage of its own: an empty struct passed `inout` may get the address of an
    /// unrelated global, which ThreadSanitizer then reports as a race between two readers' framers.
    private var unused: UInt8 = 0
    @inline(__always) mutating func field(start: Int, end: Int, quoted: Bool, escaped: Bool) {}
}

/// One field's place in the buffer.
struct FieldSlice {
    var start: Int
    var end: Int
    var quoted: Bool
    var escaped: Bool
}

/// Collects field boundaries into a buffer allocated once (call ``release()`` when done).
struct CollectingVisitor: FieldVisitor {
    private(set) var fields: UnsafeMutablePointer<FieldSlice>
    private var capacity: Int
    var count = 0
    let limit: Int

    init(limit: Int) {
        self.limit = limit
        capacity = 64
        fields = .allocate(capacity: capacity)
    }

    func release() { fields.deallocate() }

    @inline(__always)
    mutating func field(start: Int, end: Int, quoted: Bool, escaped: Bool) {
        if count >= capacity {
            // Past `limit` fields are only counted (a ragged record is rejected by its count), never stored: the
            // count may exceed the capacity from then on.
            if count >= limit {
                count += 1
                return
            }
            let bigger = UnsafeMutablePointer<FieldSlice>.allocate(capacity: capacity * 2)
            bigger.moveInitialize(from: fields, count: count)
            fields.deallocate()
            fields = bigger
            capacity *= 2
        }
        fields[count] = FieldSlice(start: start, end: end, quoted: quoted, escaped: escaped)
        count += 1
    }
}

/// The result of scanning one record.
enum ScanResult {
    /// A whole record; the next starts at `end`; it spanned `lines` line feeds.
    case complete(end: Int, lines: Int)
    /// The data ends inside the record and more may come.
    case incomplete
    /// No data at all.
    case empty
    /// The record is broken; decoding resumes at `recoverAt` (just past the record's first line). Telling
    /// so took the bytes before `scanned`: a chunk cut before it would find another reason.
    case malformed(reason: String, recoverAt: Int, lines: Int, scanned: Int)
}

/// The scalar settings the grammar needs (kept apart from ``CSVOptions`` so the hot loop copies no arrays).
struct Dialect {
    var delimiter: UInt8
    var maxRecordBytes: Int
    init(_ o: CSVOptions) {
        delimiter = o.delimiter
        maxRecordBytes = o.maxRecordBytes
    }
}

/// The CSV grammar, shared by the framer (no visitor) and the decoder (collecting visitor).
enum CSVGrammar {
    static let quote = UInt8(ascii: "\"")
    static let lf = UInt8(ascii: "\n")
    static let cr = UInt8(ascii: "\r")

    /// Scans the record starting at `start` in `p[0..<n]`.
    @inline(__always)
    static func scanRecord<V: FieldVisitor>(
        _ p: UnsafePointer<UInt8>, _ start: Int, _ n: Int, atEnd: Bool, _ dialect: Dialect, _ visitor: inout V
    ) -> ScanResult {
        let delim = dialect.delimiter
        var i = start
        if i >= n { return atEnd ? .empty : .incomplete }
        var lines = 0
        while true {
            if i >= n {
                // Data ends right after a delimiter: a last empty field.
                if !atEnd { return .incomplete }
                visitor.field(start: i, end: i, quoted: false, escaped: false)
                return .complete(end: n, lines: lines)
            }
            if p[i] == quote {
                let fs = i + 1
                var j = fs
                var escaped = false
                let limit = min(n, start + dialect.maxRecordBytes)
                while true {
                    while j < limit && p[j] != quote {
                        if p[j] == lf { lines += 1 }
                        j += 1
                    }
                    if j >= limit {
                        if limit < n {
                            return malformed(
                                p, start, n, atEnd: atEnd, "quoted field longer than \(dialect.maxRecordBytes) bytes",
                                scanned: limit + 1)
                        }
                        if atEnd {
                            return malformed(p, start, n, atEnd: atEnd, "unterminated quoted field", scanned: n)
                        }
                        return .incomplete
                    }
                    if j + 1 < n {
                        if p[j + 1] == quote {
                            escaped = true
                            j += 2
                            continue
                        }
                    } else if !atEnd {
                        return .incomplete
                    }
                    break
                }
                visitor.field(start: fs, end: j, quoted: true, escaped: escaped)
                i = j + 1
                if i >= n { return .complete(end: n, lines: lines) }
                let c = p[i]
                if c == delim {
                    i += 1
                    continue
                }
                if c == lf { return .complete(end: i + 1, lines: lines + 1) }
                if c == cr {
                    if i + 1 < n {
                        if p[i + 1] == lf { return .complete(end: i + 2, lines: lines + 1) }
                    } else {
                        return atEnd ? .complete(end: n, lines: lines) : .incomplete
                    }
                }
                return malformed(
                    p, start, n, atEnd: atEnd, "unexpected character after a closing quote",
                    scanned: min(n, i + (c == cr ? 2 : 1)))
            } else {
                let fs = i
                while true {
                    while i < n {
                        let c = p[i]
                        if c == delim || c == lf || c == cr { break }
                        i += 1
                    }
                    if i < n, p[i] == cr {
                        if i + 1 < n {
                            if p[i + 1] != lf {
                                i += 1
                                continue
                            }
                        } else if !atEnd {
                            return .incomplete
                        }
                    }
                    break
                }
                if i >= n {
                    if !atEnd { return .incomplete }
                    visitor.field(start: fs, end: n, quoted: false, escaped: false)
                    return .complete(end: n, lines: lines)
                }
                let c = p[i]
                if c == delim {
                    visitor.field(start: fs, end: i, quoted: false, escaped: false)
                    i += 1
                    continue
                }
                visitor.field(start: fs, end: i, quoted: false, escaped: false)
                if c == lf { return .complete(end: i + 1, lines: lines + 1) }
                // CR: LF follows, or the data ends.
                return i + 1 < n ? .complete(end: i + 2, lines: lines + 1) : .complete(end: n, lines: lines)
            }
        }
    }

    /// The record at `start` is broken: it covers its first line only.
    static func malformed(
        _ p: UnsafePointer<UInt8>, _ start: Int, _ n: Int, atEnd: Bool, _ reason: String, scanned: Int
    )
        -> ScanResult
    {
        var k = start
        while k < n && p[k] != lf { k += 1 }
        if k < n { return .malformed(reason: reason, recoverAt: k + 1, lines: 1, scanned: scanned) }
        return atEnd ? .malformed(reason: reason, recoverAt: n, lines: 0, scanned: scanned) : .incomplete
    }

    /// Replaces doubled quotes by single ones.
    static func unescape(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            out.append(bytes[i])
            if bytes[i] == quote && i + 1 < bytes.count && bytes[i + 1] == quote { i += 1 }
            i += 1
        }
        return out
    }
}
