import Crypto
import SluiceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A value captured while a record is read, before it is converted into its column.
struct Slot {
    enum Kind: UInt8 {
        case none
        /// Raw bytes of the input, references to decode when `refs`.
        case span
        /// CDATA: literal bytes of the input.
        case literal
        /// Already decoded bytes in the scratch buffer.
        case scratch
    }
    var kind = Kind.none
    /// The element ended (or the attribute was read): later text of the same name is ignored.
    var final = false
    var refs = false
    /// Trim surrounding whitespace (element text, not attribute values).
    var trim = true
    var start = 0
    var end = 0
}

/// Decodes record elements of a chunk into parent rows, child-table rows and content hashes.
final class XMLRecordDecoder: RecordDecoder, @unchecked Sendable {
    let compiled: CompiledMapping
    let schema: Schema
    let skimmer: XMLRecordSkimmer
    let file: String

    init(compiled: CompiledMapping, schema: Schema, file: String) {
        self.compiled = compiled
        self.schema = schema
        skimmer = XMLRecordSkimmer(recordName: compiled.mapping.recordName)
        self.file = file
    }

    func decode(
        _ chunk: UnsafeRawBufferPointer, from start: Int, line: Int, into builder: RecordBatchBuilder, maxRows: Int,
        maxBytes: Int, rejects: inout [RecordReject]
    ) -> DecodeProgress {
        guard start < chunk.count, let raw = chunk.baseAddress else { return DecodeProgress(end: start, line: line) }
        var state = RecordState(compiled: compiled, base: raw.assumingMemoryBound(to: UInt8.self), count: chunk.count)
        var scanner = XMLScanner(chunk, from: start, tolerant: compiled.mapping.tolerant)
        let p = state.base
        var lineAt = line
        var linePos = start
        func lineOf(_ offset: Int) -> Int {
            if offset >= linePos {
                lineAt += XMLText.lineFeeds(p, linePos, offset)
            } else {
                lineAt -= XMLText.lineFeeds(p, offset, linePos)
            }
            linePos = offset
            return lineAt
        }
        func column(_ offset: Int) -> Int {
            var i = offset
            while i > 0 && p[i - 1] != 0x0A { i -= 1 }
            return offset - i + 1
        }
        func reject(recordStart: Int, errorAt: Int, reason: String) -> Int {
            // Resume where the skimmer, which recovers as the framer does, sees the record end.
            let boundary = skimmer.scan(chunk, from: recordStart, firstOnly: true)
            let end = boundary.cut > recordStart ? boundary.cut : chunk.count
            let shown = min(end - recordStart, 16 << 10)
            let l = lineOf(errorAt)
            rejects.append(
                RecordReject(
                    relativeLine: l, relativeOffset: errorAt,
                    raw: Array(UnsafeBufferPointer(start: p + recordStart, count: shown)),
                    reason: "column \(column(errorAt)): \(reason)"))
            return end
        }

        while builder.count < maxRows && builder.dataBytes < maxBytes {
            let here = scanner.position
            if here >= chunk.count { break }
            // The container's end tag: the rest is the epilogue.
            if p[here] == UInt8(ascii: "<") && here + 1 < chunk.count && p[here + 1] == UInt8(ascii: "/") {
                scanner.reset(to: chunk.count)
                break
            }
            let event: XMLEvent
            do {
                event = try scanner.next()
            } catch {
                let end = reject(recordStart: here, errorAt: error.offset, reason: error.reason)
                scanner.reset(to: end)
                continue
            }
            switch event {
            case .endOfInput: break
            case .start(let name):
                guard scanner.equals(name, state.compiled.recordName) else {
                    do { try scanner.skipElement() } catch {
                        let end = reject(recordStart: here, errorAt: error.offset, reason: error.reason)
                        scanner.reset(to: end)
                    }
                    continue
                }
                do {
                    try state.read(&scanner, recordStart: here)
                } catch {
                    let end = reject(recordStart: here, errorAt: error.offset, reason: error.reason)
                    scanner.reset(to: end)
                    continue
                }
                if let bad = XMLText.invalidUTF8(p, here, scanner.position) {
                    _ = reject(recordStart: here, errorAt: bad, reason: "invalid UTF-8")
                    continue
                }
                let l = lineOf(here)
                if let problem = state.flush(into: builder) {
                    builder.rollbackRow()
                    _ = reject(recordStart: here, errorAt: here, reason: problem)
                    scanner.reset(to: scanner.position)
                    continue
                }
                builder.finishRow(line: UInt32(truncatingIfNeeded: l), offset: UInt32(truncatingIfNeeded: here))
            default:
                continue
            }
            if case .endOfInput = event { break }
        }
        let end = scanner.position
        return DecodeProgress(end: end, line: lineOf(end))
    }
}

