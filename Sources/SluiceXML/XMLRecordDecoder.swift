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
    let stored: StoredBox

    init(compiled: CompiledMapping, schema: Schema, file: String, stored: StoredBox) {
        self.compiled = compiled
        self.schema = schema
        skimmer = XMLRecordSkimmer(recordName: compiled.mapping.recordName)
        self.file = file
        self.stored = stored
    }

    /// The int64 value of the record start tag's attribute `name` (the key), if it is there and plain digits.
    private static func keyAttribute(_ scanner: XMLScanner, _ name: [UInt8], _ p: UnsafePointer<UInt8>) -> Int64? {
        name.withUnsafeBufferPointer { n in
            scanner.withAttributes { attrs -> Int64? in
                for a in attrs where a.name.count == n.count && XMLText.same(p + a.name.start, n.baseAddress!, n.count)
                {
                    if a.value.hasReferences { return nil }
                    return ValueParsing.parseInt64(p + a.value.start, a.value.count)
                }
                return nil
            }
        }
    }

    func decode(
        _ chunk: UnsafeRawBufferPointer, from start: Int, line: Int, into builder: RecordBatchBuilder, maxRows: Int,
        maxBytes: Int, rejects: inout [RecordReject]
    ) -> DecodeProgress {
        guard start < chunk.count, let raw = chunk.baseAddress else { return DecodeProgress(end: start, line: line) }
        var state = RecordState(compiled: compiled, base: raw.assumingMemoryBound(to: UInt8.self), count: chunk.count)
        defer { state.free() }
        state.bind(builder)
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

        let recordName = state.recordName
        let recordNameLength = state.recordNameLength
        // An update run: records whose raw bytes hash to the stored source hash are skipped undecoded.
        let sourceColumn = compiled.sourceHashColumn
        let keyName = compiled.keyAttribute
        let seed = compiled.sourceSeed
        let storedHashes = sourceColumn != nil && keyName != nil ? stored.value.withLock { $0 } : nil
        let chunkPosition = builder.chunkPosition
        while builder.count < maxRows {
            // Summing the columns' sizes walks every column: do it every 64 records, not every record.
            if builder.count & 63 == 63 && builder.dataBytes >= maxBytes { break }
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
                guard name.count == recordNameLength && XMLText.same(p + name.start, recordName, recordNameLength)
                else {
                    do { try scanner.skipElement() } catch {
                        let end = reject(recordStart: here, errorAt: error.offset, reason: error.reason)
                        scanner.reset(to: end)
                    }
                    continue
                }
                // The source hash of the record's bytes, once computed (a changed record is hashed once).
                var hashed: (end: Int, hash: Int64)?
                if let storedHashes, let keyName {
                    let end = skimmer.firstRecordEnd(chunk, from: here)
                    if end > 0, let key = Self.keyAttribute(scanner, keyName, p) {
                        let h = SourceHash.hash(p + here, count: end - here, seed: seed)
                        hashed = (end, h)
                        if storedHashes.claimUnchanged(key: key, hash: h, position: chunkPosition + Int64(here)) {
                            builder.unchangedKeys.append(key)
                            scanner.reset(to: end)
                            continue
                        }
                    }
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
                if let problem = state.flush(parentRow: builder.count) {
                    builder.rollbackRow()
                    _ = reject(recordStart: here, errorAt: here, reason: problem)
                    scanner.reset(to: scanner.position)
                    continue
                }
                if let sc = sourceColumn {
                    let end = scanner.position
                    let h =
                        hashed.flatMap { $0.end == end ? $0.hash : nil }
                        ?? SourceHash.hash(p + here, count: end - here, seed: seed)
                    state.columns[sc]._withUnsafeGuaranteedRef { $0.append(int64: h) }
                    if let storedHashes, let kf = compiled.keyField {
                        let row = builder.count
                        let key = state.columns[kf]._withUnsafeGuaranteedRef {
                            $0.isNull(row) ? nil : $0.int64(at: row)
                        }
                        if let key, !storedHashes.claimDecoded(key: key, position: chunkPosition + Int64(here)) {
                            // A later occurrence of the key was skipped as unchanged: it, not this one, stays.
                            builder.rollbackRow()
                            builder.supersededRecords += 1
                            continue
                        }
                    }
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

/// A child row of the record being read: its child mapping and its first slot in `rowSlots`.
struct RowRef {
    var table: Int
    var first: Int
}

/// A growable array of plain values without reference counting or uniqueness checks (the decoder's per-record
/// state, touched on every element). Freed explicitly.
struct RawArray<Element: BitwiseCopyable> {
    private(set) var base: UnsafeMutablePointer<Element>
    private(set) var count = 0
    private var capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        base = .allocate(capacity: self.capacity)
    }

    init(repeating value: Element, count: Int) {
        self.init(capacity: count)
        base.initialize(repeating: value, count: count)
        self.count = count
    }

    func free() { base.deallocate() }

    var indices: Range<Int> { 0..<count }

    subscript(i: Int) -> Element {
        @inline(__always) get { base[i] }
        @inline(__always) nonmutating set { base[i] = newValue }
    }

    @inline(__always)
    mutating func append(_ value: Element) {
        if count == capacity {
            let b = UnsafeMutablePointer<Element>.allocate(capacity: capacity * 2)
            b.initialize(from: base, count: count)
            base.deallocate()
            base = b
            capacity *= 2
        }
        (base + count).initialize(to: value)
        count += 1
    }

    @inline(__always)
    mutating func removeLast() -> Element {
        count -= 1
        return base[count]
    }

    mutating func removeAll() { count = 0 }
}

/// A growable byte buffer without reference counting (scratch text, the canonical encoding, JSON).
struct RawBytes {
    var base: UnsafeMutablePointer<UInt8>
    var count = 0
    var capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
    }

    func free() { base.deallocate() }

    /// Makes room for `n` more bytes and returns where they go (valid until the next growth).
    @inline(__always)
    mutating func reserve(_ n: Int) -> UnsafeMutablePointer<UInt8> {
        if count + n > capacity {
            var c = capacity * 2
            while c < count + n { c *= 2 }
            let b = UnsafeMutablePointer<UInt8>.allocate(capacity: c)
            b.update(from: base, count: count)
            base.deallocate()
            base = b
            capacity = c
        }
        return base + count
    }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        _ = reserve(1)
        base[count] = byte
        count += 1
    }

    @inline(__always)
    mutating func append(_ p: UnsafePointer<UInt8>, _ n: Int) {
        let at = reserve(n)
        at.update(from: p, count: n)
        count += n
    }

    @inline(__always)
    mutating func append<T: FixedWidthInteger>(integer v: T) {
        withUnsafeBytes(of: v.littleEndian) { append($0.baseAddress!.assumingMemoryBound(to: UInt8.self), $0.count) }
    }

    mutating func append(_ s: StaticString) { append(s.utf8Start, s.utf8CodeUnitCount) }

    /// Appends `p[0..<n]` as a quoted JSON string.
    mutating func appendJSONString(_ p: UnsafePointer<UInt8>, _ n: Int) {
        append(UInt8(ascii: "\""))
        let hex: StaticString = "0123456789abcdef"
        for i in 0..<n {
            let c = p[i]
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                append(UInt8(ascii: "\\"))
                append(c)
            case 0x0A: append("\\n")
            case 0x0D: append("\\r")
            case 0x09: append("\\t")
            case 0..<0x20:
                append("\\u00")
                append(hex.utf8Start[Int(c >> 4)])
                append(hex.utf8Start[Int(c & 15)])
            default: append(c)
            }
        }
        append(UInt8(ascii: "\""))
    }
}

