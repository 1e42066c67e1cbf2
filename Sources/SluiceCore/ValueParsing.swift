#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Fast parsers for typed values from raw bytes, shared by the formats. None allocates.
public enum ValueParsing {
    /// Parses a base-10 integer (optional sign, digits only). Returns nil on anything else or on overflow.
    @inline(__always)
    public static func parseInt64(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int64? {
        if n == 0 { return nil }
        var i = 0
        var negative = false
        if p[0] == UInt8(ascii: "-") {
            negative = true
            i = 1
        } else if p[0] == UInt8(ascii: "+") {
            i = 1
        }
        if i == n { return nil }
        var v: UInt64 = 0
        while i < n {
            let d = p[i] &- 48
            if d > 9 { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(d))
            if o1 || o2 { return nil }
            v = a
            i += 1
        }
        if negative {
            if v > UInt64(Int64.max) + 1 { return nil }
            return v == UInt64(Int64.max) + 1 ? Int64.min : -Int64(v)
        }
        if v > UInt64(Int64.max) { return nil }
        return Int64(v)
    }

    private static let powersOf10: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
        1e19, 1e20, 1e21, 1e22,
    ]

    /// Parses a decimal floating-point number (`-12.5`, `1e-3`, `inf`, `nan`), correctly rounded.
    ///
    /// Exact cases (up to 15 significant digits and a power of ten up to 22) are computed directly;
    /// the rest go through `strtod` on a stack copy.
    @inline(__always)
    public static func parseDouble(_ p: UnsafePointer<UInt8>, _ n: Int) -> Double? {
        if n == 0 { return nil }
        var i = 0
        var negative = false
        if p[0] == UInt8(ascii: "-") {
            negative = true
            i = 1
        } else if p[0] == UInt8(ascii: "+") {
            i = 1
        }
        var mantissa: UInt64 = 0
        var digits = 0
        var exp10 = 0
        var sawDigit = false
        while i < n, p[i] &- 48 <= 9 {
            if digits < 19 {
                mantissa = mantissa &* 10 &+ UInt64(p[i] &- 48)
                if mantissa != 0 { digits += 1 }
            } else {
                exp10 += 1
                digits += 1
            }
            sawDigit = true
            i += 1
        }
        if i < n, p[i] == UInt8(ascii: ".") {
            i += 1
            while i < n, p[i] &- 48 <= 9 {
                if digits < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(p[i] &- 48)
                    if mantissa != 0 { digits += 1 }
                    exp10 -= 1
                } else {
                    digits += 1
                }
                sawDigit = true
                i += 1
            }
        }
        if !sawDigit { return slowParseDouble(p, n) }
        if i < n, p[i] | 0x20 == UInt8(ascii: "e") {
            i += 1
            var eneg = false
            if i < n, p[i] == UInt8(ascii: "-") || p[i] == UInt8(ascii: "+") {
                eneg = p[i] == UInt8(ascii: "-")
                i += 1
            }
            var e = 0
            var sawE = false
            while i < n, p[i] &- 48 <= 9 {
                if e < 100_000 { e = e * 10 + Int(p[i] &- 48) }
                sawE = true
                i += 1
            }
            if !sawE { return nil }
            exp10 += eneg ? -e : e
        }
        if i != n { return nil }
        if digits <= 15, exp10 >= -22, exp10 <= 22 {
            var v = Double(mantissa)
            if exp10 < 0 { v /= powersOf10[-exp10] } else { v *= powersOf10[exp10] }
            return negative ? -v : v
        }
        return slowParseDouble(p, n)
    }

    private static func slowParseDouble(_ p: UnsafePointer<UInt8>, _ n: Int) -> Double? {
        if n > 400 { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: n + 1) { buf in
            for k in 0..<n { buf[k] = CChar(bitPattern: p[k]) }
            buf[n] = 0
            var end: UnsafeMutablePointer<CChar>? = nil
            let v = strtod(buf.baseAddress!, &end)
            guard let end, end == buf.baseAddress! + n else { return nil }
            return v
        }
    }

    /// Parses `true`/`false`, `t`/`f`, `yes`/`no`, `y`/`n` and `1`/`0`, case-insensitively.
    @inline(__always)
    public static func parseBool(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool? {
        switch n {
        case 1:
            // Digits as they are: `| 0x20` folds the case of letters only (0x11 | 0x20 is "1").
            if p[0] == UInt8(ascii: "1") { return true }
            if p[0] == UInt8(ascii: "0") { return false }
            switch p[0] | 0x20 {
            case UInt8(ascii: "t"), UInt8(ascii: "y"): return true
            case UInt8(ascii: "f"), UInt8(ascii: "n"): return false
            default: return nil
            }
        case 2: return (p[0] | 0x20 == UInt8(ascii: "n") && p[1] | 0x20 == UInt8(ascii: "o")) ? false : nil
        case 3:
            return
                (p[0] | 0x20 == UInt8(ascii: "y") && p[1] | 0x20 == UInt8(ascii: "e")
                && p[2] | 0x20 == UInt8(ascii: "s"))
                ? true : nil
        case 4:
            return
                (p[0] | 0x20 == UInt8(ascii: "t") && p[1] | 0x20 == UInt8(ascii: "r")
                && p[2] | 0x20 == UInt8(ascii: "u")
                && p[3] | 0x20 == UInt8(ascii: "e")) ? true : nil
        case 5:
            return
                (p[0] | 0x20 == UInt8(ascii: "f") && p[1] | 0x20 == UInt8(ascii: "a")
                && p[2] | 0x20 == UInt8(ascii: "l")
                && p[3] | 0x20 == UInt8(ascii: "s") && p[4] | 0x20 == UInt8(ascii: "e")) ? false : nil
        default: return nil
        }
    }

    /// Validates UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF), with an ASCII fast path.
    @inline(__always)
    public static func isValidUTF8(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        var i = 0
        while i + 8 <= n {
            let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
            if w & 0x8080_8080_8080_8080 != 0 { break }
            i += 8
        }
        while i < n {
            let b = p[i]
            if b < 0x80 {
                i += 1
                continue
            }
            if b < 0xC2 { return false }
            if b < 0xE0 {
                guard i + 1 < n, p[i + 1] & 0xC0 == 0x80 else { return false }
                i += 2
            } else if b < 0xF0 {
                guard i + 2 < n, p[i + 1] & 0xC0 == 0x80, p[i + 2] & 0xC0 == 0x80 else { return false }
                if b == 0xE0 && p[i + 1] < 0xA0 { return false }
                if b == 0xED && p[i + 1] >= 0xA0 { return false }
                i += 3
            } else if b < 0xF5 {
                guard i + 3 < n, p[i + 1] & 0xC0 == 0x80, p[i + 2] & 0xC0 == 0x80, p[i + 3] & 0xC0 == 0x80 else {
                    return false
                }
                if b == 0xF0 && p[i + 1] < 0x90 { return false }
                if b == 0xF4 && p[i + 1] >= 0x90 { return false }
                i += 4
            } else {
                return false
            }
        }
        return true
    }
}

