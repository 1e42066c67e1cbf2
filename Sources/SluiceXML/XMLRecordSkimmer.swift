#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Finds where record elements end, fast and forgivingly, without decoding them: the framer uses it to cut a
/// stream into chunks of whole records, and the decoder to step over a record it rejected.
///
/// It tracks open elements by name and recovers as an HTML reader does: an end tag closes the nearest open
/// element of its name (a stray one is ignored), and a record start tag directly inside a record means the
/// earlier record was never closed, so a boundary is placed before it. A broken record therefore costs only
/// itself, and chunks stay small however damaged the input is.
public struct XMLRecordSkimmer: Sendable {
    /// The record element's name (`release`).
    public let recordName: [UInt8]
    /// The container's name (`releases`): only its end tag ends the records; another end tag at container
    /// level is a stray one, skipped. Empty: any end tag at container level ends them.
    public let containerName: [UInt8]

    /// Creates a skimmer for records named `recordName` inside `containerName`.
    public init(recordName: String, containerName: String = "") {
        self.recordName = Array(recordName.utf8)
        self.containerName = Array(containerName.utf8)
    }

    /// What a scan found.
    public struct Boundary: Equatable, Sendable {
        /// Offset just past the last whole item (element, comment, text) at container level.
        public var cut: Int
        /// Whether the container's end tag was seen (everything after it is the epilogue).
        public var containerEnded: Bool
    }

    /// Whether the end-tag name starting at `p[at]` (in `p[0..<n]`) is the container's: its bytes, then the
    /// end of the name. Always true without a container name.
    func endsContainer(_ p: UnsafePointer<UInt8>, _ at: Int, _ n: Int) -> Bool {
        let k = containerName.count
        if k == 0 { return true }
        guard at + k <= n, containerName.withUnsafeBufferPointer({ XMLText.same(p + at, $0.baseAddress!, k) }) else {
            return false
        }
        let next = at + k
        return next == n || p[next] <= 0x20 || p[next] == UInt8(ascii: ">") || p[next] == UInt8(ascii: "/")
    }

    /// Past this many bytes, a record whose end the record tags do not show is cut where the full scan
    /// recovers (``scan(_:from:firstOnly:)``), so a broken record never holds more than this in memory. Below
    /// it, the framer waits for more input instead, so that where chunks are cut never changes how a broken
    /// record is read.
    public static let recoveryLimit = 32 << 20

    /// The end of the last whole item in `buffer` (which begins at container level): the framer's cut. Items
    /// are found one after another with ``itemEnd(_:at:recover:)``, exactly as the decoder steps over them, so
    /// every cut is a place the decoder reaches reading the whole input. Returns 0 when no item ends in it.
    public func lastItemEnd(_ buffer: UnsafeRawBufferPointer) -> Int {
        guard let raw = buffer.baseAddress else { return 0 }
        let p = raw.assumingMemoryBound(to: UInt8.self)
        let recover = buffer.count >= Self.recoveryLimit
        var cut = 0
        while let lt = Self.nextLessThan(p, cut, buffer.count), let end = itemEnd(buffer, at: lt, recover: recover) {
            cut = end
        }
        return cut
    }

    /// The end of the item whose `<` is at `start` in `buffer`, at container level: a record ends where its
    /// record tags balance (``firstRecordEnd(_:from:)``), or with `recover` where the full scan sees it end;
    /// anything else (an element of another name, a comment, a declaration, an end tag) where the full scan
    /// sees it end. Nil when it does not end in the buffer (yet).
    public func itemEnd(_ buffer: UnsafeRawBufferPointer, at start: Int, recover: Bool) -> Int? {
        if isRecordStart(buffer, at: start) {
            let end = firstRecordEnd(buffer, from: start)
            if end > 0 { return end }
            if !recover { return nil }
        }
        let cut = scan(buffer, from: start, firstOnly: true).cut
        return cut > start ? cut : nil
    }

