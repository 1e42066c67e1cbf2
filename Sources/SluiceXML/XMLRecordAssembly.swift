import Crypto
import SluiceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// Turning a captured record into rows: typed conversion, child rows with their positions and links, JSON
// list columns, and the canonical encoding behind the content hash.
extension RecordState {

    /// The decoded bytes of a slot (trimmed when it says so): a pointer into the input or into `scratch` (valid until `scratch`
    /// grows).
    @inline(__always)
    mutating func value(_ s: Slot) -> (UnsafePointer<UInt8>, Int) {
        switch s.kind {
        case .none:
            return (base, 0)
        case .literal, .span:
            var span = XMLSpan(start: s.start, end: s.end)
            if s.trim { span = XMLText.trimmed(base, span) }
            if s.kind == .literal || !s.refs { return (base + span.start, span.count) }
            let at = scratch.reserve(span.count)
            let n = XMLText.decode(base, span.start, span.end, into: at)
            return (UnsafePointer(at), n)
        case .scratch:
            if s.list { return listValue(s) }
            var span = XMLSpan(start: s.start, end: s.end)
            if s.trim { span = XMLText.trimmed(scratch.base, span) }
            return (UnsafePointer(scratch.base + span.start), span.count)
        }
    }

    /// A list slot's items as a JSON array of strings (in `listOut`, valid until the next list is read).
    mutating func listValue(_ s: Slot) -> (UnsafePointer<UInt8>, Int) {
        listOut.count = 0
        listOut.append(UInt8(ascii: "["))
        var k = s.start
        while k + 4 <= s.end {
            let n = Int(UInt32(littleEndian: UnsafeRawPointer(scratch.base + k).loadUnaligned(as: UInt32.self)))
            if k > s.start { listOut.append(UInt8(ascii: ",")) }
            listOut.appendJSONString(scratch.base + k + 4, n)
            k += 4 + n
        }
        listOut.append(UInt8(ascii: "]"))
        return (UnsafePointer(listOut.base), listOut.count)
    }

    /// Appends a slot's value to `column` as `type`, and to the canonical encoding. Returns why it does not
    /// convert, if it does not.
    mutating func append(_ s: Slot, type: FieldType, to column: Unmanaged<Column>) -> String? {
        if s.kind == .none {
            column._withUnsafeGuaranteedRef { $0.appendNull() }
            canonical.append(0)
            return nil
        }
        let (p, n) = value(s)
        if type == .string || type == .bytes {
            column._withUnsafeGuaranteedRef { $0.append(bytes: UnsafeRawBufferPointer(start: p, count: n)) }
            canonical.append(4)
            canonical.append(integer: UInt32(truncatingIfNeeded: n))
            canonical.append(p, n)
            return nil
        }
        if n == 0 {
            column._withUnsafeGuaranteedRef { $0.appendNull() }
            canonical.append(0)
            return nil
        }
        switch type {
        case .int64, .timestamp:
            let parsed = type == .int64 ? ValueParsing.parseInt64(p, n) : Timestamp.parse(p, n)
            guard let v = parsed else { return Self.notA(type == .int64 ? "an integer" : "a timestamp", p, n) }
            column._withUnsafeGuaranteedRef { $0.append(int64: v) }
            canonical.append(1)
            canonical.append(integer: v)
        case .float64:
            guard let v = ValueParsing.parseDouble(p, n) else { return Self.notA("a number", p, n) }
            column._withUnsafeGuaranteedRef { $0.append(double: v) }
            canonical.append(2)
            canonical.append(integer: v.bitPattern)
        case .bool:
            guard let v = ValueParsing.parseBool(p, n) else { return Self.notA("true or false", p, n) }
            column._withUnsafeGuaranteedRef { $0.append(bool: v) }
            canonical.append(3)
            canonical.append(v ? 1 : 0)
        case .json, .string, .bytes:
            if type == .json && JSONSyntax.validate(p, n) == nil { return Self.notA("JSON", p, n) }
            column._withUnsafeGuaranteedRef { $0.append(bytes: UnsafeRawBufferPointer(start: p, count: n)) }
            canonical.append(4)
            canonical.append(integer: UInt32(truncatingIfNeeded: n))
            canonical.append(p, n)
        }
        return nil
    }

