import SluiceCore

/// Decodes JSON Lines into columns. Immutable; one instance serves every worker.
struct JSONLinesDecoder: RecordDecoder {
    let schema: Schema
    let names: [[UInt8]]

    init(schema: Schema) {
        self.schema = schema
        names = schema.fields.map { Array($0.name.utf8) }
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
        let columns = builder.columns
        var seen = [Bool](repeating: false, count: schema.count)
        while i < n && builder.count < maxRows {
            var e = i
            while e < n && p[e] != 0x0A { e += 1 }
            let next = e < n ? e + 1 : n
            var end = e
            if end > i && p[end - 1] == 0x0D { end -= 1 }
            if JSONSyntax.skipWhitespace(p, i, end) == end {
                i = next
                line += 1
                continue
            }
            for k in 0..<seen.count { seen[k] = false }
            if let reason = parseObject(p, i, end, columns, &seen) {
                builder.rollbackRow()
                rejects.append(
                    RecordReject(relativeLine: line, relativeOffset: i, raw: Array(chunk[i..<end]), reason: reason))
            } else {
                builder.finishRow(line: UInt32(line), offset: UInt32(i))
            }
            i = next
            line += 1
            if builder.dataBytes >= maxBytes { break }
        }
        return DecodeProgress(end: i, line: line)
    }

    @inline(__always)
    private func fieldIndex(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, guess: Int) -> Int? {
        let len = end - start
        if guess < names.count, names[guess].count == len,
            names[guess].withUnsafeBufferPointer({ Bytes.equal($0.baseAddress!, p + start, len) })
        {
            return guess
        }
        for (k, name) in names.enumerated() where name.count == len {
            if name.withUnsafeBufferPointer({ Bytes.equal($0.baseAddress!, p + start, len) }) { return k }
        }
        return nil
    }

    /// Parses one object into the columns; returns a reason on failure (the caller rolls the row back).
    private func parseObject(
        _ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ columns: [Column], _ seen: inout [Bool]
    ) -> String? {
        var j = JSONSyntax.skipWhitespace(p, start, end)
        guard p[j] == UInt8(ascii: "{") else {
            return JSONSyntax.validate(p + start, end - start) == nil ? "malformed JSON" : "not a JSON object"
        }
        j = JSONSyntax.skipWhitespace(p, j + 1, end)
        var guess = 0
        if j < end && p[j] == UInt8(ascii: "}") {
            j += 1
        } else {
            while true {
                guard j < end, p[j] == UInt8(ascii: "\""), let ke = JSONSyntax.skipString(p, j, end) else {
                    return "malformed JSON: expected a key at column \(j - start + 1)"
                }
                var keyIndex: Int?
                if Bytes.contains(p, j + 1, ke - 1, UInt8(ascii: "\\")) {
                    if let key = JSONStrings.decode(p, j + 1, ke - 1) {
                        keyIndex = schema.fields.firstIndex { $0.name == key }
                    }
                } else {
                    keyIndex = fieldIndex(p, j + 1, ke - 1, guess: guess)
                }
                j = JSONSyntax.skipWhitespace(p, ke, end)
                guard j < end, p[j] == UInt8(ascii: ":") else {
                    return "malformed JSON: expected ':' at column \(j - start + 1)"
                }
                j = JSONSyntax.skipWhitespace(p, j + 1, end)
                guard let ve = JSONSyntax.skipValue(p, j, end, depth: 0) else {
                    return "malformed JSON: bad value at column \(j - start + 1)"
                }
                if let k = keyIndex {
                    if seen[k] { return "duplicate key '\(schema.fields[k].name)'" }
                    seen[k] = true
                    if let problem = append(p, j, ve, to: columns[k], field: schema.fields[k]) { return problem }
                    guess = k + 1
                }
                j = JSONSyntax.skipWhitespace(p, ve, end)
                guard j < end else { return "malformed JSON: unterminated object" }
                if p[j] == UInt8(ascii: "}") {
                    j += 1
                    break
                }
                guard p[j] == UInt8(ascii: ",") else {
                    return "malformed JSON: expected ',' or '}' at column \(j - start + 1)"
                }
                j = JSONSyntax.skipWhitespace(p, j + 1, end)
            }
        }
        if JSONSyntax.skipWhitespace(p, j, end) != end {
            return "malformed JSON: text after the object at column \(j - start + 1)"
        }
        for k in 0..<seen.count where !seen[k] {
            if !schema.fields[k].nullable { return "field '\(schema.fields[k].name)' is missing" }
            columns[k].appendNull()
        }
        return nil
    }

    /// Appends the JSON value `p[s..<e]` to a column of `field`'s type.
    @inline(__always)
    private func append(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, to column: Column, field: Field) -> String? {
        let c = p[s]
        if c == UInt8(ascii: "n") {
            if !field.nullable { return "field '\(field.name)' is null but the schema does not allow nulls" }
            column.appendNull()
            return nil
        }
        switch field.type {
        case .json:
            copy(p + s, e - s, to: column)
        case .string, .bytes:
            if c == UInt8(ascii: "\"") {
                let out = column.beginBytes(reserving: e - s)
                guard let len = JSONStrings.unescape(p, s + 1, e - 1, into: out) else {
                    column.endBytes(length: 0)
                    return "field '\(field.name)': bad escape or lone surrogate in string"
                }
                column.endBytes(length: len)
            } else {
                copy(p + s, e - s, to: column)
            }
        case .int64:
            var (vs, ve) = (s, e)
            if c == UInt8(ascii: "\"") { (vs, ve) = (s + 1, e - 1) }
            guard let v = ValueParsing.parseInt64(p + vs, ve - vs) else { return Bytes.mismatch(field, p + s, e - s) }
            column.append(int64: v)
        case .float64:
            var (vs, ve) = (s, e)
            if c == UInt8(ascii: "\"") { (vs, ve) = (s + 1, e - 1) }
            guard let v = ValueParsing.parseDouble(p + vs, ve - vs) else { return Bytes.mismatch(field, p + s, e - s) }
            column.append(double: v)
        case .bool:
            if c == UInt8(ascii: "t") {
                column.append(bool: true)
            } else if c == UInt8(ascii: "f") {
                column.append(bool: false)
            } else {
                return Bytes.mismatch(field, p + s, e - s)
            }
        case .timestamp:
            var (vs, ve) = (s, e)
            if c == UInt8(ascii: "\"") { (vs, ve) = (s + 1, e - 1) }
            guard let v = Timestamp.parse(p + vs, ve - vs) else { return Bytes.mismatch(field, p + s, e - s) }
            column.append(int64: v)
        }
        return nil
    }

    @inline(__always)
    private func copy(_ p: UnsafePointer<UInt8>, _ n: Int, to column: Column) {
        let out = column.beginBytes(reserving: n)
        out.update(from: p, count: n)
        column.endBytes(length: n)
    }

}