    /// Whether a record's start tag begins at `at` (its `<`, then the record name, then `>`, `/` or a space).
    public func isRecordStart(_ buffer: UnsafeRawBufferPointer, at: Int) -> Bool {
        let k = recordName.count
        guard k > 0, at + k + 2 <= buffer.count, let raw = buffer.baseAddress else { return false }
        let p = raw.assumingMemoryBound(to: UInt8.self)
        guard p[at] == UInt8(ascii: "<") else { return false }
        let d = p[at + 1 + k]
        return (d == UInt8(ascii: ">") || d == UInt8(ascii: "/") || d <= 0x20)
            && recordName.withUnsafeBufferPointer { XMLText.same(p + at + 1, $0.baseAddress!, k) }
    }

    /// The end of the record that starts at `start` (its start tag's `<`), found by looking only at tags named
    /// like the record (their nesting depth), comments, CDATA and processing instructions — several times
    /// cheaper than ``scan(_:from:firstOnly:)``. 0 when it does not end in the buffer by the record tags alone
    /// (a record longer than the buffer, or a broken one).
    public func firstRecordEnd(_ buffer: UnsafeRawBufferPointer, from start: Int) -> Int {
        guard let raw = buffer.baseAddress, buffer.count > start else { return 0 }
        let p = raw.assumingMemoryBound(to: UInt8.self)
        let n = buffer.count
        let k = recordName.count
        guard k > 0 else { return 0 }
        return recordName.withUnsafeBufferPointer { nameBuffer -> Int in
            let name = nameBuffer.baseAddress!
            let first = name[0]
            var depth = 0
            var i = start
            while i < n {
                guard let lt = Self.nextLessThan(p, i, n) else { break }
                guard lt + k + 2 < n else { break }
                let c = p[lt + 1]
                if c == UInt8(ascii: "/") {
                    if p[lt + 2] == first && XMLText.same(p + lt + 2, name, k) {
                        let d = p[lt + 2 + k]
                        if d == UInt8(ascii: ">") || d <= 0x20 {
                            guard let gt = memchr(p + lt + 2 + k, Int32(UInt8(ascii: ">")), n - lt - 2 - k) else {
                                break
                            }
                            i = UnsafeRawPointer(gt) - raw + 1
                            if depth > 0 {
                                depth -= 1
                                if depth == 0 { return i }
                            }
                            continue
                        }
                    }
                    i = lt + 2
                } else if c == UInt8(ascii: "!") {
                    guard let e = Self.declarationEnd(p, lt, n) else { break }
                    i = e
                } else if c == UInt8(ascii: "?") {
                    guard let e = XMLText.find("?>", in: p, from: lt + 2, end: n) else { break }
                    i = e + 2
                } else if c == first && XMLText.same(p + lt + 1, name, k) {
                    let d = p[lt + 1 + k]
                    guard d == UInt8(ascii: ">") || d == UInt8(ascii: "/") || d <= 0x20 else {
                        i = lt + 1
                        continue
                    }
                    // A record start tag: find its end outside quoted values; `/>` closes it at once.
                    guard let gt = Self.tagEnd(p, lt + 1 + k, n) else { break }
                    i = gt + 1
                    if p[gt - 1] == UInt8(ascii: "/") {
                        if depth == 0 { return i }
                    } else {
                        depth += 1
                    }
                } else {
                    i = lt + 1
                }
            }
            return 0
        }
    }

