import SluiceCore

/// Decodes CSV records into columns. Immutable; one instance serves every worker.
struct CSVDecoder: RecordDecoder {
    let schema: Schema
    let options: CSVOptions
    /// For each schema field, the CSV column it comes from.
    let columnOfField: [Int]
    /// The number of columns every record must have.
    let width: Int
    let nullTokens: [[UInt8]]?
    let types: [FieldType]
    let nullable: [Bool]

    init(schema: Schema, options: CSVOptions, columnOfField: [Int], width: Int) {
        self.schema = schema
        self.options = options
        self.columnOfField = columnOfField
        self.width = width
        self.nullTokens = options.nullTokens.map { $0.map { Array($0.utf8) } }
        types = schema.fields.map(\.type)
        nullable = schema.fields.map(\.nullable)
    }

    func decode(
        _ chunk: UnsafeRawBufferPointer, from start: Int, line: Int, into builder: RecordBatchBuilder,
        maxRows: Int, maxBytes: Int, rejects: inout [RecordReject]
    ) -> DecodeProgress {
        guard let base = chunk.baseAddress else { return DecodeProgress(end: start, line: line) }
        let p = base.assumingMemoryBound(to: UInt8.self)
        let n = chunk.count
        var i = start
        var line = line
        var visitor = CollectingVisitor(limit: width + 1)
        defer { visitor.release() }
        let dialect = Dialect(options)
        let columns = builder.columns.map { Unmanaged.passUnretained($0) }
        let fieldCount = schema.count
        return withExtendedLifetime(builder.columns) {
            columns.withUnsafeBufferPointer { cols in
                types.withUnsafeBufferPointer { types in
                    nullable.withUnsafeBufferPointer { nullable in
                        columnOfField.withUnsafeBufferPointer { columnOfField in
                            while i < n && builder.count < maxRows {
                                visitor.count = 0
                                let recordStart = i
                                switch CSVGrammar.scanRecord(p, i, n, atEnd: true, dialect, &visitor) {
                                case .incomplete, .empty:
                                    return DecodeProgress(end: n, line: line)
                                case .malformed(let reason, let recover, let lines, _):
                                    rejects.append(
                                        RecordReject(
                                            relativeLine: line, relativeOffset: recordStart,
                                            raw: Array(chunk[recordStart..<recover]), reason: reason))
                                    i = recover
                                    line += lines
                                    continue
                                case .complete(let end, let lines):
                                    i = end
                                    defer { line += lines }
                                    if visitor.count != width {
                                        // A blank line is not a record.
                                        if visitor.count == 1 && width > 1
                                            && visitor.fields[0].start == visitor.fields[0].end
                                            && !visitor.fields[0].quoted
                                        {
                                            continue
                                        }
                                        let found = visitor.count > width ? "more than \(width)" : String(visitor.count)
                                        rejects.append(
                                            RecordReject(
                                                relativeLine: line, relativeOffset: recordStart,
                                                raw: trimmedRecord(chunk, recordStart, end),
                                                reason: "expected \(width) fields, found \(found)"))
                                        continue
                                    }
                                    var failed = -1
                                    for f in 0..<fieldCount {
                                        let slice = visitor.fields[columnOfField[f]]
                                        let ok = cols[f]._withUnsafeGuaranteedRef {
                                            Self.append(
                                                slice, p, to: $0, type: types[f], nullable: nullable[f],
                                                nullTokens: nullTokens)
                                        }
                                        if !ok {
                                            failed = f
                                            break
                                        }
                                    }
                                    if failed >= 0 {
                                        builder.rollbackRow()
                                        let slice = visitor.fields[columnOfField[failed]]
                                        rejects.append(
                                            RecordReject(
                                                relativeLine: line, relativeOffset: recordStart,
                                                raw: trimmedRecord(chunk, recordStart, end),
                                                reason: problem(slice, p, field: schema.fields[failed])))
                                    } else {
                                        builder.finishRow(line: UInt32(line), offset: UInt32(recordStart))
                                        if builder.dataBytes >= maxBytes {
                                            return DecodeProgress(end: i, line: line + lines)
                                        }
                                    }
                                }
                            }
                            return DecodeProgress(end: i, line: line)
                        }
                    }
                }
            }
        }
    }