/// The per-call state of a decode: the captured values of the current record and scratch buffers.
struct RecordState {
    let compiled: CompiledMapping
    let tables: MappingTables
    let recordName: UnsafeMutablePointer<UInt8>
    let recordNameLength: Int
    let base: UnsafePointer<UInt8>
    let count: Int
    var slots: [Slot]
    /// Child rows of the current record: (child mapping, first slot in `rowSlots`).
    var rows: [(table: Int, first: Int)] = []
    var rowSlots: [Slot] = []
    var currentRow: [Int]
    var nodes: [Int] = []
    var scratch: [UInt8] = []
    var canonical: [UInt8] = []
    var json: [UInt8] = []

    init(compiled: CompiledMapping, base: UnsafePointer<UInt8>, count: Int) {
        self.compiled = compiled
        tables = compiled.tables
        recordName = tables.recordName
        recordNameLength = compiled.recordName.count
        self.base = base
        self.count = count
        slots = [Slot](repeating: Slot(), count: compiled.parentTypes.count)
        currentRow = [Int](repeating: -1, count: compiled.children.count)
        nodes.reserveCapacity(32)
        rows.reserveCapacity(64)
        rowSlots.reserveCapacity(512)
        scratch.reserveCapacity(4096)
        canonical.reserveCapacity(8192)
    }

    /// Reads the record whose start tag the scanner just returned, up to and including its end tag.
    mutating func read(_ scanner: inout XMLScanner, recordStart: Int) throws(XMLError) {
        for i in slots.indices { slots[i] = Slot() }
        rows.removeAll(keepingCapacity: true)
        rowSlots.removeAll(keepingCapacity: true)
        scratch.removeAll(keepingCapacity: true)
        for i in currentRow.indices { currentRow[i] = -1 }
        nodes.removeAll(keepingCapacity: true)
        nodes.append(0)
        let t = tables
        attributes(of: 0, scanner)
        let depth = scanner.depth - 1
        while true {
            let event = try scanner.next()
            switch event {
            case .start(let name):
                if nodes.count == 1 && name.count == recordNameLength
                    && memcmp(base + name.start, recordName, recordNameLength) == 0
                {
                    throw XMLError(
                        offset: recordStart,
                        reason: "<\(scanner.string(name))> is not closed before the next one starts")
                }
                let node = t.child(of: nodes[nodes.count - 1], base, name.start, name.count)
                if node < 0 {
                    try scanner.skipElement()
                    continue
                }
                nodes.append(node)
                let table = Int(t.rowTable[node])
                if table >= 0 {
                    rows.append((table, rowSlots.count))
                    rowSlots.append(contentsOf: repeatElement(Slot(), count: Int(t.childFields[table])))
                    currentRow[table] = rows.count - 1
                }
                if t.attrCount[node] > 0 { attributes(of: node, scanner) }
            case .end:
                let node = nodes.removeLast()
                let table = Int(t.textTable[node])
                if table != -2 { update(SlotTarget(table: table, column: Int(t.textColumn[node]))) { $0.final = true } }
                if scanner.depth == depth { return }
            case .text(let span):
                let node = nodes[nodes.count - 1]
                let table = Int(t.textTable[node])
                if table != -2 {
                    addText(span, literal: false, to: SlotTarget(table: table, column: Int(t.textColumn[node])))
                }
            case .cdata(let span):
                let node = nodes[nodes.count - 1]
                let table = Int(t.textTable[node])
                if table != -2 {
                    addText(span, literal: true, to: SlotTarget(table: table, column: Int(t.textColumn[node])))
                }
            case .endOfInput:
                throw XMLError(offset: recordStart, reason: "the record is not closed before the input ends")
            case .comment, .processingInstruction, .doctype:
                continue
            }
        }
    }

