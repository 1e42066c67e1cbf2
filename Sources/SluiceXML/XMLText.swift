import SluiceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Decoding of XML character data: the five predefined entities, decimal and hexadecimal character
/// references, and trimming of insignificant whitespace.
public enum XMLText {
    /// A reference found at an `&`: the bytes it stands for and its length in the input.
    public struct Reference {
        /// The UTF-8 bytes it decodes to (1 to 4), packed little-endian.
        public var bytes: UInt32
        /// How many bytes (1 to 4) `bytes` holds.
        public var count: Int
        /// The length of the reference in the input, `&` to `;` inclusive.
        public var length: Int
    }

    /// The reference starting at `p[at]` (an `&`) and ending before `end`, or nil if it is not one of
    /// `&lt; &gt; &amp; &apos; &quot; &#N; &#xH;` (or names an invalid character).
    public static func reference(_ p: UnsafePointer<UInt8>, _ at: Int, _ end: Int) -> Reference? {
        var i = at + 1
        guard i < end else { return nil }
        if p[i] == UInt8(ascii: "#") {
            i += 1
            var hex = false
            if i < end && (p[i] == UInt8(ascii: "x")) {
                hex = true
                i += 1
            }
            var v: UInt32 = 0
            let digitsStart = i
            while i < end && p[i] != UInt8(ascii: ";") {
                let c = p[i]
                let d: UInt32
                if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") {
                    d = UInt32(c - UInt8(ascii: "0"))
                } else if hex && c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f") {
                    d = UInt32(c - UInt8(ascii: "a") + 10)
                } else if hex && c >= UInt8(ascii: "A") && c <= UInt8(ascii: "F") {
                    d = UInt32(c - UInt8(ascii: "A") + 10)
                } else {
                    return nil
                }
                v = v * (hex ? 16 : 10) + d
                if v > 0x10FFFF || i - digitsStart > 8 { return nil }
                i += 1
            }
            guard i < end, i > digitsStart else { return nil }
            // Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
            let valid =
                v == 0x9 || v == 0xA || v == 0xD || (v >= 0x20 && v <= 0xD7FF) || (v >= 0xE000 && v <= 0xFFFD)
                || (v >= 0x10000 && v <= 0x10FFFF)
            guard valid else { return nil }
            let (bytes, count) = utf8(v)
            return Reference(bytes: bytes, count: count, length: i + 1 - at)
        }
        let n = end - i
        func named(_ s: StaticString, _ c: UInt8) -> Reference? {
            let k = s.utf8CodeUnitCount
            guard n >= k, memcmp(p + i, s.utf8Start, k) == 0 else { return nil }
            return Reference(bytes: UInt32(c), count: 1, length: k + 1)
        }
        switch p[i] {
        case UInt8(ascii: "l"): return named("lt;", UInt8(ascii: "<"))
        case UInt8(ascii: "g"): return named("gt;", UInt8(ascii: ">"))
        case UInt8(ascii: "a"): return named("amp;", UInt8(ascii: "&")) ?? named("apos;", UInt8(ascii: "'"))
        case UInt8(ascii: "q"): return named("quot;", UInt8(ascii: "\""))
        default: return nil
        }
    }

    private static func utf8(_ v: UInt32) -> (UInt32, Int) {
        switch v {
        case 0..<0x80: return (v, 1)
        case 0x80..<0x800: return ((0xC0 | v >> 6) | (0x80 | v & 0x3F) << 8, 2)
        case 0x800..<0x10000:
            return ((0xE0 | v >> 12) | (0x80 | (v >> 6) & 0x3F) << 8 | (0x80 | v & 0x3F) << 16, 3)
        default:
            return (
                (0xF0 | v >> 18) | (0x80 | (v >> 12) & 0x3F) << 8 | (0x80 | (v >> 6) & 0x3F) << 16
                    | (0x80 | v & 0x3F) << 24, 4
            )
        }
    }

    /// Writes the decoded bytes of `p[s..<e]` to `out` (which has room for `e - s` bytes: decoding never
    /// lengthens text) and returns how many were written. An `&` that starts no reference is copied as is.
    public static func decode(
        _ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, into out: UnsafeMutablePointer<UInt8>
    ) -> Int {
        var i = s
        var o = 0
        while i < e {
            guard let r = memchr(p + i, Int32(UInt8(ascii: "&")), e - i) else {
                (out + o).update(from: p + i, count: e - i)
                return o + e - i
            }
            let a = UnsafeRawPointer(r).assumingMemoryBound(to: UInt8.self) - p
            (out + o).update(from: p + i, count: a - i)
            o += a - i
            if let ref = reference(p, a, e) {
                var b = ref.bytes
                for _ in 0..<ref.count {
                    out[o] = UInt8(truncatingIfNeeded: b)
                    b >>= 8
                    o += 1
                }
                i = a + ref.length
            } else {
                out[o] = UInt8(ascii: "&")
                o += 1
                i = a + 1
            }
        }
        return o
    }

    /// The span without leading and trailing XML whitespace (space, tab, CR, LF).
    @inline(__always)
    public static func trimmed(_ p: UnsafePointer<UInt8>, _ span: XMLSpan) -> XMLSpan {
        var s = span.start
        var e = span.end
        while s < e && isSpace(p[s]) { s += 1 }
        while e > s && isSpace(p[e - 1]) { e -= 1 }
        return XMLSpan(start: s, end: e, hasReferences: span.hasReferences)
    }

    /// Whether `p[span]` is whitespace only (or empty).
    @inline(__always)
    public static func isBlank(_ p: UnsafePointer<UInt8>, _ span: XMLSpan) -> Bool {
        var i = span.start
        while i < span.end {
            if !isSpace(p[i]) { return false }
            i += 1
        }
        return true
    }

    /// Whether `c` ends a tag's name as the skimmer reads names: a space or control byte, `>` or `/`.
    @inline(__always)
    public static func endsTagName(_ c: UInt8) -> Bool { c <= 0x20 || c == UInt8(ascii: ">") || c == UInt8(ascii: "/") }

    /// The name of the tag whose name starts at `start`, as text for a message: up to a byte that
    /// ends a name or a `<` (what a chunk cut may stop at), at most 64 bytes.
    public static func tagName(_ p: UnsafePointer<UInt8>, from start: Int, end: Int) -> String {
        var e = start
        while e < end && e < start + 64 && !endsTagName(p[e]) && p[e] != UInt8(ascii: "<") { e += 1 }
        return String(decoding: UnsafeBufferPointer(start: p + start, count: e - start), as: UTF8.self)
    }

    /// Whether `c` is XML whitespace.
    @inline(__always)
    public static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D }

    /// The offset of the first byte of `p[s..<e]` that is not valid UTF-8, or nil. ASCII runs are checked
    /// eight bytes at a time.
    public static func invalidUTF8(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Int? {
        var i = s
        while i < e {
            if i + 8 <= e {
                let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
                if w & 0x8080_8080_8080_8080 == 0 {
                    i += 8
                    continue
                }
            }
            let c = p[i]
            if c < 0x80 {
                i += 1
                continue
            }
            let n: Int
            var v: UInt32
            if c & 0xE0 == 0xC0 {
                n = 2
                v = UInt32(c & 0x1F)
            } else if c & 0xF0 == 0xE0 {
                n = 3
                v = UInt32(c & 0x0F)
            } else if c & 0xF8 == 0xF0 {
                n = 4
                v = UInt32(c & 0x07)
            } else {
                return i
            }
            guard i + n <= e else { return i }
            for k in 1..<n {
                let b = p[i + k]
                guard b & 0xC0 == 0x80 else { return i }
                v = v << 6 | UInt32(b & 0x3F)
            }
            let minimum: UInt32 = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000
            if v < minimum || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) { return i }
            i += n
        }
        return nil
    }

    /// Whether `a[0..<n]` equals `b[0..<n]` (``Bytes/equal(_:_:_:)``).
    @inline(__always)
    public static func same(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        Bytes.equal(a, b, n)
    }

    /// The offset of the first occurrence of `pattern` in `p[from..<end]`, or nil.
    public static func find(_ pattern: StaticString, in p: UnsafePointer<UInt8>, from: Int, end: Int) -> Int? {
        let k = pattern.utf8CodeUnitCount
        let first = Int32(pattern.utf8Start[0])
        var i = from
        while end - i >= k {
            guard let r = memchr(p + i, first, end - i - k + 1) else { return nil }
            let at = UnsafeRawPointer(r).assumingMemoryBound(to: UInt8.self) - p
            if memcmp(p + at, pattern.utf8Start, k) == 0 { return at }
            i = at + 1
        }
        return nil
    }

    /// The number of line feeds in `p[s..<e]`.
    public static func lineFeeds(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Int {
        var n = 0
        var i = s
        while i < e {
            guard let r = memchr(p + i, 0x0A, e - i) else { break }
            n += 1
            i = UnsafeRawPointer(r).assumingMemoryBound(to: UInt8.self) - p + 1
        }
        return n
    }
}