    /// The offset just past the comment, CDATA section or declaration whose `<!` is at `lt`, read as the scanner
    /// reads it (a DOCTYPE's internal subset may hold `>`); nil when it does not end in `p[0..<n]`, or when too
    /// few bytes are there to tell which it is. A declaration of another kind ends at its `>` or before the next
    /// `<`, so that a broken one never swallows what follows.
    static func declarationEnd(_ p: UnsafePointer<UInt8>, _ lt: Int, _ n: Int) -> Int? {
        guard lt + 4 <= n else { return nil }
        if p[lt + 2] == UInt8(ascii: "-") && p[lt + 3] == UInt8(ascii: "-") {
            return XMLText.find("-->", in: p, from: lt + 4, end: n).map { $0 + 3 }
        }
        if p[lt + 2] == UInt8(ascii: "[") || p[lt + 2] == UInt8(ascii: "D") {
            // CDATA or DOCTYPE, maybe: wait until the keyword is there to tell.
            guard lt + 9 <= n else { return nil }
            if memcmp(p + lt, "<![CDATA[", 9) == 0 {
                return XMLText.find("]]>", in: p, from: lt + 9, end: n).map { $0 + 3 }
            }
            if memcmp(p + lt, "<!DOCTYPE", 9) == 0 { return XMLScanner.doctypeEnd(p, lt, n) }
        }
        var q = lt + 2
        while q < n {
            if p[q] == UInt8(ascii: ">") { return q + 1 }
            if p[q] == UInt8(ascii: "<") { return q }
            q += 1
        }
        return nil
    }

    /// The end of the end tag whose `</` is at `lt`, as the skimmer reads it between records: just past its
    /// `>`, or at the `<` that comes first (a broken end tag, which must not swallow the tag after it); nil when
    /// neither is in `p[0..<n]`. The second value tells whether the tag is whole (ends with `>`).
    static func endTagEnd(_ p: UnsafePointer<UInt8>, _ lt: Int, _ n: Int) -> (end: Int, whole: Bool)? {
        var q = lt + 2
        while q < n {
            if p[q] == UInt8(ascii: ">") { return (q + 1, true) }
            if p[q] == UInt8(ascii: "<") { return (q, false) }
            q += 1
        }
        return nil
    }

    /// The offset of the `>` that ends a tag, searching `p[from..<end]` outside quoted attribute values.
    static func tagEnd(_ p: UnsafePointer<UInt8>, _ from: Int, _ end: Int) -> Int? {
        var q = from
        while q < end {
            let b = p[q]
            if b == UInt8(ascii: ">") { return q }
            if b == UInt8(ascii: "\"") || b == UInt8(ascii: "'") {
                guard let e = memchr(p + q + 1, Int32(b), end - q - 1) else { return nil }
                q = UnsafeRawPointer(e).assumingMemoryBound(to: UInt8.self) - p
            }
            q += 1
        }
        return nil
    }