    private mutating func attributes(of node: Int, _ scanner: XMLScanner) {
        let t = tables
        let first = Int(t.attrStart[node])
        let n = Int(t.attrCount[node])
        if n == 0 { return }
        scanner.attributes.withUnsafeBufferPointer { attrs in
            for a in attrs {
                for k in first..<(first + n) where Int(t.attrLength[k]) == a.name.count {
                    if memcmp(base + a.name.start, t.names + Int(t.attrName[k]), a.name.count) == 0 {
                        update(SlotTarget(table: Int(t.attrTable[k]), column: Int(t.attrColumn[k]))) { s in
                            if s.kind == .none {
                                s = Slot(
                                    kind: .span, final: true, refs: a.value.hasReferences, trim: false,
                                    start: a.value.start, end: a.value.end)
                            }
                        }
                    }
                }
            }
        }
    }

    @inline(__always)
    private mutating func update(_ target: SlotTarget, _ body: (inout Slot) -> Void) {
        if target.table < 0 {
            body(&slots[target.column])
        } else {
            let r = currentRow[target.table]
            guard r >= 0 else { return }
            body(&rowSlots[rows[r].first + target.column])
        }
    }

    private mutating func addText(_ span: XMLSpan, literal: Bool, to target: SlotTarget) {
        var s: Slot
        if target.table < 0 {
            s = slots[target.column]
        } else {
            let r = currentRow[target.table]
            guard r >= 0 else { return }
            s = rowSlots[rows[r].first + target.column]
        }
        if s.final { return }
        switch s.kind {
        case .none:
            s = Slot(
                kind: literal ? .literal : .span, final: false, refs: span.hasReferences, trim: true, start: span.start,
                end: span.end)
        case .span, .literal:
            let first = scratch.count
            appendDecoded(s)
            appendPiece(span, literal: literal)
            s = Slot(kind: .scratch, final: false, refs: false, trim: true, start: first, end: scratch.count)
        case .scratch:
            if s.end != scratch.count {
                let copy = Array(scratch[s.start..<s.end])
                s.start = scratch.count
                scratch.append(contentsOf: copy)
            }
            appendPiece(span, literal: literal)
            s.end = scratch.count
        }
        if target.table < 0 {
            slots[target.column] = s
        } else {
            rowSlots[rows[currentRow[target.table]].first + target.column] = s
        }
    }

    private mutating func appendPiece(_ span: XMLSpan, literal: Bool) {
        appendDecoded(
            Slot(
                kind: literal ? .literal : .span, final: false, refs: span.hasReferences, trim: false,
                start: span.start, end: span.end))
    }

    /// Appends the decoded bytes of a span slot to `scratch`.
    private mutating func appendDecoded(_ s: Slot) {
        let n = s.end - s.start
        let at = scratch.count
        scratch.append(contentsOf: repeatElement(0, count: n))
        let written = scratch.withUnsafeMutableBufferPointer { buf -> Int in
            if s.kind == .span && s.refs {
                return XMLText.decode(base, s.start, s.end, into: buf.baseAddress! + at)
            }
            (buf.baseAddress! + at).update(from: base + s.start, count: n)
            return n
        }
        scratch.removeLast(n - written)
    }

    // MARK: - Output

