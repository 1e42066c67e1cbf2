import SluiceCore

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
        var attributes: [([UInt8], SlotTarget)] = []
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
    let recordName: [UInt8]
    var nodes: [Node] = [Node()]
    /// Parent field types, in mapping order (the first `fields.count` schema columns).
    let parentTypes: [FieldType]
    var children: [Child] = []
    /// Index of the key among parent fields.
    let keyField: Int?
    /// Index of the hash column in the schema.
    let hashColumn: Int?

    init(_ mapping: XMLMapping) throws {
        self.mapping = mapping
        let s = try mapping.schema()
        schema = s
        recordName = Array(mapping.recordName.utf8)
        parentTypes = mapping.fields.map(\.type)
        keyField = mapping.key.flatMap { k in mapping.fields.firstIndex { $0.name == k } }
        hashColumn = mapping.hashColumn.flatMap { s.index(of: $0) }
        var tableIndex = 0
        for c in mapping.children {
            let json = c.asJSON ? schema.index(of: c.table) : nil
            children.append(
                Child(
                    mapping: c, types: c.fields.map(\.type), tableIndex: c.asJSON ? nil : tableIndex, jsonColumn: json,
                    scalarList: c.fields.count == 1 && c.fields[0].path == "."))
            if !c.asJSON { tableIndex += 1 }
        }
        for (k, f) in mapping.fields.enumerated() {
            try place(f.path, from: 0, target: SlotTarget(table: -1, column: k))
        }
        for (t, c) in mapping.children.enumerated() {
            let node = walk(c.path.split(separator: "/").map { Array($0.utf8) }, from: 0)
            if nodes[node].startsRow != nil {
                throw SluiceError(.config, "two child mappings use the path '\(c.path)'")
            }
            nodes[node].startsRow = t
            for (k, f) in c.fields.enumerated() {
                try place(f.path, from: node, target: SlotTarget(table: t, column: k))
            }
        }
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

    private mutating func place(_ path: String, from: Int, target: SlotTarget) throws {
        if path == "." {
            nodes[from].text = target
            return
        }
        var steps = path.split(separator: "/").map { Array($0.utf8) }
        if let last = steps.last, last.first == UInt8(ascii: "@") {
            steps.removeLast()
            let node = walk(steps, from: from)
            nodes[node].attributes.append((Array(last.dropFirst()), target))
        } else {
            let node = walk(steps, from: from)
            nodes[node].text = target
        }
    }

    /// The child node of `node` named by `name`, if the mapping reaches it.
    @inline(__always)
    func child(of node: Int, named name: XMLSpan, in base: UnsafePointer<UInt8>) -> Int? {
        let n = nodes[node]
        for (i, s) in n.names.enumerated() where s.count == name.count {
            if s.withUnsafeBufferPointer({ Bytes.equal(base + name.start, $0.baseAddress!, s.count) }) {
                return n.next[i]
            }
        }
        return nil
    }
}