    /// Explains why `slice` does not fit `field` (only called for rejects).
    private func problem(_ s: FieldSlice, _ p: UnsafePointer<UInt8>, field: Field) -> String {
        let fp = p + s.start
        let len = s.end - s.start
        if !s.quoted && isNullToken(fp, len) {
            return "field '\(field.name)' is null but the schema does not allow nulls"
        }
        switch field.type {
        case .string, .bytes, .json:
            let value =
                s.escaped
                ? CSVGrammar.unescape(Array(UnsafeBufferPointer(start: fp, count: len)))
                : Array(UnsafeBufferPointer(start: fp, count: len))
            if field.type != .bytes && !ValueParsing.isValidUTF8(value, value.count) {
                return "field '\(field.name)' is not valid UTF-8"
            }
            return "field '\(field.name)' is not valid JSON"
        default:
            let shown = Bytes.shown(fp, len)
            return Bytes.mismatch(field, fp, len)
                + " (to keep such values, declare the column as text: --schema \(field.name):string; if '\(shown)'"
                + " means a missing value: --null, e.g. --null '' --null '\(shown)')"
        }
    }

    private func isNullToken(_ fp: UnsafePointer<UInt8>, _ len: Int) -> Bool {
        if let tokens = nullTokens {
            return tokens.contains { t in
                t.count == len && t.withUnsafeBufferPointer { Bytes.equal($0.baseAddress!, fp, len) }
            }
        }
        return len == 0
    }

    /// The record's bytes without its line terminator.
    private func trimmedRecord(_ chunk: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> [UInt8] {
        var e = end
        if e > start, chunk[e - 1] == CSVGrammar.lf { e -= 1 }
        if e > start, chunk[e - 1] == CSVGrammar.cr { e -= 1 }
        return Array(chunk[start..<e])
    }

    /// A value of a numeric, boolean or timestamp column that did not parse: null when it is one of the usual
    /// missing-value tokens (``Bytes/missingTokens``: `NA`, `NULL`, `\N`, …) and the user gave no null tokens of
    /// their own; otherwise a mismatch (false). Called only when parsing failed, so good values pay nothing.
    private static func missing(
        _ s: FieldSlice, _ fp: UnsafePointer<UInt8>, _ len: Int, _ column: Column, _ nullable: Bool,
        _ nullTokens: [[UInt8]]?
    ) -> Bool {
        guard nullTokens == nil, nullable, !s.quoted, Bytes.isMissingToken(fp, len) else { return false }
        column.appendNull()
        return true
    }

    /// Appends one field's value; false when it does not fit the field (the caller explains why).
    @inline(__always)
    private static func append(
        _ s: FieldSlice, _ p: UnsafePointer<UInt8>, to column: Column, type: FieldType, nullable: Bool,
        nullTokens: [[UInt8]]?
    ) -> Bool {
        let fp = p + s.start
        let len = s.end - s.start
        if !s.quoted {
            let isNull: Bool
            if let tokens = nullTokens {
                isNull = tokens.contains { t in
                    t.count == len && t.withUnsafeBufferPointer { Bytes.equal($0.baseAddress!, fp, len) }
                }
            } else {
                isNull = len == 0
            }
            if isNull {
                if !nullable { return false }
                column.appendNull()
                return true
            }
        }
        switch type {
        case .int64:
            guard let v = ValueParsing.parseInt64(fp, len) else {
                return missing(s, fp, len, column, nullable, nullTokens)
            }
            column.append(int64: v)
        case .float64:
            guard let v = ValueParsing.parseDouble(fp, len) else {
                return missing(s, fp, len, column, nullable, nullTokens)
            }
            column.append(double: v)
        case .bool:
            guard let v = ValueParsing.parseBool(fp, len) else {
                return missing(s, fp, len, column, nullable, nullTokens)
            }
            column.append(bool: v)
        case .timestamp:
            guard let v = Timestamp.parse(fp, len) else { return missing(s, fp, len, column, nullable, nullTokens) }
            column.append(int64: v)
        case .string, .json, .bytes:
            let out = column.beginBytes(reserving: len)
            var o = len
            if s.escaped {
                var k = 0
                o = 0
                while k < len {
                    out[o] = fp[k]
                    o += 1
                    if fp[k] == CSVGrammar.quote && k + 1 < len && fp[k + 1] == CSVGrammar.quote { k += 1 }
                    k += 1
                }
            } else {
                out.update(from: fp, count: len)
            }
            // Validate the value as stored (after unescaping); a failure is rolled back by the caller.
            column.endBytes(length: o)
            if type != .bytes && !ValueParsing.isValidUTF8(out, o) { return false }
            if type == .json && JSONSyntax.validate(out, o) == nil { return false }
        }
        return true
    }

}
