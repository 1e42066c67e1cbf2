import SluiceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where a captured value goes: the parent row (`table` = -1) or the current row of child mapping `table`,
/// column `column` of that row's slots.
struct SlotTarget: Sendable, Hashable {
    var table: Int
    var column: Int
}

/// A mapping turned into a tree of element names below the record element, each node saying what its text
/// and attributes fill, and whether it starts a child row.
struct CompiledMapping: Sendable {
    struct Node: Sendable {
        var names: [[UInt8]] = []
        var next: [Int] = []
        var text: SlotTarget?
        /// The text is trimmed: the mapping asks for it, or the column is not text (numbers ignore whitespace).
        var textTrim = false
        /// What a repeat of the element (text target) does.
        var textRepeated = XMLRepeated.reject
        var attributes: [([UInt8], SlotTarget, XMLRepeated)] = []
        /// Entering this element starts a row of child mapping `startsRow`.
        var startsRow: Int?
    }

    struct Child: Sendable {
        var mapping: XMLChildMapping
        var types: [FieldType]
        /// Index in the schema's child tables, or nil for a JSON column.
        var tableIndex: Int?
        /// For a JSON column: its index in the parent schema.
        var jsonColumn: Int?
        /// One field read from the element's own text: the JSON is an array of values, not of objects.
        var scalarList: Bool
    }

    let mapping: XMLMapping
    let schema: Schema
    /// The same tree as flat buffers, read on the hot path without reference counting.
    private(set) var tables: MappingTables!
    let recordName: [UInt8]
    var nodes: [Node] = [Node()]
    /// Each node's element path below the record ("" for the record itself), for the report.
    private(set) var nodePaths: [String] = []
    /// Parent field types, in mapping order (the first `fields.count` schema columns).
    let parentTypes: [FieldType]
    var children: [Child] = []
    /// Index of the key among parent fields.
    let keyField: Int?
    /// Index of the hash column in the schema.
    let hashColumn: Int?
    /// Index of the source-hash column in the schema.
    let sourceHashColumn: Int?
    /// The source hash's seed: a fingerprint of the mapping and of the decoder's version, so that records
    /// decoded under another mapping (or by a decoder that decodes differently) never look unchanged.
    let sourceSeed: UInt64
    /// The key attribute's name when the key is an int64 attribute of the record element (`@id`): update runs
    /// read it from the start tag to skip unchanged records without decoding them.
    let keyAttribute: [UInt8]?

    init(_ mapping: XMLMapping) throws {
        self.mapping = mapping
        let s = try mapping.schema()
        schema = s
        recordName = Array(mapping.recordName.utf8)
        parentTypes = mapping.fields.map(\.columnType)
        keyField = mapping.key.flatMap { k in mapping.fields.firstIndex { $0.name == k } }
        hashColumn = mapping.hashColumn.flatMap { s.index(of: $0) }
        sourceHashColumn = mapping.effectiveSourceHashColumn.flatMap { s.index(of: $0) }
        sourceSeed = SourceHash.seed("sluice-xml-source-2 \(mapping)")
        if let k = keyField, mapping.fields[k].type == .int64, mapping.fields[k].path.hasPrefix("@") {
            keyAttribute = Array(mapping.fields[k].path.dropFirst().utf8)
        } else {
            keyAttribute = nil
        }
        var tableIndex = 0
        for c in mapping.children {
            let json = c.asJSON ? schema.index(of: c.table) : nil
            children.append(
                Child(
                    mapping: c, types: c.fields.map(\.columnType), tableIndex: c.asJSON ? nil : tableIndex,
                    jsonColumn: json,
                    scalarList: c.fields.count == 1 && c.fields[0].path == "."))
            if !c.asJSON { tableIndex += 1 }
        }
        func trims(_ f: XMLFieldMapping, _ c: XMLChildMapping?) -> Bool {
            (f.type != .string && f.type != .bytes && f.type != .json) || (f.trim ?? c?.trim ?? mapping.trim)
        }
        for (k, f) in mapping.fields.enumerated() {
            try place(f.path, from: 0, target: SlotTarget(table: -1, column: k), trim: trims(f, nil), f.repeated)
        }
        for (t, c) in mapping.children.enumerated() {
            let node = walk(c.path.split(separator: "/").map { Array($0.utf8) }, from: 0)
            if nodes[node].startsRow != nil {
                throw SluiceError(.config, "two child mappings use the path '\(c.path)'")
            }
            nodes[node].startsRow = t
            for (k, f) in c.fields.enumerated() {
                try place(f.path, from: node, target: SlotTarget(table: t, column: k), trim: trims(f, c), f.repeated)
            }
        }
        var paths = [String](repeating: "", count: nodes.count)
        for (i, n) in nodes.enumerated() {
            for (k, next) in n.next.enumerated() {
                let name = String(decoding: n.names[k], as: UTF8.self)
                paths[next] = paths[i].isEmpty ? name : paths[i] + "/" + name
            }
        }
        nodePaths = paths
        tables = MappingTables(self)
    }