    /// The offset of the next `<` in `p[from..<end]`, eight bytes at a time (tags are a few bytes apart, too
    /// close for a `memchr` call each to pay off).
    @inline(__always)
    static func nextLessThan(_ p: UnsafePointer<UInt8>, _ from: Int, _ end: Int) -> Int? {
        var i = from
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let pattern: UInt64 = 0x3C3C_3C3C_3C3C_3C3C
        while i + 8 <= end {
            let x = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self) ^ pattern
            let t = (x &- ones) & ~x & highs
            if t != 0 { return i + t.trailingZeroBitCount / 8 }
            i += 8
        }
        while i < end {
            if p[i] == UInt8(ascii: "<") { return i }
            i += 1
        }
        return nil
    }

    /// Scans `buffer[start...]`, which begins at container level, and returns the last boundary, or with
    /// `firstOnly` the boundary after the first complete item (element, comment, declaration, stray end tag).
    ///
    /// Between records, the container's own start and end tags are items like any other: a stream of several
    /// documents (`<releases>…</releases><releases>…`) reads as one run of records.
    public func scan(_ buffer: UnsafeRawBufferPointer, from start: Int, firstOnly: Bool = false) -> Boundary {
        guard let raw = buffer.baseAddress, start < buffer.count else {
            return Boundary(cut: start, containerEnded: false)
        }
        let p = raw.assumingMemoryBound(to: UInt8.self)
        let n = buffer.count
        var stack: [(Int, Int)] = []
        stack.reserveCapacity(32)
        var cut = start
        var ended = false
        var i = start
        func findByte(_ b: UInt8, _ from: Int) -> Int? {
            guard from < n, let r = memchr(p + from, Int32(b), n - from) else { return nil }
            return UnsafeRawPointer(r) - raw
        }
        func nameEnd(_ q0: Int) -> Int {
            var q = q0
            while q < n {
                let c = p[q]
                if XMLText.endsTagName(c) { break }
                q += 1
            }
            return q
        }
        func isRecord(_ s: Int, _ e: Int) -> Bool {
            e - s == recordName.count
                && recordName.withUnsafeBufferPointer { memcmp(p + s, $0.baseAddress!, e - s) == 0 }
        }
        func isContainer(_ s: Int, _ e: Int) -> Bool {
            !containerName.isEmpty && e - s == containerName.count
                && containerName.withUnsafeBufferPointer { memcmp(p + s, $0.baseAddress!, e - s) == 0 }
        }
        while let lt = findByte(UInt8(ascii: "<"), i) {
            guard lt + 1 < n else { break }
            let c = p[lt + 1]
            if c == UInt8(ascii: "!") {
                guard let e = Self.declarationEnd(p, lt, n) else { break }
                i = e
                if stack.isEmpty {
                    cut = i
                    if firstOnly { break }
                }
                continue
            }
            if c == UInt8(ascii: "?") {
                guard let e = XMLText.find("?>", in: p, from: lt + 2, end: n) else { break }
                i = e + 2
                if stack.isEmpty {
                    cut = i
                    if firstOnly { break }
                }
                continue
            }
            if c == UInt8(ascii: "/") {
                let ns = lt + 2
                let ne = nameEnd(ns)
                if stack.isEmpty {
                    // Between records: the container's end tag, or a stray one left by a broken record. Either
                    // way an item of its own, up to its '>' (or the '<' that comes first: a broken end tag).
                    guard let (e, whole) = Self.endTagEnd(p, lt, n) else { break }
                    if whole && endsContainer(p, ns, n) { ended = true }
                    i = e
                    cut = i
                    if firstOnly { break }
                    continue
                }
                guard let gt = findByte(UInt8(ascii: ">"), ne) else { break }
                i = gt + 1
                var k = stack.count - 1
                while k >= 0 {
                    let (s, e) = stack[k]
                    if e - s == ne - ns && memcmp(p + s, p + ns, e - s) == 0 { break }
                    k -= 1
                }
                if k >= 0 {
                    stack.removeSubrange(k...)
                    if stack.isEmpty {
                        cut = i
                        if firstOnly { break }
                    }
                }
                continue
            }
            // A start tag: find its '>' outside quoted attribute values.
            let ns = lt + 1
            let ne = nameEnd(ns)
            guard let gt = Self.tagEnd(p, ne, n) else { break }
            if !stack.isEmpty && isRecord(ns, ne)
                && (stack.count == 1 && isRecord(stack[0].0, stack[0].1)
                    || !stack.contains(where: { isRecord($0.0, $0.1) }))
            {
                // A record inside a record: the previous one was never closed. Or a record start while only
                // unclosed junk is open at container level (no record is): the junk ends here. Either way, a
                // boundary, so that a broken element never swallows the records after it.
                cut = lt
                stack.removeAll(keepingCapacity: true)
                if firstOnly { break }
            }
            i = gt + 1
            if stack.isEmpty && isContainer(ns, ne) {
                // The container's start tag between records (a second document): an item that opens nothing.
                cut = i
                if firstOnly { break }
            } else if p[gt - 1] == UInt8(ascii: "/") {
                if stack.isEmpty {
                    cut = i
                    if firstOnly { break }
                }
            } else {
                stack.append((ns, ne))
            }
        }
        return Boundary(cut: cut, containerEnded: ended)
    }
}
