/// Where the rows of a batch came from, so that a sink-side reject can still name its place in the input.
public struct BatchOrigin: Sendable, Hashable {
    /// The input file (or source name).
    public var file: String
    /// 1-based line number of the batch's first byte (filled in by the runtime once earlier batches are counted).
    public var firstLine: Int
    /// Byte offset of the batch's first byte in the (decompressed) input.
    public var firstOffset: Int64
    /// 1-based number of the batch's first record in the run.
    public var firstRecord: Int64

    /// Creates an origin.
    public init(file: String, firstLine: Int = 1, firstOffset: Int64 = 0, firstRecord: Int64 = 1) {
        self.file = file
        self.firstLine = firstLine
        self.firstOffset = firstOffset
        self.firstRecord = firstRecord
    }
}

/// A set of rows stored column by column.
///
/// Optional per-row origins (line within the batch, byte offset within the batch) let sinks report the input
/// position of a row they reject.
public struct RecordBatch: Sendable {
    /// The schema of the rows.
    public let schema: Schema
    /// One column per schema field.
    public let columns: [Column]
    /// The number of rows.
    public let count: Int
    /// Where the rows came from.
    public var origin: BatchOrigin
    /// Per row: line (relative to `origin.firstLine`) and byte offset (relative to `origin.firstOffset`).
    public let rowOrigins: RowOrigins?
    /// Bytes of input these rows were decoded from (for MB/s).
    public var inputBytes: Int
    /// The rows of each child table of ``schema`` (in `schema.children` order) that belong to these rows.
    public let children: [RecordBatch]
    /// For a child batch: the index of each row's parent row in the parent batch, ascending. Nil otherwise.
    public let parentRows: [Int32]?

    /// Creates a batch from columns that all hold `count` values, with the child rows of nested records.
    public init(
        schema: Schema, columns: [Column], count: Int, origin: BatchOrigin = BatchOrigin(file: "-"),
        rowOrigins: RowOrigins? = nil, inputBytes: Int = 0, children: [RecordBatch] = [], parentRows: [Int32]? = nil
    ) {
        precondition(columns.count == schema.count && columns.allSatisfy { $0.count == count })
        precondition(children.count == 0 || children.count == schema.children.count)
        self.schema = schema
        self.columns = columns
        self.count = count
        self.origin = origin
        self.rowOrigins = rowOrigins
        self.inputBytes = inputBytes
        self.children = children
        self.parentRows = parentRows
    }

    /// Approximate memory held by the batch and its child rows.
    public var allocatedBytes: Int {
        columns.reduce(0) { $0 + $1.allocatedBytes } + (rowOrigins?.allocatedBytes ?? 0)
            + children.reduce(0) { $0 + $1.allocatedBytes } + (parentRows?.count ?? 0) * 4
    }