    private mutating func walk(_ steps: [[UInt8]], from: Int) -> Int {
        var node = from
        for s in steps {
            if let i = nodes[node].names.firstIndex(of: s) {
                node = nodes[node].next[i]
            } else {
                nodes.append(Node())
                nodes[node].names.append(s)
                nodes[node].next.append(nodes.count - 1)
                node = nodes.count - 1
            }
        }
        return node
    }

    private mutating func place(
        _ path: String, from: Int, target: SlotTarget, trim: Bool, _ repeated: XMLRepeated
    ) throws {
        if path == "." {
            nodes[from].text = target
            nodes[from].textTrim = trim
            // The element's own text of a row or of the record: the element itself never repeats.
            nodes[from].textRepeated = repeated
            return
        }
        var steps = path.split(separator: "/").map { Array($0.utf8) }
        if let last = steps.last, last.first == UInt8(ascii: "@") {
            steps.removeLast()
            let node = walk(steps, from: from)
            nodes[node].attributes.append((Array(last.dropFirst()), target, repeated))
        } else {
            let node = walk(steps, from: from)
            nodes[node].text = target
            nodes[node].textTrim = trim
            nodes[node].textRepeated = repeated
        }
    }
}

/// A ``CompiledMapping``'s tree in flat, immutable buffers: the decoder's hot path reads them through raw
/// pointers, so walking the tree costs no reference counting.
final class MappingTables: @unchecked Sendable {
    let nodeCount: Int
    /// Per node: first edge, edge count, text target (table: -2 none, -1 parent), row table (-1 none), first
    /// attribute, attribute count.
    let edgeStart: UnsafeMutablePointer<Int32>
    let edgeCount: UnsafeMutablePointer<Int32>
    let textTable: UnsafeMutablePointer<Int32>
    let textColumn: UnsafeMutablePointer<Int32>
    /// Per node: 1 when its text is trimmed.
    let textTrim: UnsafeMutablePointer<Int32>
    /// Per node: what a repeat of the element does (0 reject, 1 first, 2 list).
    let textRepeated: UnsafeMutablePointer<Int32>
    let rowTable: UnsafeMutablePointer<Int32>
    let attrStart: UnsafeMutablePointer<Int32>
    let attrCount: UnsafeMutablePointer<Int32>
    /// Per edge: name (offset, length into `names`) and the node it leads to.
    let edgeName: UnsafeMutablePointer<Int32>
    let edgeLength: UnsafeMutablePointer<Int32>
    let edgeTarget: UnsafeMutablePointer<Int32>
    /// Per attribute: name and target.
    let attrName: UnsafeMutablePointer<Int32>
    let attrLength: UnsafeMutablePointer<Int32>
    let attrTable: UnsafeMutablePointer<Int32>
    let attrColumn: UnsafeMutablePointer<Int32>
    /// Per attribute: what a repeat does (as ``textRepeated``).
    let attrRepeated: UnsafeMutablePointer<Int32>
    let names: UnsafeMutablePointer<UInt8>
    /// The record element's name.
    let recordName: UnsafeMutablePointer<UInt8>
    /// Per child mapping: field count, index among the schema's child tables (-1: a JSON column).
    let childFields: UnsafeMutablePointer<Int32>
    let childTable: UnsafeMutablePointer<Int32>
    /// Field types of every child mapping, one after the other (`childTypeStart[t]` is mapping t's first).
    let childTypes: UnsafeMutablePointer<FieldType>
    let childTypeStart: UnsafeMutablePointer<Int32>
    /// Parent field types.
    let parentTypes: UnsafeMutablePointer<FieldType>
    let parentCount: Int