/// The per-call state of a decode: the captured values of the current record and scratch buffers.
///
/// Columns are reached through unmanaged references bound once per call (the builder replaces its columns
/// only between calls), so filling a row costs no reference counting.
struct RecordState {
    let compiled: CompiledMapping
    let tables: MappingTables
    let recordName: UnsafeMutablePointer<UInt8>
    let recordNameLength: Int
    let base: UnsafePointer<UInt8>
    let count: Int
    var slots: RawArray<Slot>
    /// Child rows of the current record: (child mapping, first slot in `rowSlots`).
    var rows = RawArray<RowRef>(capacity: 64)
    var rowSlots = RawArray<Slot>(capacity: 512)
    var currentRow: RawArray<Int>
    var nodes = RawArray<Int>(capacity: 32)
    var scratch = RawBytes(capacity: 4096)
    var canonical = RawBytes(capacity: 8192)
    var json = RawBytes(capacity: 1024)
    /// Unmanaged parent columns, then each child table's columns (`childColumnStart[t]` is table t's first),
    /// and the child builders.
    var columns: UnsafeMutablePointer<Unmanaged<Column>>
    var childColumnStart: [Int] = []
    var childBuilders: [Unmanaged<RecordBatchBuilder>] = []
    var columnCapacity: Int

    init(compiled: CompiledMapping, base: UnsafePointer<UInt8>, count: Int) {
        self.compiled = compiled
        tables = compiled.tables
        recordName = tables.recordName
        recordNameLength = compiled.recordName.count
        self.base = base
        self.count = count
        slots = RawArray(repeating: Slot(), count: compiled.parentTypes.count)
        currentRow = RawArray(repeating: -1, count: compiled.children.count)
        columnCapacity = compiled.schema.count + compiled.schema.children.reduce(0) { $0 + $1.schema.count }
        columns = .allocate(capacity: max(columnCapacity, 1))
    }

