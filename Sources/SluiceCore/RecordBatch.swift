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

    /// Creates a batch from columns that all hold `count` values.
    public init(
        schema: Schema, columns: [Column], count: Int, origin: BatchOrigin = BatchOrigin(file: "-"),
        rowOrigins: RowOrigins? = nil, inputBytes: Int = 0
    ) {
        precondition(columns.count == schema.count && columns.allSatisfy { $0.count == count })
        self.schema = schema
        self.columns = columns
        self.count = count
        self.origin = origin
        self.rowOrigins = rowOrigins
        self.inputBytes = inputBytes
    }

    /// Approximate memory held by the batch.
    public var allocatedBytes: Int { columns.reduce(0) { $0 + $1.allocatedBytes } + (rowOrigins?.allocatedBytes ?? 0) }

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

    /// A new batch holding the rows in `range`, copied.
    public func slice(_ range: Range<Int>) -> RecordBatch {
        let cols = schema.fields.map { Column(type: $0.type, capacity: range.count) }
        let ro = rowOrigins.map { _ in RowOrigins(capacity: range.count) }
        for i in range {
            for (c, col) in cols.enumerated() { col.append(from: columns[c], at: i) }
            if let ro, let src = rowOrigins { ro.append(line: src.line(i), offset: src.offset(i)) }
        }
        var o = origin
        o.firstRecord += Int64(range.lowerBound)
        return RecordBatch(schema: schema, columns: cols, count: range.count, origin: o, rowOrigins: ro, inputBytes: 0)
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

    /// Creates a builder sized for `rowCapacity` rows, optionally tracking per-row origins.
    public init(schema: Schema, rowCapacity: Int = 4096, byteCapacity: Int = 0, trackOrigins: Bool = false) {
        self.schema = schema
        self.rowCapacity = rowCapacity
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

    /// Undoes the values appended for the current, unfinished row.
    public func rollbackRow() {
        for c in columns where c.count > count { c.truncate(to: count) }
    }

    /// Bytes of variable-width data appended so far.
    public var dataBytes: Int { columns.reduce(0) { $0 + $1.dataCount } }

    /// Finishes the batch and starts a new, empty one in this builder.
    public func build(origin: BatchOrigin = BatchOrigin(file: "-"), inputBytes: Int = 0) -> RecordBatch {
        let batch = RecordBatch(
            schema: schema, columns: columns, count: count, origin: origin, rowOrigins: origins,
            inputBytes: inputBytes)
        let varCols = max(1, schema.fields.filter { !$0.type.isFixedWidth }.count)
        let avgBytes = count > 0 ? max(dataBytes / varCols, 1024) : 1024
        columns = schema.fields.map {
            Column(type: $0.type, capacity: max(rowCapacity, count), byteCapacity: $0.type.isFixedWidth ? 0 : avgBytes)
        }
        if origins != nil { origins = RowOrigins(capacity: max(rowCapacity, count)) }
        count = 0
        return batch
    }
}