    init(_ c: CompiledMapping) {
        let nodes = c.nodes
        nodeCount = nodes.count
        func buffer(_ values: [Int32]) -> UnsafeMutablePointer<Int32> {
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: max(values.count, 1))
            p.initialize(from: values, count: values.count)
            return p
        }
        var bytes: [UInt8] = []
        var es: [Int32] = []
        var ec: [Int32] = []
        var tt: [Int32] = []
        var tc: [Int32] = []
        var tr: [Int32] = []
        var trep: [Int32] = []
        var arep: [Int32] = []
        var rt: [Int32] = []
        var ast: [Int32] = []
        var ac: [Int32] = []
        var en: [Int32] = []
        var el: [Int32] = []
        var et: [Int32] = []
        var an: [Int32] = []
        var al: [Int32] = []
        var at: [Int32] = []
        var acol: [Int32] = []
        for n in nodes {
            es.append(Int32(en.count))
            ec.append(Int32(n.names.count))
            for (i, name) in n.names.enumerated() {
                en.append(Int32(bytes.count))
                el.append(Int32(name.count))
                bytes.append(contentsOf: name)
                et.append(Int32(n.next[i]))
            }
            tt.append(Int32(n.text?.table ?? -2))
            tc.append(Int32(n.text?.column ?? 0))
            tr.append(n.textTrim ? 1 : 0)
            trep.append(Self.code(n.textRepeated))
            rt.append(Int32(n.startsRow ?? -1))
            ast.append(Int32(an.count))
            ac.append(Int32(n.attributes.count))
            for (name, target, repeated) in n.attributes {
                arep.append(Self.code(repeated))
                an.append(Int32(bytes.count))
                al.append(Int32(name.count))
                bytes.append(contentsOf: name)
                at.append(Int32(target.table))
                acol.append(Int32(target.column))
            }
        }
        edgeStart = buffer(es)
        edgeCount = buffer(ec)
        textTable = buffer(tt)
        textColumn = buffer(tc)
        textTrim = buffer(tr)
        textRepeated = buffer(trep)
        attrRepeated = buffer(arep)
        rowTable = buffer(rt)
        attrStart = buffer(ast)
        attrCount = buffer(ac)
        edgeName = buffer(en)
        edgeLength = buffer(el)
        edgeTarget = buffer(et)
        attrName = buffer(an)
        attrLength = buffer(al)
        attrTable = buffer(at)
        attrColumn = buffer(acol)
        names = .allocate(capacity: max(bytes.count, 1))
        names.initialize(from: bytes, count: bytes.count)
        recordName = .allocate(capacity: max(c.recordName.count, 1))
        recordName.initialize(from: c.recordName, count: c.recordName.count)
        childFields = buffer(c.children.map { Int32($0.types.count) })
        childTable = buffer(c.children.map { Int32($0.tableIndex ?? -1) })
        let types = c.children.flatMap(\.types)
        childTypes = .allocate(capacity: max(types.count, 1))
        childTypes.initialize(from: types, count: types.count)
        var starts: [Int32] = []
        var next: Int32 = 0
        for ch in c.children {
            starts.append(next)
            next += Int32(ch.types.count)
        }
        childTypeStart = buffer(starts)
        parentCount = c.parentTypes.count
        parentTypes = .allocate(capacity: max(parentCount, 1))
        parentTypes.initialize(from: c.parentTypes, count: parentCount)
    }

    deinit {
        for p in [
            edgeStart, edgeCount, textTable, textColumn, textTrim, textRepeated, attrRepeated, rowTable, attrStart,
            attrCount, edgeName, edgeLength,
            edgeTarget, attrName, attrLength, attrTable, attrColumn, childFields, childTable, childTypeStart,
        ] {
            p.deallocate()
        }
        names.deallocate()
        recordName.deallocate()
        childTypes.deallocate()
        parentTypes.deallocate()
    }

    /// ``XMLRepeated`` as stored in the tables.
    static func code(_ r: XMLRepeated) -> Int32 {
        switch r {
        case .reject: return 0
        case .first: return 1
        case .list: return 2
        }
    }

    /// The child node of `node` named by `p[start..<end]`, or -1.
    @inline(__always)
    func child(of node: Int, _ p: UnsafePointer<UInt8>, _ start: Int, _ length: Int) -> Int {
        let first = Int(edgeStart[node])
        for e in first..<(first + Int(edgeCount[node])) where Int(edgeLength[e]) == length {
            if XMLText.same(p + start, names + Int(edgeName[e]), length) { return Int(edgeTarget[e]) }
        }
        return -1
    }
}
