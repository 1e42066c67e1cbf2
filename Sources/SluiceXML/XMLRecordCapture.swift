import Crypto
import SluiceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

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
    /// The JSON text of the last list value read (``Slot/list``).
    var listOut = RawBytes(capacity: 256)
    /// Elements the mapping does not cover, seen in this call: count by a hash of (parent node, name), and
    /// the parent and name behind each hash.
    var ignored: [UInt64: Int] = [:]
    var ignoredNames: [UInt64: (Int, String)] = [:]
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
        listOut.free()
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
        try attributes(of: 0, &scanner)
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
                        reason: notClosed)
                }
                let parent = nodes[nodes.count - 1]
                let parentTable = Int(t.textTable[parent])
                if parentTable != -2 { childStarted(SlotTarget(table: parentTable, column: Int(t.textColumn[parent]))) }
                let node = t.child(of: parent, base, name.start, name.count)
                if node < 0 {
                    noteIgnored(parent, name, scanner)
                    try scanner.skipElement()
                    continue
                }
                let text = Int(t.textTable[node])
                if text != -2 && t.rowTable[node] < 0 {
                    // The element fills a value: a list gets an item, any other value must not repeat.
                    let target = SlotTarget(table: text, column: Int(t.textColumn[node]))
                    let repeated = t.textRepeated[node]
                    if repeated == 2 {
                        listItemStart(target)
                    } else if let i = slotIndex(target), slot(i, text).final {
                        if repeated == 1 {
                            try scanner.skipElement()
                            continue
                        }
                        throw XMLError(offset: name.start - 1, reason: repeatReason(target))
                    }
                }
                nodes.append(node)
                let table = Int(t.rowTable[node])
                if table >= 0 {
                    rows.append(RowRef(table: table, first: rowSlots.count))
                    for _ in 0..<Int(t.childFields[table]) { rowSlots.append(Slot()) }
                    currentRow[table] = rows.count - 1
                }
                if t.attrCount[node] > 0 { try attributes(of: node, &scanner) }
            case .end:
                let node = nodes.removeLast()
                let table = Int(t.textTable[node])
                if table != -2 {
                    let target = SlotTarget(table: table, column: Int(t.textColumn[node]))
                    if t.textRepeated[node] == 2 && t.rowTable[node] < 0 {
                        listItemEnd(target, trim: t.textTrim[node] != 0)
                    } else {
                        markFinal(target)
                    }
                }
                if scanner.depth == depth { return }
            case .text(let span):
                let node = nodes[nodes.count - 1]
                let table = Int(t.textTable[node])
                if table != -2 {
                    addText(
                        span, literal: false, trim: t.textTrim[node] != 0,
                        to: SlotTarget(table: table, column: Int(t.textColumn[node])))
                }
            case .cdata(let span):
                let node = nodes[nodes.count - 1]
                let table = Int(t.textTable[node])
                if table != -2 {
                    addText(
                        span, literal: true, trim: t.textTrim[node] != 0,
                        to: SlotTarget(table: table, column: Int(t.textColumn[node])))
                }
            case .endOfInput:
                throw XMLError(offset: recordStart, reason: notClosed)
            case .comment, .processingInstruction, .doctype:
                continue
            }
        }
    }

    mutating func attributes(of node: Int, _ scanner: inout XMLScanner) throws(XMLError) {
        let t = tables
        let first = Int(t.attrStart[node])
        let n = Int(t.attrCount[node])
        if n == 0 { return }
        let repeatAt: (Int, SlotTarget)? = scanner.withAttributes { attrs in
            for a in attrs {
                for k in first..<(first + n) where Int(t.attrLength[k]) == a.name.count {
                    if XMLText.same(base + a.name.start, t.names + Int(t.attrName[k]), a.name.count) {
                        let target = SlotTarget(table: Int(t.attrTable[k]), column: Int(t.attrColumn[k]))
                        guard let i = slotIndex(target) else { continue }
                        if t.attrRepeated[k] == 2 {
                            listItemStart(target)
                            listAppend(target, literal: false, refs: a.value.hasReferences, a.value.start, a.value.end)
                            listItemEnd(target, trim: false)
                        } else if slot(i, target.table).kind == .none {
                            setSlot(
                                i, target.table,
                                Slot(
                                    kind: .span, final: true, refs: a.value.hasReferences, trim: false, blank: false,
                                    mixed: false, start: a.value.start, end: a.value.end))
                        } else if t.attrRepeated[k] == 0 {
                            return (a.name.start, target)
                        }
                    }
                }
            }
            return nil
        }
        if let (at, target) = repeatAt { throw XMLError(offset: at, reason: repeatReason(target)) }
    }

    /// Counts an element the mapping does not cover (no allocation but the first time a path is seen).
    mutating func noteIgnored(_ parent: Int, _ name: XMLSpan, _ scanner: XMLScanner) {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(parent)
        for i in name.start..<name.end { h = (h ^ UInt64(base[i])) &* 0x100_0000_01b3 }
        if let n = ignored[h] {
            ignored[h] = n + 1
        } else {
            ignored[h] = 1
            ignoredNames[h] = (parent, scanner.string(name))
        }
    }

    /// Why a record without its end tag is rejected. One reason for both ways of finding out (the next record
    /// starts, or the input ends), since which one a decoder sees depends on where its chunk was cut.
    var notClosed: String {
        let n = compiled.mapping.recordName
        return "<\(n)> is not closed: no </\(n)> before the next <\(n)> or the end of the input"
    }

    /// Why a record whose `target` value repeats is rejected, and how to map it instead.
    func repeatReason(_ target: SlotTarget) -> String {
        let f =
            target.table < 0
            ? compiled.mapping.fields[target.column] : compiled.children[target.table].mapping.fields[target.column]
        let owner = target.table < 0 ? "" : " of \(compiled.children[target.table].mapping.table)"
        return "'\(f.path)' occurs more than once, but field '\(f.name)'\(owner) holds one value: "
            + "give it repeated: list (a JSON array) or repeated: first, or map the elements as a child table"
    }

    /// Moves a scratch slot's bytes to the end of `scratch` if another value was written after them, so that it
    /// can grow.
    mutating func moveToEnd(_ s: inout Slot) {
        if s.end == scratch.count { return }
        let n = s.end - s.start
        let at = scratch.reserve(n)
        at.update(from: scratch.base + s.start, count: n)
        s.start = scratch.count
        s.end = scratch.count + n
        scratch.count += n
    }

    /// Opens a new item of the list `target` (starting the list if it is the first).
    mutating func listItemStart(_ target: SlotTarget) {
        guard let i = slotIndex(target) else { return }
        var s = slot(i, target.table)
        if s.kind == .none {
            s = Slot(kind: .scratch, start: scratch.count, end: scratch.count)
            s.list = true
        } else {
            moveToEnd(&s)
        }
        s.item = s.end - s.start
        _ = scratch.reserve(4)
        scratch.count += 4
        s.end = scratch.count
        setSlot(i, target.table, s)
    }

    /// Appends input `[start, end)`, decoded, to the open item of the list `target`.
    mutating func listAppend(_ target: SlotTarget, literal: Bool, refs: Bool, _ start: Int, _ end: Int) {
        guard let i = slotIndex(target) else { return }
        var s = slot(i, target.table)
        guard s.list, s.item >= 0 else { return }
        moveToEnd(&s)
        appendDecoded(literal, refs, start, end)
        s.end = scratch.count
        setSlot(i, target.table, s)
    }

    /// Closes the open item of the list `target`: trims it if asked and writes its length.
    mutating func listItemEnd(_ target: SlotTarget, trim: Bool) {
        guard let i = slotIndex(target) else { return }
        var s = slot(i, target.table)
        guard s.list, s.item >= 0 else { return }
        let at = s.start + s.item
        let content = at + 4
        var length = s.end - content
        if trim {
            let kept = XMLText.trimmed(scratch.base, XMLSpan(start: content, end: s.end))
            if kept.start > content {
                (scratch.base + content).update(from: scratch.base + kept.start, count: kept.count)
            }
            length = kept.count
            if s.end == scratch.count { scratch.count = content + length }
            s.end = content + length
        }
        UnsafeMutableRawPointer(scratch.base + at).storeBytes(of: UInt32(length).littleEndian, as: UInt32.self)
        s.item = -1
        setSlot(i, target.table, s)
    }

    /// The index of a target's slot (in `slots` for the parent, `rowSlots` for a child row), if it has one.
    @inline(__always)
    func slotIndex(_ target: SlotTarget) -> Int? {
        if target.table < 0 { return target.column }
        let r = currentRow[target.table]
        return r >= 0 ? rows[r].first + target.column : nil
    }

    @inline(__always)
    func slot(_ i: Int, _ table: Int) -> Slot { table < 0 ? slots[i] : rowSlots[i] }

    @inline(__always)
    mutating func setSlot(_ i: Int, _ table: Int, _ s: Slot) {
        if table < 0 { slots[i] = s } else { rowSlots[i] = s }
    }

    mutating func markFinal(_ target: SlotTarget) {
        guard let i = slotIndex(target) else { return }
        if target.table < 0 { slots[i].final = true } else { rowSlots[i].final = true }
    }

    /// A child element starts inside the element whose text fills `target`: whitespace-only text before it
    /// (and after it) is layout, not part of the value.
    mutating func childStarted(_ target: SlotTarget) {
        guard let i = slotIndex(target) else { return }
        var s = slot(i, target.table)
        if s.final || s.mixed && !s.blank { return }
        if s.kind == .none || s.blank {
            s.kind = .none
            s.blank = false
        }
        s.mixed = true
        setSlot(i, target.table, s)
    }

    mutating func addText(_ span: XMLSpan, literal: Bool, trim: Bool, to target: SlotTarget) {
        guard let i = slotIndex(target) else { return }
        var s = slot(i, target.table)
        if s.final { return }
        if s.list {
            listAppend(target, literal: literal, refs: span.hasReferences, span.start, span.end)
            return
        }
        // (A reference is not whitespace: `&` is not blank, whatever `hasReferences` says.)
        let blank = !literal && XMLText.isBlank(base, span)
        if blank && s.mixed && s.kind == .none { return }
        switch s.kind {
        case .none:
            s = Slot(
                kind: literal ? .literal : .span, final: false, refs: span.hasReferences, trim: trim, blank: blank,
                mixed: s.mixed, start: span.start, end: span.end)
        case .span, .literal:
            let first = scratch.count
            appendDecoded(s.kind == .literal, s.refs, s.start, s.end)
            appendDecoded(literal, span.hasReferences, span.start, span.end)
            s = Slot(
                kind: .scratch, final: false, refs: false, trim: trim, blank: s.blank && blank, mixed: s.mixed,
                start: first, end: scratch.count)
        case .scratch:
            // Another value may have been written after this one: move this one to the end first.
            moveToEnd(&s)
            appendDecoded(literal, span.hasReferences, span.start, span.end)
            s.end = scratch.count
            s.blank = s.blank && blank
        }
        setSlot(i, target.table, s)
    }

    /// Appends the decoded bytes of input `[start, end)` to `scratch`.
    mutating func appendDecoded(_ literal: Bool, _ refs: Bool, _ start: Int, _ end: Int) {
        let n = end - start
        let at = scratch.reserve(n)
        if !literal && refs {
            scratch.count += XMLText.decode(base, start, end, into: at)
        } else {
            at.update(from: base + start, count: n)
            scratch.count += n
        }
    }
}
