#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A growable columnar buffer for one field.
///
/// Fixed-width types live in one contiguous buffer of 8-byte slots (bools use the same slot width);
/// variable-width types (string, bytes, json) use one byte buffer plus `count + 1` 32-bit offsets, as in
/// Arrow. Nulls are a validity bitmap allocated at the first null. Appending never allocates per value:
/// buffers grow geometrically.
///
/// A column is written by one thread and then handed over, unchanged, to others; it is `Sendable` under
/// that contract (the runtime never shares a column that is still being appended to).
public final class Column: @unchecked Sendable {
    /// The field type this column stores.
    public let type: FieldType
    /// The number of values (including nulls).
    @exclusivity(unchecked) public private(set) var count: Int = 0
    /// The number of nulls.
    @exclusivity(unchecked) public private(set) var nullCount: Int = 0

    @exclusivity(unchecked) private var capacity: Int
    @exclusivity(unchecked) private var slots: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) private var offsets: UnsafeMutablePointer<Int32>?
    @exclusivity(unchecked) private var data: UnsafeMutablePointer<UInt8>?
    @exclusivity(unchecked) private var dataCapacity: Int = 0
    @exclusivity(unchecked) private var validity: UnsafeMutablePointer<UInt64>?

    /// Creates an empty column with room for `capacity` values (and `byteCapacity` bytes of variable data).
    public init(type: FieldType, capacity: Int = 1024, byteCapacity: Int = 0) {
        self.type = type
        self.capacity = Swift.max(capacity, 16)
        if type.isFixedWidth {
            slots = .allocate(capacity: self.capacity)
        } else {
            slots = .allocate(capacity: 1)
            let o = UnsafeMutablePointer<Int32>.allocate(capacity: self.capacity + 1)
            o[0] = 0
            offsets = o
            dataCapacity = Swift.max(byteCapacity, self.capacity * 8)
            data = .allocate(capacity: dataCapacity)
        }
    }

    deinit {
        slots.deallocate()
        offsets?.deallocate()
        data?.deallocate()
        validity?.deallocate()
    }

    var slotsPointer: UnsafeMutablePointer<UInt64> { slots }
    var offsetsPointer: UnsafeMutablePointer<Int32>? { offsets }
    var dataPointer: UnsafeMutablePointer<UInt8>? { data }
    var validityPointer: UnsafeMutablePointer<UInt64>? { validity }

    /// Bytes held by this column's buffers (capacity, not just used bytes).
    public var allocatedBytes: Int {
        var n = type.isFixedWidth ? capacity * 8 : (capacity + 1) * 4 + dataCapacity
        if validity != nil { n += (capacity + 63) / 64 * 8 }
        return n
    }

    /// Bytes of variable-width data used so far (0 for fixed-width columns).
    public var dataCount: Int { offsets.map { Int($0[count]) } ?? 0 }

    @inline(__always)
    private func reserveSlot() {
        if count == capacity { grow(to: capacity * 2) }
    }

    private func grow(to newCapacity: Int) {
        if type.isFixedWidth {
            let s = UnsafeMutablePointer<UInt64>.allocate(capacity: newCapacity)
            s.update(from: slots, count: count)
            slots.deallocate()
            slots = s
        } else {
            let o = UnsafeMutablePointer<Int32>.allocate(capacity: newCapacity + 1)
            o.update(from: offsets!, count: count + 1)
            offsets!.deallocate()
            offsets = o
        }
        if let v = validity {
            let words = (newCapacity + 63) / 64
            let nv = UnsafeMutablePointer<UInt64>.allocate(capacity: words)
            nv.initialize(repeating: ~0, count: words)
            nv.update(from: v, count: (capacity + 63) / 64)
            v.deallocate()
            validity = nv
        }
        capacity = newCapacity
    }

    @inline(__always)
    private func markValid() {
        if let v = validity { v[count >> 6] |= (1 << UInt64(count & 63)) }
    }

    /// Appends an `int64` or `timestamp` value.
    @inline(__always)
    public func append(int64 value: Int64) {
        reserveSlot()
        slots[count] = UInt64(bitPattern: value)
        markValid()
        count += 1
    }

    /// Appends a `float64` value.
    @inline(__always)
    public func append(double value: Double) {
        reserveSlot()
        slots[count] = value.bitPattern
        markValid()
        count += 1
    }

    /// Appends a `bool` value.
    @inline(__always)
    public func append(bool value: Bool) {
        reserveSlot()
        slots[count] = value ? 1 : 0
        markValid()
        count += 1
    }

    /// Appends a variable-width value (string, bytes or json) by copying `bytes`.
    @inline(__always)
    public func append(bytes: UnsafeRawBufferPointer) {
        let start = beginBytes(reserving: bytes.count)
        if bytes.count > 0 {
            (start).update(from: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        }
        endBytes(length: bytes.count)
    }

    /// Appends a string value.
    public func append(string: String) {
        var s = string
        s.withUTF8 { append(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Starts a variable-width value whose bytes the caller writes in place: returns a pointer with room for
    /// at least `reserving` bytes. Finish with ``endBytes(length:)``.
    @inline(__always)
    public func beginBytes(reserving n: Int) -> UnsafeMutablePointer<UInt8> {
        reserveSlot()
        let used = Int(offsets.unsafelyUnwrapped[count])
        if used + n > dataCapacity { growData(minimum: used + n) }
        return data.unsafelyUnwrapped + used
    }

    /// Completes a value started with ``beginBytes(reserving:)`` after writing `length` bytes.
    @inline(__always)
    public func endBytes(length: Int) {
        let o = offsets.unsafelyUnwrapped
        o[count + 1] = o[count] + Int32(length)
        markValid()
        count += 1
    }

    private func growData(minimum: Int) {
        var n = Swift.max(dataCapacity * 2, 1024)
        while n < minimum { n *= 2 }
        precondition(n <= Int(Int32.max), "a column's variable data exceeds 2 GiB; use smaller batches")
        let d = UnsafeMutablePointer<UInt8>.allocate(capacity: n)
        let used = Int(offsets.unsafelyUnwrapped[count])
        d.update(from: data!, count: used)
        data!.deallocate()
        data = d
        dataCapacity = n
    }

    /// Appends a null.
    public func appendNull() {
        reserveSlot()
        if validity == nil {
            let words = (capacity + 63) / 64
            let v = UnsafeMutablePointer<UInt64>.allocate(capacity: words)
            v.initialize(repeating: ~0, count: words)
            validity = v
        }
        validity.unsafelyUnwrapped[count >> 6] &= ~(1 << UInt64(count & 63))
        if type.isFixedWidth {
            slots[count] = 0
        } else {
            let o = offsets.unsafelyUnwrapped
            o[count + 1] = o[count]
        }
        nullCount += 1
        count += 1
    }

    /// Drops values past the first `newCount` (used to roll back a partly appended row).
    public func truncate(to newCount: Int) {
        precondition(newCount <= count)
        if let v = validity {
            for i in newCount..<count where v[i >> 6] & (1 << UInt64(i & 63)) == 0 {
                nullCount -= 1
                v[i >> 6] |= (1 << UInt64(i & 63))
            }
        }
        count = newCount
    }

    /// Removes every value, keeping the buffers for reuse.
    public func removeAll() {
        if let v = validity { v.update(repeating: ~0, count: (capacity + 63) / 64) }
        count = 0
        nullCount = 0
    }

    /// Whether the value at `index` is null.
    @inline(__always)
    public func isNull(_ index: Int) -> Bool {
        guard let v = validity else { return false }
        return v[index >> 6] & (1 << UInt64(index & 63)) == 0
    }

    /// The `int64` or `timestamp` value at `index` (0 when null).
    @inline(__always)
    public func int64(at index: Int) -> Int64 { Int64(bitPattern: slots[index]) }

    /// The `float64` value at `index` (0 when null).
    @inline(__always)
    public func double(at index: Int) -> Double { Double(bitPattern: slots[index]) }

    /// The `bool` value at `index` (false when null).
    @inline(__always)
    public func bool(at index: Int) -> Bool { slots[index] != 0 }

    /// The bytes of the variable-width value at `index`; valid while the column lives and is not appended to.
    @inline(__always)
    public func bytes(at index: Int) -> UnsafeRawBufferPointer {
        let o = offsets.unsafelyUnwrapped
        let start = Int(o[index])
        return UnsafeRawBufferPointer(start: data.unsafelyUnwrapped + start, count: Int(o[index + 1]) - start)
    }

    /// The string value at `index` (decoded as UTF-8; invalid sequences are repaired).
    public func string(at index: Int) -> String { String(decoding: bytes(at: index), as: UTF8.self) }

    /// A row-level view of the value at `index`, for transforms and tests (not for hot paths).
    public func value(at index: Int) -> Value {
        if isNull(index) { return .null }
        switch type {
        case .int64: return .int64(int64(at: index))
        case .timestamp: return .timestamp(int64(at: index))
        case .float64: return .float64(double(at: index))
        case .bool: return .bool(bool(at: index))
        case .string: return .string(string(at: index))
        case .json: return .json(string(at: index))
        case .bytes: return .bytes(Array(bytes(at: index)))
        }
    }

    /// Appends a row-level ``Value``, converting it where that is lossless (an integer into a `float64` or
    /// `timestamp` column, a string into a `json` or `bytes` column).
    ///
    /// - Throws: ``SluiceError`` (`.format`) when the value does not fit the column's type; nothing is
    ///   appended (a value is never silently turned into a null).
    public func append(_ value: Value) throws(SluiceError) {
        guard Self.fits(value, type) else {
            throw SluiceError(.format, "a \(value.typeName) value does not fit a \(type) column")
        }
        switch (value, type) {
        case (.null, _): appendNull()
        case (.int64(let v), .int64), (.timestamp(let v), .timestamp), (.int64(let v), .timestamp): append(int64: v)
        case (.int64(let v), .float64): append(double: Double(v))
        case (.float64(let v), .float64): append(double: v)
        case (.bool(let v), .bool): append(bool: v)
        case (.string(let s), .string), (.json(let s), .json), (.string(let s), .json): append(string: s)
        case (.bytes(let b), _) where !type.isFixedWidth: b.withUnsafeBytes { append(bytes: $0) }
        case (.string(let s), .bytes): append(string: s)
        default: appendNull()
        }
    }

    /// Whether ``append(_:)`` takes `value` into a column of `type`.
    static func fits(_ value: Value, _ type: FieldType) -> Bool {
        switch (value, type) {
        case (.null, _), (.int64, .int64), (.timestamp, .timestamp), (.int64, .timestamp), (.int64, .float64),
            (.float64, .float64), (.bool, .bool), (.string, .string), (.json, .json), (.string, .json),
            (.string, .bytes):
            return true
        case (.bytes, _): return !type.isFixedWidth
        default: return false
        }
    }

    /// Appends the value at `index` of `other` (same type), copying bytes.
    public func append(from other: Column, at index: Int) {
        if other.isNull(index) { return appendNull() }
        if type.isFixedWidth {
            reserveSlot()
            slots[count] = other.slots[index]
            markValid()
            count += 1
        } else {
            append(bytes: other.bytes(at: index))
        }
    }
}

/// One value, for row-level convenience (transforms, tests, error messages). Storage is always columnar.
public enum Value: Sendable, Hashable, CustomStringConvertible {
    /// A null.
    case null
    /// An integer.
    case int64(Int64)
    /// A float.
    case float64(Double)
    /// A boolean.
    case bool(Bool)
    /// A string.
    case string(String)
    /// Bytes.
    case bytes([UInt8])
    /// Microseconds since the Unix epoch, UTC.
    case timestamp(Int64)
    /// JSON text.
    case json(String)

    /// The kind of value, as a schema names it (`int64`, `string`, …), for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .int64: return "int64"
        case .float64: return "float64"
        case .bool: return "bool"
        case .string: return "string"
        case .bytes: return "bytes"
        case .timestamp: return "timestamp"
        case .json: return "json"
        }
    }

    /// The value as text, timestamps in RFC 3339.
    public var description: String {
        switch self {
        case .null: return "null"
        case .int64(let v): return String(v)
        case .float64(let v): return String(v)
        case .bool(let v): return String(v)
        case .string(let s), .json(let s): return s
        case .bytes(let b): return b.map { String($0, radix: 16) }.joined()
        case .timestamp(let t): return Timestamp.format(micros: t)
        }
    }
}

/// A read-only view of a column's buffers: plain pointers, no reference counting, for hot loops.
/// Valid while the column is alive and not appended to.
public struct ColumnView {
    @usableFromInline let slots: UnsafeMutablePointer<UInt64>
    @usableFromInline let offsets: UnsafeMutablePointer<Int32>?
    @usableFromInline let data: UnsafeMutablePointer<UInt8>?
    @usableFromInline let validity: UnsafeMutablePointer<UInt64>?

    init(
        slots: UnsafeMutablePointer<UInt64>, offsets: UnsafeMutablePointer<Int32>?, data: UnsafeMutablePointer<UInt8>?,
        validity: UnsafeMutablePointer<UInt64>?
    ) {
        self.slots = slots
        self.offsets = offsets
        self.data = data
        self.validity = validity
    }

    /// Whether the column has any null.
    @inlinable public var hasNulls: Bool { validity != nil }

    /// Whether the value at `i` is null.
    @inlinable @inline(__always)
    public func isNull(_ i: Int) -> Bool {
        guard let v = validity else { return false }
        return v[i >> 6] & (1 << UInt64(i & 63)) == 0
    }

    /// The 64-bit slot at `i` (int64/timestamp bits, float64 bits, or 0/1 for bool).
    @inlinable @inline(__always)
    public func slot(_ i: Int) -> UInt64 { slots[i] }

    /// The int64/timestamp at `i`.
    @inlinable @inline(__always)
    public func int64(_ i: Int) -> Int64 { Int64(bitPattern: slots[i]) }

    /// The float64 at `i`.
    @inlinable @inline(__always)
    public func double(_ i: Int) -> Double { Double(bitPattern: slots[i]) }

    /// Start pointer and length of the variable-width value at `i`.
    @inlinable @inline(__always)
    public func bytes(_ i: Int) -> (UnsafePointer<UInt8>, Int) {
        let o = offsets.unsafelyUnwrapped
        let s = Int(o[i])
        return (UnsafePointer(data.unsafelyUnwrapped + s), Int(o[i + 1]) - s)
    }
}

extension Column {
    /// A pointer view of the buffers for hot read loops.
    public var view: ColumnView {
        ColumnView(slots: slotsPointer, offsets: offsetsPointer, data: dataPointer, validity: validityPointer)
    }
}