    /// Appends the record's parent values, child rows and hash to the bound builder (without finishing the
    /// parent row). Returns a reason when a value does not convert to its column's type.
    ///
    /// **`content_hash` (persisted; pinned by `PersistedHashTests`)** is SHA-256 over this canonical
    /// encoding, integers little-endian:
    /// 1. each parent field in mapping order (the hash and source-hash columns excluded): absent or empty
    ///    non-text → `0x00`; int64 and timestamp → `0x01` + 8-byte value; float64 → `0x02` + 8-byte IEEE 754
    ///    bit pattern; bool → `0x03` + one byte 0/1; string, bytes and json → `0x04` + 4-byte length + bytes;
    /// 2. each child table in mapping order (JSON list columns excluded): for each row in document order,
    ///    `0x01` + 8-byte position (1-based), then its fields encoded as in 1; then `0x09` + 4-byte row count;
    /// 3. each JSON list column in mapping order: `0x04` + 4-byte length + its JSON text.
    /// Attribute order and whitespace between elements never reach the encoding; values and list order do.
    /// `source_hash` is ``SourceHash`` over the record's raw bytes, seeded with the mapping's fingerprint.
    mutating func flush(parentRow: Int) -> String? {
        let t = tables
        canonical.count = 0
        let mark = scratch.count
        defer { scratch.count = mark }
        for k in 0..<t.parentCount {
            if let problem = append(slots[k], type: t.parentTypes[k], to: columns[k]) {
                return "field '\(compiled.mapping.fields[k].name)': \(problem)"
            }
        }
        // Child rows, table by table, in document order.
        for (ti, cb) in childBuilders.enumerated() {
            let cols = columns + childColumnStart[ti]
            var position: Int64 = 0
            for r in 0..<rows.count where Int(t.childTable[rows[r].table]) == ti {
                let (table, first) = (rows[r].table, rows[r].first)
                position += 1
                cols[1]._withUnsafeGuaranteedRef { $0.append(int64: position) }
                canonical.append(1)
                canonical.append(integer: position)
                let types = t.childTypes + Int(t.childTypeStart[table])
                for k in 0..<Int(t.childFields[table]) {
                    if let problem = append(rowSlots[first + k], type: types[k], to: cols[k + 2]) {
                        let m = compiled.children[table].mapping
                        return "\(m.table).\(m.fields[k].name): \(problem)"
                    }
                }
                // The link column is filled below, once the key is known.
                cb._withUnsafeGuaranteedRef { $0.finishRow(parent: parentRow) }
            }
            canonical.append(9)
            canonical.append(integer: UInt32(truncatingIfNeeded: position))
        }
        // Link child rows to the key.
        if !childBuilders.isEmpty {
            guard let kf = compiled.keyField else { return "the record has no key" }
            let key = columns[kf]
            let missing = key._withUnsafeGuaranteedRef { $0.isNull(parentRow) }
            if missing { return "the record has no key (\(compiled.mapping.key ?? "id"))" }
            for (ti, cb) in childBuilders.enumerated() {
                let link = columns[childColumnStart[ti]]
                let rowsNow = cb._withUnsafeGuaranteedRef { $0.count }
                key._withUnsafeGuaranteedRef { k in
                    link._withUnsafeGuaranteedRef { l in
                        while l.count < rowsNow { l.append(from: k, at: parentRow) }
                    }
                }
            }
        }
        // JSON list columns.
        for (table, child) in compiled.children.enumerated() where child.jsonColumn != nil {
            json.count = 0
            json.append(UInt8(ascii: "["))
            var firstRow = true
            for r in 0..<rows.count where rows[r].table == table {
                let first = rows[r].first
                if !firstRow { json.append(UInt8(ascii: ",")) }
                firstRow = false
                if child.scalarList {
                    appendJSONValue(rowSlots[first], type: child.types[0])
                } else {
                    json.append(UInt8(ascii: "{"))
                    for (k, f) in child.mapping.fields.enumerated() {
                        if k > 0 { json.append(UInt8(ascii: ",")) }
                        var name = f.name
                        name.withUTF8 { json.appendJSONString($0.baseAddress!, $0.count) }
                        json.append(UInt8(ascii: ":"))
                        appendJSONValue(rowSlots[first + k], type: child.types[k])
                    }
                    json.append(UInt8(ascii: "}"))
                }
            }
            json.append(UInt8(ascii: "]"))
            let bytes = UnsafeRawBufferPointer(start: json.base, count: json.count)
            columns[child.jsonColumn!]._withUnsafeGuaranteedRef { $0.append(bytes: bytes) }
            canonical.append(4)
            canonical.append(integer: UInt32(truncatingIfNeeded: json.count))
            canonical.append(json.base, json.count)
        }
        if let h = compiled.hashColumn {
            let digest = SHA256.hash(data: UnsafeRawBufferPointer(start: canonical.base, count: canonical.count))
            digest.withUnsafeBytes { d in columns[h]._withUnsafeGuaranteedRef { $0.append(bytes: d) } }
        }
        return nil
    }

    static func notA(_ what: String, _ p: UnsafePointer<UInt8>, _ n: Int) -> String {
        let text = String(decoding: UnsafeBufferPointer(start: p, count: min(n, 60)), as: UTF8.self)
        return "'\(text)' is not \(what)"
    }

    mutating func appendJSONValue(_ s: Slot, type: FieldType) {
        if s.kind == .none {
            json.append("null")
            return
        }
        let (p, n) = value(s)
        if s.list {
            json.append(p, n)
        } else if (type == .int64 || type == .float64) && n > 0 && JSONSyntax.validate(p, n) != nil
            && (type == .float64 || ValueParsing.parseInt64(p, n) != nil)
        {
            json.append(p, n)
        } else {
            json.appendJSONString(p, n)
        }
    }
}
