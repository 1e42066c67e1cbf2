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

    /// Creates a skimmer for records named `recordName`.
    public init(recordName: String) { self.recordName = Array(recordName.utf8) }

    /// What a scan found.
    public struct Boundary: Equatable, Sendable {
        /// Offset just past the last whole item (element, comment, text) at container level.
        public var cut: Int
        /// Whether the container's end tag was seen (everything after it is the epilogue).
        public var containerEnded: Bool
    }

    /// Scans `buffer[start...]`, which begins at container level, and returns the last boundary, or with
    /// `firstOnly` the boundary after the first complete element.
    public func scan(_ buffer: UnsafeRawBufferPointer, from start: Int, firstOnly: Bool = false) -> Boundary {
        guard let raw = buffer.baseAddress, start < buffer.count else {
            return Boundary(cut: start, containerEnded: false)
        }
        let p = raw.assumingMemoryBound(to: UInt8.self)
        let n = buffer.count
        var stack: [(Int, Int)] = []
        stack.reserveCapacity(32)
        var cut = start
        var i = start
        func findByte(_ b: UInt8, _ from: Int) -> Int? {
            guard from < n, let r = memchr(p + from, Int32(b), n - from) else { return nil }
            return UnsafeRawPointer(r) - raw
        }
        func findString(_ s: StaticString, _ from: Int) -> Int? {
            XMLText.find(s, in: p, from: from, end: n)
        }
        func nameEnd(_ q0: Int) -> Int {
            var q = q0
            while q < n {
                let c = p[q]
                if c <= 0x20 || c == UInt8(ascii: ">") || c == UInt8(ascii: "/") { break }
                q += 1
            }
            return q
        }
        func isRecord(_ s: Int, _ e: Int) -> Bool {
            e - s == recordName.count
                && recordName.withUnsafeBufferPointer { memcmp(p + s, $0.baseAddress!, e - s) == 0 }
        }
        while let lt = findByte(UInt8(ascii: "<"), i) {
            guard lt + 1 < n else { break }
            let c = p[lt + 1]
            if c == UInt8(ascii: "!") {
                if lt + 4 <= n && p[lt + 2] == UInt8(ascii: "-") && p[lt + 3] == UInt8(ascii: "-") {
                    guard let e = findString("-->", lt + 4) else { break }
                    i = e + 3
                } else if lt + 9 <= n && memcmp(p + lt, "<![CDATA[", 9) == 0 {
                    guard let e = findString("]]>", lt + 9) else { break }
                    i = e + 3
                } else {
                    guard let e = findByte(UInt8(ascii: ">"), lt + 2) else { break }
                    i = e + 1
                }
                if stack.isEmpty { cut = i }
                continue
            }
            if c == UInt8(ascii: "?") {
                guard let e = findString("?>", lt + 2) else { break }
                i = e + 2
                if stack.isEmpty { cut = i }
                continue
            }
            if c == UInt8(ascii: "/") {
                let ns = lt + 2
                let ne = nameEnd(ns)
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
                        if firstOnly { return Boundary(cut: cut, containerEnded: false) }
                    }
                } else if stack.isEmpty {
                    // The container's end tag: the records are over.
                    return Boundary(cut: i, containerEnded: true)
                }
                continue
            }
            // A start tag: find its '>' outside quoted attribute values.
            let ns = lt + 1
            let ne = nameEnd(ns)
            var q = ne
            var gt = -1
            while q < n {
                let b = p[q]
                if b == UInt8(ascii: ">") {
                    gt = q
                    break
                }
                if b == UInt8(ascii: "\"") || b == UInt8(ascii: "'") {
                    guard let e = findByte(b, q + 1) else { break }
                    q = e
                }
                q += 1
            }
            guard gt >= 0 else { break }
            if stack.count == 1 && isRecord(ns, ne) && isRecord(stack[0].0, stack[0].1) {
                // A record inside a record: the previous one was never closed. End it here.
                cut = lt
                stack.removeAll(keepingCapacity: true)
                if firstOnly { return Boundary(cut: cut, containerEnded: false) }
            }
            i = gt + 1
            if p[gt - 1] == UInt8(ascii: "/") {
                if stack.isEmpty {
                    cut = i
                    if firstOnly { return Boundary(cut: cut, containerEnded: false) }
                }
            } else {
                stack.append((ns, ne))
            }
        }
        return Boundary(cut: cut, containerEnded: false)
    }
}
