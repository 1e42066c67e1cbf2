import Crypto
import SluiceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

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
    var capacity: Int

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

    /// Appends `p[0..<n]` as a quoted JSON string (Core's ``JSONText/forEachQuotedByte(_:_:)`` rule).
    mutating func appendJSONString(_ p: UnsafePointer<UInt8>, _ n: Int) {
        JSONText.forEachQuotedByte(UnsafeBufferPointer(start: p, count: n)) { append($0) }
    }
}