    /// For a child batch: the range of its rows whose parent row is in `parents` (rows are sorted by parent).
    public func rows(ofParents parents: Range<Int>) -> Range<Int> {
        guard let p = parentRows else { return 0..<0 }
        func lowerBound(_ v: Int) -> Int {
            var lo = 0
            var hi = p.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if Int(p[mid]) < v { lo = mid + 1 } else { hi = mid }
            }
            return lo
        }
        return lowerBound(parents.lowerBound)..<lowerBound(parents.upperBound)
    }

    /// The position in the input of row `index`.
    public func position(ofRow index: Int) -> SourcePosition {
        var p = SourcePosition(file: origin.file, record: origin.firstRecord + Int64(index))
        if let ro = rowOrigins, index < ro.count {
            p.line = origin.firstLine + Int(ro.line(index))
            p.offset = origin.firstOffset + Int64(ro.offset(index))
        }
        return p
    }

    /// The row at `index` as values (for transforms, tests and error reports; not for hot paths).
    public func row(_ index: Int) -> [Value] { columns.map { $0.value(at: index) } }

    /// A new batch holding the rows in `range` and their child rows, copied.
    public func slice(_ range: Range<Int>) -> RecordBatch {
        let cols = schema.fields.map { Column(type: $0.type, capacity: range.count) }
        let ro = rowOrigins.map { _ in RowOrigins(capacity: range.count) }
        for i in range {
            for (c, col) in cols.enumerated() { col.append(from: columns[c], at: i) }
            if let ro, let src = rowOrigins { ro.append(line: src.line(i), offset: src.offset(i)) }
        }
        var o = origin
        o.firstRecord += Int64(range.lowerBound)
        let kids = children.map { child -> RecordBatch in
            let r = child.rows(ofParents: range)
            let part = child.slice(r)
            let parents = child.parentRows.map { p in r.map { p[$0] - Int32(range.lowerBound) } }
            return RecordBatch(
                schema: part.schema, columns: part.columns, count: part.count, origin: part.origin,
                children: part.children, parentRows: parents)
        }
        return RecordBatch(
            schema: schema, columns: cols, count: range.count, origin: o, rowOrigins: ro, inputBytes: 0,
            children: kids)
    }

    /// A new batch holding the rows at `rows` (ascending) and their child rows, copied; rows keep no origins
    /// beyond their record numbers.
    public func select(rows: [Int]) -> RecordBatch {
        let cols = schema.fields.map { Column(type: $0.type, capacity: rows.count) }
        let ro = rowOrigins.map { _ in RowOrigins(capacity: rows.count) }
        for i in rows {
            for (c, col) in cols.enumerated() { col.append(from: columns[c], at: i) }
            if let ro, let src = rowOrigins { ro.append(line: src.line(i), offset: src.offset(i)) }
        }
        let kids = children.map { child -> RecordBatch in
            let kc = child.schema.fields.map { Column(type: $0.type, capacity: rows.count * 4) }
            var parents: [Int32] = []
            for (n, i) in rows.enumerated() {
                for r in child.rows(ofParents: i..<(i + 1)) {
                    for (c, col) in kc.enumerated() { col.append(from: child.columns[c], at: r) }
                    parents.append(Int32(n))
                }
            }
            return RecordBatch(
                schema: child.schema, columns: kc, count: parents.count, origin: child.origin, parentRows: parents)
        }
        return RecordBatch(
            schema: schema, columns: cols, count: rows.count, origin: origin, rowOrigins: ro, inputBytes: 0,
            children: kids)
    }
}

/// Per-row line and byte offsets relative to a batch's origin, in two contiguous 32-bit buffers.
public final class RowOrigins: @unchecked Sendable {
    @exclusivity(unchecked) private var lines: UnsafeMutablePointer<UInt32>
    @exclusivity(unchecked) private var offsets: UnsafeMutablePointer<UInt32>
    @exclusivity(unchecked) private var capacity: Int
    /// Rows recorded.
    @exclusivity(unchecked) public private(set) var count = 0

    /// Creates an empty buffer.
    public init(capacity: Int) {
        self.capacity = max(capacity, 16)
        lines = .allocate(capacity: self.capacity)
        offsets = .allocate(capacity: self.capacity)
    }
    deinit {
        lines.deallocate()
        offsets.deallocate()
    }
    /// Bytes held.
    public var allocatedBytes: Int { capacity * 8 }

    /// Records the origin of the next row.
    @inline(__always)
    public func append(line: UInt32, offset: UInt32) {
        if count == capacity {
            let n = capacity * 2
            let l = UnsafeMutablePointer<UInt32>.allocate(capacity: n)
            l.update(from: lines, count: count)
            lines.deallocate()
            lines = l
            let o = UnsafeMutablePointer<UInt32>.allocate(capacity: n)
            o.update(from: offsets, count: count)
            offsets.deallocate()
            offsets = o
            capacity = n
        }
        lines[count] = line
        offsets[count] = offset
        count += 1
    }
    /// Drops rows past `newCount`.
    public func truncate(to newCount: Int) { count = min(count, newCount) }
    /// Line of row `i`, relative to the batch's first line.
    @inline(__always) public func line(_ i: Int) -> UInt32 { lines[i] }
    /// Byte offset of row `i`, relative to the batch's first byte.
    @inline(__always) public func offset(_ i: Int) -> UInt32 { offsets[i] }
}

/// Builds a ``RecordBatch`` row by row, one column at a time, without a heap allocation per value.
///
/// Append one value to every column, then call ``finishRow(line:offset:)``; if a value turns out to be
/// bad half-way through a row, ``rollbackRow()`` removes what the row appended so far.
public final class RecordBatchBuilder: @unchecked Sendable {
    /// The schema being built.
    public let schema: Schema
    /// The columns, in schema order.
    @exclusivity(unchecked) public private(set) var columns: [Column]
    /// Completed rows.
    @exclusivity(unchecked) public private(set) var count = 0
    @exclusivity(unchecked) private var origins: RowOrigins?
    private let rowCapacity: Int
    /// One builder per child table of the schema (nested records); their rows name a parent row of this one.
    public let children: [RecordBatchBuilder]
    private let isChild: Bool
    /// For a child builder: the parent row of each completed row.
    @exclusivity(unchecked) public private(set) var parentRows: [Int32] = []
    /// Keys of records a decoder recognised as unchanged from their raw bytes (``StoredSourceHashes``) and so
    /// did not turn into rows; the runtime takes them after each chunk and tells the sink.
    public var unchangedKeys: [Int64] = []
    /// The input position (``StoredSourceHashes/position(file:offset:)``) of byte 0 of the chunk being
    /// decoded, set by the runtime before it calls the decoder.
    public var chunkPosition: Int64 = 0
    /// Records a decoder dropped because a later occurrence of their key was skipped as unchanged (counted as
    /// read, not written); the runtime resets it after each chunk.
    public var supersededRecords = 0