    /// Appends the record's parent values, child rows and hash to `builder` (without finishing the parent row).
    /// Returns a reason when a value does not convert to its column's type.
    mutating func flush(into builder: RecordBatchBuilder) -> String? {
        let parentRow = builder.count
        let mapping = compiled.mapping
        let parentColumns = builder.columns
        for k in 0..<tables.parentCount {
            if let problem = append(slots[k], type: tables.parentTypes[k], to: parentColumns[k]) {
                return "field '\(mapping.fields[k].name)': \(problem)"
            }
        }
        // Child rows, table by table, in document order.
        let t = tables
        for (ti, cb) in builder.children.enumerated() {
            let cols = cb.columns
            var position: Int64 = 0
            for (table, first) in rows where Int(t.childTable[table]) == ti {
                position += 1
                cols[1].append(int64: position)
                let types = t.childTypes + Int(t.childTypeStart[table])
                for k in 0..<Int(t.childFields[table]) {
                    if let problem = append(rowSlots[first + k], type: types[k], to: cols[k + 2]) {
                        let m = compiled.children[table].mapping
                        return "\(m.table).\(m.fields[k].name): \(problem)"
                    }
                }
                // The link column is filled below, once the key is known.
                cb.finishRow(parent: parentRow)
            }
        }
        // Link child rows to the key.
        if compiled.schema.children.count > 0 {
            guard let kf = compiled.keyField, !builder.columns[kf].isNull(parentRow) else {
                return "the record has no key (\(mapping.key ?? "id"))"
            }
            let key = builder.columns[kf]
            for cb in builder.children {
                let link = cb.columns[0]
                while link.count < cb.count { link.append(from: key, at: parentRow) }
            }
        }
        // JSON list columns.
        for (t, child) in compiled.children.enumerated() where child.jsonColumn != nil {
            json.removeAll(keepingCapacity: true)
            json.append(UInt8(ascii: "["))
            var firstRow = true
            for (table, first) in rows where table == t {
                if !firstRow { json.append(UInt8(ascii: ",")) }
                firstRow = false
                if child.scalarList {
                    appendJSONValue(rowSlots[first], type: child.types[0])
                } else {
                    json.append(UInt8(ascii: "{"))
                    for (k, f) in child.mapping.fields.enumerated() {
                        if k > 0 { json.append(UInt8(ascii: ",")) }
                        JSONText.appendQuoted(f.name, to: &json)
                        json.append(UInt8(ascii: ":"))
                        appendJSONValue(rowSlots[first + k], type: child.types[k])
                    }
                    json.append(UInt8(ascii: "}"))
                }
            }
            json.append(UInt8(ascii: "]"))
            json.withUnsafeBytes { builder.columns[child.jsonColumn!].append(bytes: $0) }
        }
        if let h = compiled.hashColumn {
            canonical.removeAll(keepingCapacity: true)
            for (k, col) in builder.columns.enumerated() where k != h {
                Canonical.append(col, row: parentRow, to: &canonical)
            }
            for cb in builder.children {
                let r = cb.rows(ofParent: parentRow)
                Canonical.appendCount(r.count, to: &canonical)
                for row in r {
                    for col in cb.columns.dropFirst() { Canonical.append(col, row: row, to: &canonical) }
                }
            }
            let digest = canonical.withUnsafeBytes { SHA256.hash(data: $0) }
            digest.withUnsafeBytes { builder.columns[h].append(bytes: $0) }
        }
        return nil
    }

    /// The bytes of a slot's value (decoded, trimmed), handed to `body`.
    private mutating func withValue<R>(_ s: Slot, _ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        switch s.kind {
        case .none:
            return body(base, 0)
        case .literal, .span:
            var span = XMLSpan(start: s.start, end: s.end)
            if s.trim { span = XMLText.trimmed(base, span) }
            if s.kind == .literal || !s.refs { return body(base + span.start, span.count) }
            let at = scratch.count
            scratch.append(contentsOf: repeatElement(0, count: span.count))
            let r = scratch.withUnsafeMutableBufferPointer { buf -> R in
                let n = XMLText.decode(base, span.start, span.end, into: buf.baseAddress! + at)
                return body(buf.baseAddress! + at, n)
            }
            scratch.removeLast(span.count)
            return r
        case .scratch:
            return scratch.withUnsafeBufferPointer { buf -> R in
                var a = s.start
                var b = s.end
                let p = buf.baseAddress!
                if s.trim {
                    while a < b && XMLText.isSpace(p[a]) { a += 1 }
                    while b > a && XMLText.isSpace(p[b - 1]) { b -= 1 }
                }
                return body(p + a, b - a)
            }
        }
    }