/// Timestamp parsing and formatting (UTC, microseconds since the Unix epoch).
public enum Timestamp {
    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    @inline(__always)
    public static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// The date of a day number since 1970-01-01.
    @inline(__always)
    public static func civilFromDays(_ z0: Int) -> (year: Int, month: Int, day: Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }

    @inline(__always)
    private static func digits(_ p: UnsafePointer<UInt8>, _ at: Int, _ count: Int) -> Int? {
        var v = 0
        for k in 0..<count {
            let d = p[at + k] &- 48
            if d > 9 { return nil }
            v = v * 10 + Int(d)
        }
        return v
    }

    /// Parses RFC 3339 / ISO-8601 (`2024-05-01T12:00:00.5Z`, `2024-05-01 12:00:00+02:00`, `2024-05-01`).
    /// A time without zone is taken as UTC.
    public static func parseISO8601(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int64? {
        guard n >= 10, p[4] == UInt8(ascii: "-"), p[7] == UInt8(ascii: "-"),
            let year = digits(p, 0, 4), let month = digits(p, 5, 2), let day = digits(p, 8, 2),
            (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year)
        else { return nil }
        var micros = Int64(daysFromCivil(year: year, month: month, day: day)) * 86_400_000_000
        if n == 10 { return micros }
        guard n >= 16, p[10] == UInt8(ascii: "T") || p[10] == UInt8(ascii: " ") || p[10] == UInt8(ascii: "t"),
            p[13] == UInt8(ascii: ":"), let hour = digits(p, 11, 2), let minute = digits(p, 14, 2), hour < 24,
            minute < 60
        else { return nil }
        var i = 16
        var second = 0
        if i < n, p[i] == UInt8(ascii: ":") {
            guard i + 3 <= n, let s = digits(p, i + 1, 2), s <= 60 else { return nil }
            second = min(s, 59)
            i += 3
        }
        micros += Int64(hour * 3600 + minute * 60 + second) * 1_000_000
        if i < n, p[i] == UInt8(ascii: ".") || p[i] == UInt8(ascii: ",") {
            i += 1
            var frac: Int64 = 0
            var scale: Int64 = 100_000
            let start = i
            while i < n, p[i] &- 48 <= 9 {
                frac += Int64(p[i] &- 48) * scale
                scale /= 10
                i += 1
            }
            if i == start { return nil }
            micros += frac
        }
        if i == n { return micros }
        switch p[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            return i + 1 == n ? micros : nil
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            let sign: Int64 = p[i] == UInt8(ascii: "+") ? 1 : -1
            guard i + 3 <= n, let oh = digits(p, i + 1, 2) else { return nil }
            var om = 0
            var j = i + 3
            if j < n {
                if p[j] == UInt8(ascii: ":") { j += 1 }
                guard j + 2 == n, let m = digits(p, j, 2) else { return nil }
                om = m
            }
            return micros - sign * Int64(oh * 3600 + om * 60) * 1_000_000
        default:
            return nil
        }
    }

    /// Parses a timestamp: RFC 3339 / ISO-8601, or a number of seconds since the epoch (with optional
    /// fraction). Integers of more than 11 digits are read as milliseconds, of more than 14 as microseconds.
    public static func parse(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int64? {
        if n >= 10, p[4] == UInt8(ascii: "-") { return parseISO8601(p, n) }
        if let v = ValueParsing.parseInt64(p, n) {
            let digitsCount = n - (p[0] == UInt8(ascii: "-") || p[0] == UInt8(ascii: "+") ? 1 : 0)
            if digitsCount > 14 { return v }
            if digitsCount > 11 { return v.multipliedReportingOverflow(by: 1000).overflow ? nil : v * 1000 }
            return v.multipliedReportingOverflow(by: 1_000_000).overflow ? nil : v * 1_000_000
        }
        if let d = ValueParsing.parseDouble(p, n), d.isFinite, abs(d) < 9.2e12 {
            return Int64((d * 1_000_000).rounded())
        }
        return nil
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// The length of ``format(micros:into:)``'s output.
    public static let formattedLength = 27

    /// Writes `YYYY-MM-DDTHH:MM:SS.ffffffZ` (27 bytes) into `out`.
    @inline(__always)
    public static func format(micros: Int64, into out: UnsafeMutablePointer<UInt8>) {
        var days = Int(micros / 86_400_000_000)
        var rem = micros % 86_400_000_000
        if rem < 0 {
            rem += 86_400_000_000
            days -= 1
        }
        let (y, m, d) = civilFromDays(days)
        let secs = Int(rem / 1_000_000)
        let frac = Int(rem % 1_000_000)
        @inline(__always) func put(_ v: Int, _ at: Int, _ width: Int) {
            var x = v
            var k = at + width - 1
            while k >= at {
                out[k] = UInt8(48 + x % 10)
                x /= 10
                k -= 1
            }
        }
        put(max(0, min(9999, y)), 0, 4)
        out[4] = UInt8(ascii: "-")
        put(m, 5, 2)
        out[7] = UInt8(ascii: "-")
        put(d, 8, 2)
        out[10] = UInt8(ascii: "T")
        put(secs / 3600, 11, 2)
        out[13] = UInt8(ascii: ":")
        put(secs / 60 % 60, 14, 2)
        out[16] = UInt8(ascii: ":")
        put(secs % 60, 17, 2)
        out[19] = UInt8(ascii: ".")
        put(frac, 20, 6)
        out[26] = UInt8(ascii: "Z")
    }

    /// The RFC 3339 text of a timestamp.
    public static func format(micros: Int64) -> String {
        String(unsafeUninitializedCapacity: formattedLength) { buf in
            format(micros: micros, into: buf.baseAddress!)
            return formattedLength
        }
    }
}

/// JSON text helpers.
public enum JSONText {
    /// Appends `bytes` as a JSON string literal (with quotes) to `out`, repairing invalid UTF-8.
    public static func appendQuoted(_ bytes: some Sequence<UInt8>, to out: inout [UInt8]) {
        let s = String(decoding: Array(bytes), as: UTF8.self)
        appendQuoted(s, to: &out)
    }

    /// Appends `s` as a JSON string literal (with quotes) to `out`.
    public static func appendQuoted(_ s: String, to out: inout [UInt8]) {
        var s = s
        s.withUTF8 { forEachQuotedByte($0) { out.append($0) } }
    }

    /// Emits the JSON string literal of `bytes` (with its quotes) byte by byte to `emit`: the one escaping
    /// rule of every JSON text Sluice writes — `"`, `\` and control characters escaped, every other byte as
    /// it is.
    @inlinable
    public static func forEachQuotedByte(_ bytes: UnsafeBufferPointer<UInt8>, _ emit: (UInt8) -> Void) {
        let hex: StaticString = "0123456789abcdef"
        emit(UInt8(ascii: "\""))
        for b in bytes {
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                emit(UInt8(ascii: "\\"))
                emit(b)
            case 10:
                emit(UInt8(ascii: "\\"))
                emit(UInt8(ascii: "n"))
            case 13:
                emit(UInt8(ascii: "\\"))
                emit(UInt8(ascii: "r"))
            case 9:
                emit(UInt8(ascii: "\\"))
                emit(UInt8(ascii: "t"))
            case 0..<32:
                emit(UInt8(ascii: "\\"))
                emit(UInt8(ascii: "u"))
                emit(UInt8(ascii: "0"))
                emit(UInt8(ascii: "0"))
                emit(hex.utf8Start[Int(b >> 4)])
                emit(hex.utf8Start[Int(b & 15)])
            default: emit(b)
            }
        }
        emit(UInt8(ascii: "\""))
    }

    /// `s` as a JSON string literal.
    public static func quoted(_ s: String) -> String {
        var out: [UInt8] = []
        appendQuoted(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

/// Small byte helpers shared by the formats.
public enum Bytes {
    /// Whether `n` bytes at `a` and `b` are equal, compared inline eight bytes at a time (the names and
    /// keys compared are short; a `memcmp` call costs more).
    @inline(__always)
    public static func equal(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        var i = 0
        while i + 8 <= n {
            if UnsafeRawPointer(a + i).loadUnaligned(as: UInt64.self)
                != UnsafeRawPointer(b + i).loadUnaligned(as: UInt64.self)
            {
                return false
            }
            i += 8
        }
        while i < n {
            if a[i] != b[i] { return false }
            i += 1
        }
        return true
    }

    /// Whether byte `b` occurs in `p[s..<e]`.
    @inline(__always)
    public static func contains(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, _ b: UInt8) -> Bool {
        var i = s
        while i < e {
            if p[i] == b { return true }
            i += 1
        }
        return false
    }

    /// The reject reason for a value that does not parse as `field`'s type, quoting at most 40 bytes of it.
    public static func mismatch(_ field: Field, _ p: UnsafePointer<UInt8>, _ n: Int) -> String {
        "field '\(field.name)': '\(shown(p, n))' is not a valid \(field.type.rawValue)"
    }

    /// A value as a reject reason quotes it: its first 40 bytes as text, `…` when there is more.
    public static func shown(_ p: UnsafePointer<UInt8>, _ n: Int) -> String {
        String(decoding: UnsafeBufferPointer(start: p, count: min(n, 40)), as: UTF8.self) + (n > 40 ? "…" : "")
    }

    /// The values that mean "missing" in numeric, boolean and timestamp columns of text formats when the user
    /// gave no null tokens: pyarrow's default list (`NA`, `N/A`, `NULL`, `null`, `NaN`, `nan`, `#N/A`, …)
    /// plus `\N` (PostgreSQL and MySQL dumps). A float column keeps `NaN` as the number NaN; string columns
    /// keep every one of them as text.
    public static let missingTokens: [[UInt8]] = [
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
        "NA", "NULL", "NaN", "None", "n/a", "nan", "null", "\\N",
    ].map { Array($0.utf8) }

    /// Whether `p[0..<n]` is one of ``missingTokens``.
    public static func isMissingToken(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        guard n <= 8 else { return false }
        return missingTokens.contains { t in
            t.count == n && t.withUnsafeBufferPointer { n == 0 || equal($0.baseAddress!, p, n) }
        }
    }
}