    /// Creates a builder sized for `rowCapacity` rows, optionally tracking per-row origins.
    public convenience init(
        schema: Schema, rowCapacity: Int = 4096, byteCapacity: Int = 0, trackOrigins: Bool = false
    ) {
        self.init(
            schema: schema, rowCapacity: rowCapacity, byteCapacity: byteCapacity, trackOrigins: trackOrigins,
            isChild: false)
    }

    private init(schema: Schema, rowCapacity: Int, byteCapacity: Int, trackOrigins: Bool, isChild: Bool) {
        self.schema = schema
        self.rowCapacity = rowCapacity
        self.isChild = isChild
        children = schema.children.map {
            RecordBatchBuilder(
                schema: $0.schema, rowCapacity: rowCapacity * 4, byteCapacity: 0, trackOrigins: false, isChild: true)
        }
        let varCols = max(1, schema.fields.filter { !$0.type.isFixedWidth }.count)
        columns = schema.fields.map {
            Column(type: $0.type, capacity: rowCapacity, byteCapacity: byteCapacity / varCols)
        }
        origins = trackOrigins ? RowOrigins(capacity: rowCapacity) : nil
    }

    /// Completes the current row (every column must have received one value).
    @inline(__always)
    public func finishRow(line: UInt32 = 0, offset: UInt32 = 0) {
        count += 1
        origins?.append(line: line, offset: offset)
    }

    /// Completes the current row of a child builder, naming its parent row.
    @inline(__always)
    public func finishRow(parent: Int) {
        count += 1
        parentRows.append(Int32(truncatingIfNeeded: parent))
    }

    /// Undoes the values appended for the current, unfinished row, and the child rows appended for it.
    public func rollbackRow() {
        for c in columns where c.count > count { c.truncate(to: count) }
        for child in children { child.truncateToParents(count) }
    }

    /// Drops the rows of a child builder whose parent row is `parents` or later, and any unfinished row.
    public func truncateToParents(_ parents: Int) {
        var n = parentRows.count
        while n > 0 && Int(parentRows[n - 1]) >= parents { n -= 1 }
        truncate(rows: n)
    }

    /// Drops completed rows past `rows` and any unfinished row.
    public func truncate(rows: Int) {
        let n = min(rows, count)
        for c in columns where c.count > n { c.truncate(to: n) }
        if parentRows.count > n { parentRows.removeSubrange(n...) }
        origins?.truncate(to: n)
        count = n
    }

    /// Bytes of variable-width data appended so far, child rows included.
    public var dataBytes: Int { columns.reduce(0) { $0 + $1.dataCount } + children.reduce(0) { $0 + $1.dataBytes } }

    /// Finishes the batch and starts a new, empty one in this builder.
    public func build(origin: BatchOrigin = BatchOrigin(file: "-"), inputBytes: Int = 0) -> RecordBatch {
        let kids = children.map { $0.build(origin: origin) }
        let batch = RecordBatch(
            schema: schema, columns: columns, count: count, origin: origin, rowOrigins: origins,
            inputBytes: inputBytes, children: kids, parentRows: isChild ? parentRows : nil)
        if isChild { parentRows = [] }
        let varCols = max(1, schema.fields.filter { !$0.type.isFixedWidth }.count)
        let ownBytes = columns.reduce(0) { $0 + $1.dataCount }
        let avgBytes = count > 0 ? max(ownBytes / varCols, 1024) : 1024
        columns = schema.fields.map {
            Column(type: $0.type, capacity: max(rowCapacity, count), byteCapacity: $0.type.isFixedWidth ? 0 : avgBytes)
        }
        if origins != nil { origins = RowOrigins(capacity: max(rowCapacity, count)) }
        count = 0
        return batch
    }
}
