/// A JSON syntax checker over bytes (RFC 8259), used to validate `json` values and skip nested values.
public enum JSONSyntax {
    /// The offset of the first non-whitespace byte at or after `i` (or `n`).
    @inline(__always)
    public static func skipWhitespace(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> Int {
        var i = i
        while i < n {
            let c = p[i]
            if c != 0x20 && c != 0x09 && c != 0x0A && c != 0x0D { break }
            i += 1
        }
        return i
    }

    /// Validates that `p[0..<n]` is exactly one JSON value (with optional surrounding whitespace).
    /// Returns the end of the value, or nil.
    public static func validate(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int? {
        let s = skipWhitespace(p, 0, n)
        guard let e = skipValue(p, s, n, depth: 0) else { return nil }
        return skipWhitespace(p, e, n) == n ? e : nil
    }

    /// Skips the JSON value starting at `i`; returns the offset just past it, or nil if it is invalid.
    public static func skipValue(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int, depth: Int) -> Int? {
        guard i < n, depth < 512 else { return nil }
        switch p[i] {
        case UInt8(ascii: "{"):
            var j = skipWhitespace(p, i + 1, n)
            if j < n && p[j] == UInt8(ascii: "}") { return j + 1 }
            while true {
                guard j < n, p[j] == UInt8(ascii: "\""), let k = skipString(p, j, n) else { return nil }
                j = skipWhitespace(p, k, n)
                guard j < n, p[j] == UInt8(ascii: ":") else { return nil }
                j = skipWhitespace(p, j + 1, n)
                guard let v = skipValue(p, j, n, depth: depth + 1) else { return nil }
                j = skipWhitespace(p, v, n)
                guard j < n else { return nil }
                if p[j] == UInt8(ascii: "}") { return j + 1 }
                guard p[j] == UInt8(ascii: ",") else { return nil }
                j = skipWhitespace(p, j + 1, n)
            }
        case UInt8(ascii: "["):
            var j = skipWhitespace(p, i + 1, n)
            if j < n && p[j] == UInt8(ascii: "]") { return j + 1 }
            while true {
                guard let v = skipValue(p, j, n, depth: depth + 1) else { return nil }
                j = skipWhitespace(p, v, n)
                guard j < n else { return nil }
                if p[j] == UInt8(ascii: "]") { return j + 1 }
                guard p[j] == UInt8(ascii: ",") else { return nil }
                j = skipWhitespace(p, j + 1, n)
            }
        case UInt8(ascii: "\""):
            return skipString(p, i, n)
        case UInt8(ascii: "t"): return literal(p, i, n, "true")
        case UInt8(ascii: "f"): return literal(p, i, n, "false")
        case UInt8(ascii: "n"): return literal(p, i, n, "null")
        default:
            return skipNumber(p, i, n)
        }
    }

    static func literal(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int, _ word: StaticString) -> Int? {
        let len = word.utf8CodeUnitCount
        guard i + len <= n else { return nil }
        let w = word.utf8Start
        for k in 0..<len where p[i + k] != w[k] { return nil }
        return i + len
    }

    /// Skips a string starting at the quote at `i`, checking escapes and UTF-8; returns the offset past the closing quote.
    public static func skipString(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> Int? {
        var j = i + 1
        var asciiOnly = true
        let start = j
        while j < n {
            let c = p[j]
            if c == UInt8(ascii: "\"") {
                if !asciiOnly && !ValueParsing.isValidUTF8(p + start, j - start) { return nil }
                return j + 1
            }
            if c < 0x20 { return nil }
            if c >= 0x80 { asciiOnly = false }
            if c == UInt8(ascii: "\\") {
                guard j + 1 < n else { return nil }
                switch p[j + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    j += 2
                case UInt8(ascii: "u"):
                    guard j + 6 <= n else { return nil }
                    for k in 2..<6 where hexValue(p[j + k]) == nil { return nil }
                    j += 6
                default: return nil
                }
                continue
            }
            j += 1
        }
        return nil
    }

    /// The value of a hex digit.
    @inline(__always)
    public static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case 48...57: return UInt32(c - 48)
        case 65...70: return UInt32(c - 55)
        case 97...102: return UInt32(c - 87)
        default: return nil
        }
    }

    /// Skips a number per the JSON grammar; returns the offset past it.
    public static func skipNumber(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> Int? {
        var j = i
        if j < n && p[j] == UInt8(ascii: "-") { j += 1 }
        guard j < n else { return nil }
        if p[j] == UInt8(ascii: "0") {
            j += 1
        } else if p[j] >= UInt8(ascii: "1") && p[j] <= UInt8(ascii: "9") {
            while j < n && p[j] &- 48 <= 9 { j += 1 }
        } else {
            return nil
        }
        if j < n && p[j] == UInt8(ascii: ".") {
            j += 1
            let s = j
            while j < n && p[j] &- 48 <= 9 { j += 1 }
            if j == s { return nil }
        }
        if j < n && (p[j] == UInt8(ascii: "e") || p[j] == UInt8(ascii: "E")) {
            j += 1
            if j < n && (p[j] == UInt8(ascii: "+") || p[j] == UInt8(ascii: "-")) { j += 1 }
            let s = j
            while j < n && p[j] &- 48 <= 9 { j += 1 }
            if j == s { return nil }
        }
        return j
    }
}