    private mutating func append(_ s: Slot, type: FieldType, to column: Column) -> String? {
        if s.kind == .none {
            column.appendNull()
            return nil
        }
        if type == .string || type == .bytes {
            if s.kind == .span && s.refs {
                var span = XMLSpan(start: s.start, end: s.end)
                if s.trim { span = XMLText.trimmed(base, span) }
                let out = column.beginBytes(reserving: span.count)
                column.endBytes(length: XMLText.decode(base, span.start, span.end, into: out))
                return nil
            }
            withValue(s) { p, n in column.append(bytes: UnsafeRawBufferPointer(start: p, count: n)) }
            return nil
        }
        return withValue(s) { p, n -> String? in
            if n == 0 {
                column.appendNull()
                return nil
            }
            switch type {
            case .int64:
                guard let v = ValueParsing.parseInt64(p, n) else { return Self.notA("an integer", p, n) }
                column.append(int64: v)
            case .float64:
                guard let v = ValueParsing.parseDouble(p, n) else { return Self.notA("a number", p, n) }
                column.append(double: v)
            case .bool:
                guard let v = ValueParsing.parseBool(p, n) else { return Self.notA("true or false", p, n) }
                column.append(bool: v)
            case .timestamp:
                guard let v = Timestamp.parse(p, n) else { return Self.notA("a timestamp", p, n) }
                column.append(int64: v)
            case .json:
                guard JSONSyntax.validate(p, n) != nil else { return Self.notA("JSON", p, n) }
                column.append(bytes: UnsafeRawBufferPointer(start: p, count: n))
            case .string, .bytes:
                column.append(bytes: UnsafeRawBufferPointer(start: p, count: n))
            }
            return nil
        }
    }

    private static func notA(_ what: String, _ p: UnsafePointer<UInt8>, _ n: Int) -> String {
        let text = String(decoding: UnsafeBufferPointer(start: p, count: min(n, 60)), as: UTF8.self)
        return "'\(text)' is not \(what)"
    }

    private mutating func appendJSONValue(_ s: Slot, type: FieldType) {
        if s.kind == .none {
            json.append(contentsOf: "null".utf8)
            return
        }
        var out: [UInt8] = []
        swap(&out, &json)
        withValue(s) { p, n in
            let buf = UnsafeBufferPointer(start: p, count: n)
            if (type == .int64 || type == .float64) && n > 0 && JSONSyntax.validate(p, n) != nil
                && (type == .float64 || ValueParsing.parseInt64(p, n) != nil)
            {
                out.append(contentsOf: buf)
            } else {
                JSONText.appendQuoted(buf, to: &out)
            }
        }
        swap(&out, &json)
    }
}

/// The canonical encoding hashed for a record: every value tagged by kind and length-prefixed, so that no
/// two different records encode alike.
enum Canonical {
    @inline(__always)
    static func appendCount(_ n: Int, to out: inout [UInt8]) {
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: n).littleEndian) { out.append(contentsOf: $0) }
    }

    static func append(_ column: Column, row: Int, to out: inout [UInt8]) {
        if column.isNull(row) {
            out.append(0)
            return
        }
        switch column.type {
        case .int64, .timestamp:
            out.append(1)
            withUnsafeBytes(of: column.int64(at: row).littleEndian) { out.append(contentsOf: $0) }
        case .float64:
            out.append(2)
            withUnsafeBytes(of: column.double(at: row).bitPattern.littleEndian) { out.append(contentsOf: $0) }
        case .bool:
            out.append(3)
            out.append(column.bool(at: row) ? 1 : 0)
        case .string, .bytes, .json:
            out.append(4)
            let b = column.bytes(at: row)
            appendCount(b.count, to: &out)
            out.append(contentsOf: b)
        }
    }
}