    /// Frees the scratch buffers.
    func free() {
        scratch.free()
        canonical.free()
        json.free()
        columns.deallocate()
        slots.free()
        rows.free()
        rowSlots.free()
        currentRow.free()
        nodes.free()
    }

    /// Binds the builder's current columns (call before filling rows, after any `build`).
    mutating func bind(_ builder: RecordBatchBuilder) {
        var i = 0
        for c in builder.columns {
            columns[i] = Unmanaged.passUnretained(c)
            i += 1
        }
        childColumnStart.removeAll(keepingCapacity: true)
        childBuilders.removeAll(keepingCapacity: true)
        for cb in builder.children {
            childColumnStart.append(i)
            childBuilders.append(Unmanaged.passUnretained(cb))
            for c in cb.columns {
                columns[i] = Unmanaged.passUnretained(c)
                i += 1
            }
        }
    }

    /// Reads the record whose start tag the scanner just returned, up to and including its end tag.
    mutating func read(_ scanner: inout XMLScanner, recordStart: Int) throws(XMLError) {
        for i in slots.indices { slots[i] = Slot() }
        rows.removeAll()
        rowSlots.removeAll()
        scratch.count = 0
        for i in currentRow.indices { currentRow[i] = -1 }
        nodes.removeAll()
        nodes.append(0)
        let t = tables
        attributes(of: 0, &scanner)
        let depth = scanner.depth - 1
        while true {
            let event = try scanner.next()
            switch event {
            case .start(let name):
                if nodes.count == 1 && name.count == recordNameLength
                    && XMLText.same(base + name.start, recordName, recordNameLength)
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
                    rows.append(RowRef(table: table, first: rowSlots.count))
                    for _ in 0..<Int(t.childFields[table]) { rowSlots.append(Slot()) }
                    currentRow[table] = rows.count - 1
                }
                if t.attrCount[node] > 0 { attributes(of: node, &scanner) }
            case .end:
                let node = nodes.removeLast()
                let table = Int(t.textTable[node])
                if table != -2 { markFinal(SlotTarget(table: table, column: Int(t.textColumn[node]))) }
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

    private mutating func attributes(of node: Int, _ scanner: inout XMLScanner) {
        let t = tables
        let first = Int(t.attrStart[node])
        let n = Int(t.attrCount[node])
        if n == 0 { return }
        scanner.withAttributes { attrs in
            for a in attrs {
                for k in first..<(first + n) where Int(t.attrLength[k]) == a.name.count {
                    if XMLText.same(base + a.name.start, t.names + Int(t.attrName[k]), a.name.count) {
                        let target = SlotTarget(table: Int(t.attrTable[k]), column: Int(t.attrColumn[k]))
                        if let i = slotIndex(target), slot(i, target.table).kind == .none {
                            setSlot(
                                i, target.table,
                                Slot(
                                    kind: .span, final: true, refs: a.value.hasReferences, trim: false,
                                    start: a.value.start, end: a.value.end))
                        }
                    }
                }
            }
        }
    }

    /// The index of a target's slot (in `slots` for the parent, `rowSlots` for a child row), if it has one.
    @inline(__always)
    private func slotIndex(_ target: SlotTarget) -> Int? {
        if target.table < 0 { return target.column }
        let r = currentRow[target.table]
        return r >= 0 ? rows[r].first + target.column : nil
    }

    @inline(__always)
    private func slot(_ i: Int, _ table: Int) -> Slot { table < 0 ? slots[i] : rowSlots[i] }

    @inline(__always)
    private mutating func setSlot(_ i: Int, _ table: Int, _ s: Slot) {
        if table < 0 { slots[i] = s } else { rowSlots[i] = s }
    }

    private mutating func markFinal(_ target: SlotTarget) {
        guard let i = slotIndex(target) else { return }
        if target.table < 0 { slots[i].final = true } else { rowSlots[i].final = true }
    }

    private mutating func addText(_ span: XMLSpan, literal: Bool, to target: SlotTarget) {
        guard let i = slotIndex(target) else { return }
        var s = slot(i, target.table)
        if s.final { return }
        switch s.kind {
        case .none:
            s = Slot(
                kind: literal ? .literal : .span, final: false, refs: span.hasReferences, trim: true,
                start: span.start, end: span.end)
        case .span, .literal:
            let first = scratch.count
            appendDecoded(s.kind == .literal, s.refs, s.start, s.end)
            appendDecoded(literal, span.hasReferences, span.start, span.end)
            s = Slot(kind: .scratch, final: false, refs: false, trim: true, start: first, end: scratch.count)
        case .scratch:
            if s.end != scratch.count {
                // Another value was written after this one: move this one to the end first.
                let n = s.end - s.start
                let at = scratch.reserve(n)
                at.update(from: scratch.base + s.start, count: n)
                s.start = scratch.count
                scratch.count += n
            }
            appendDecoded(literal, span.hasReferences, span.start, span.end)
            s.end = scratch.count
        }
        setSlot(i, target.table, s)
    }

    /// Appends the decoded bytes of input `[start, end)` to `scratch`.
    private mutating func appendDecoded(_ literal: Bool, _ refs: Bool, _ start: Int, _ end: Int) {
        let n = end - start
        let at = scratch.reserve(n)
        if !literal && refs {
            scratch.count += XMLText.decode(base, start, end, into: at)
        } else {
            at.update(from: base + start, count: n)
            scratch.count += n
        }
    }

    // MARK: - Output

    /// The decoded, trimmed bytes of a slot: a pointer into the input or into `scratch` (valid until `scratch`
    /// grows).
    @inline(__always)
    private mutating func value(_ s: Slot) -> (UnsafePointer<UInt8>, Int) {
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
            let p = scratch.base
            var a = s.start
            var b = s.end
            if s.trim {
                while a < b && XMLText.isSpace(p[a]) { a += 1 }
                while b > a && XMLText.isSpace(p[b - 1]) { b -= 1 }
            }
            return (UnsafePointer(p + a), b - a)
        }
    }

    /// Appends a slot's value to `column` as `type`, and to the canonical encoding. Returns why it does not
    /// convert, if it does not.
    private mutating func append(_ s: Slot, type: FieldType, to column: Unmanaged<Column>) -> String? {
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

    private static func notA(_ what: String, _ p: UnsafePointer<UInt8>, _ n: Int) -> String {
        let text = String(decoding: UnsafeBufferPointer(start: p, count: min(n, 60)), as: UTF8.self)
        return "'\(text)' is not \(what)"
    }

    private mutating func appendJSONValue(_ s: Slot, type: FieldType) {
        if s.kind == .none {
            json.append("null")
            return
        }
        let (p, n) = value(s)
        if (type == .int64 || type == .float64) && n > 0 && JSONSyntax.validate(p, n) != nil
            && (type == .float64 || ValueParsing.parseInt64(p, n) != nil)
        {
            json.append(p, n)
        } else {
            json.appendJSONString(p, n)
        }
    }
}
