#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A byte range of the input, with whether it holds entity or character references to decode.
public struct XMLSpan: Sendable, Equatable {
    /// Offset of the first byte.
    public var start: Int
    /// Offset just past the last byte.
    public var end: Int
    /// Whether the bytes may contain `&` (references to decode, or a bare `&` in tolerant mode). Text
    /// events of a tolerant scanner always say true: looking is left to the decoding.
    public var hasReferences: Bool

    /// Creates a span.
    public init(start: Int, end: Int, hasReferences: Bool = false) {
        self.start = start
        self.end = end
        self.hasReferences = hasReferences
    }

    /// Length in bytes.
    @inlinable public var count: Int { end - start }
}

/// An attribute of the element just started: its name and raw value (without quotes).
public struct XMLAttribute: Sendable, Equatable {
    /// The name.
    public var name: XMLSpan
    /// The value between the quotes, not yet decoded.
    public var value: XMLSpan
}

/// What ``XMLScanner/next()`` found.
public enum XMLEvent: Sendable, Equatable {
    /// A start tag; its attributes are in ``XMLScanner/attributes`` until the next call. A self-closing tag
    /// (`<a/>`) is a start whose end event follows at once.
    case start(name: XMLSpan)
    /// An end tag (or the end of a self-closing tag).
    case end(name: XMLSpan)
    /// Character data between tags, raw (decode with ``XMLText``).
    case text(XMLSpan)
    /// The contents of a CDATA section, taken literally.
    case cdata(XMLSpan)
    /// A comment (its contents).
    case comment(XMLSpan)
    /// A processing instruction or XML declaration (its contents).
    case processingInstruction(XMLSpan)
    /// A document type declaration (skipped).
    case doctype
    /// The end of the input.
    case endOfInput
}

/// A well-formedness error at a byte offset of the scanned buffer.
public struct XMLError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Offset of the offending byte in the scanned buffer.
    public var offset: Int
    /// What is wrong.
    public var reason: String
    /// The construct runs past the end of the scanned bytes: more input might complete it.
    public var incomplete: Bool

    /// Creates an error.
    public init(offset: Int, reason: String, incomplete: Bool = false) {
        self.offset = offset
        self.reason = reason
        self.incomplete = incomplete
    }

    /// The reason.
    public var description: String { reason }
}

/// A streaming pull parser over UTF-8 bytes: each ``next()`` returns the next event as byte spans of the
/// input, with no allocation per event. It checks that tags nest (an end tag must close the element it names),
/// that attributes are well formed and quoted with `"` or `'`, and, unless ``tolerant``, that every `&` starts a
/// reference. Text is returned raw; ``XMLText`` decodes the predefined entities and character references.
///
/// The scanner reads one in-memory buffer. Streams are cut into buffers of whole records by
/// ``XMLRecordSkimmer`` (as the runtime's framer does), so a dump of any size is read in flat memory.
public struct XMLScanner {
    /// The bytes being scanned.
    public let base: UnsafePointer<UInt8>
    /// The number of bytes.
    public let length: Int
    /// Offset of the next byte to read.
    public private(set) var position: Int
    /// Keep a bare `&` that starts no valid reference as text, rather than failing. Real dumps need this.
    public var tolerant: Bool
    /// The attributes of the element of the last ``XMLEvent/start(name:)``.
    public var attributes: ArraySlice<XMLAttribute> { attributeStorage[0..<attributeCount] }
    /// Storage reused from tag to tag (never shrunk, so a tag costs no allocation).
    private var attributeStorage: [XMLAttribute] = []
    private var attributeCount = 0
    /// Open elements' names, innermost at `depth - 1`.
    private let open = OpenElements()
    /// The number of open elements.
    public private(set) var depth = 0
    private var pendingEnd: XMLSpan?

    /// Creates a scanner over `buffer[start...]`, checking nesting relative to that point.
    public init(_ buffer: UnsafeRawBufferPointer, from start: Int = 0, tolerant: Bool = true) {
        base = (buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!).assumingMemoryBound(to: UInt8.self)
        length = buffer.count
        position = start
        self.tolerant = tolerant
        attributeStorage.reserveCapacity(16)
    }

    /// Calls `body` with the attributes of the element of the last ``XMLEvent/start(name:)``.
    @inline(__always)
    public func withAttributes<R>(_ body: (UnsafeBufferPointer<XMLAttribute>) -> R) -> R {
        attributeStorage.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[0..<attributeCount])) }
    }

    /// Moves the read position (to resynchronise after an error); forgets open elements.
    public mutating func reset(to offset: Int) {
        position = offset
        depth = 0
        pendingEnd = nil
    }

    /// Whether the bytes of `span` equal `name`.
    @inline(__always)
    public func equals(_ span: XMLSpan, _ name: [UInt8]) -> Bool {
        span.count == name.count
            && name.withUnsafeBufferPointer { XMLText.same(base + span.start, $0.baseAddress!, name.count) }
    }

    /// The bytes of `span` as a string (for errors and tests).
    public func string(_ span: XMLSpan) -> String {
        String(decoding: UnsafeBufferPointer(start: base + span.start, count: span.count), as: UTF8.self)
    }

    /// Returns the next event.
    /// - Throws: ``XMLError`` at the offending byte.
    public mutating func next() throws(XMLError) -> XMLEvent {
        if let end = pendingEnd {
            pendingEnd = nil
            depth -= 1
            return .end(name: end)
        }
        let p = position
        if p >= length { return .endOfInput }
        if base[p] != UInt8(ascii: "<") {
            let stop = XMLRecordSkimmer.nextLessThan(base, p, length) ?? length
            position = stop
            if tolerant {
                // Whether it holds an '&' is left to whoever decodes the text (most text is never kept).
                return .text(XMLSpan(start: p, end: stop, hasReferences: true))
            }
            let amp = find(UInt8(ascii: "&"), from: p, to: stop) != nil
            if amp { try checkReferences(p, stop) }
            return .text(XMLSpan(start: p, end: stop, hasReferences: amp))
        }
        guard p + 1 < length else { throw XMLError(offset: p, reason: "the input ends inside a tag", incomplete: true) }
        switch base[p + 1] {
        case UInt8(ascii: "/"):
            return try endTag(p)
        case UInt8(ascii: "!"):
            if has("<!--", at: p) {
                guard let e = find("-->", from: p + 4) else {
                    throw XMLError(offset: p, reason: "comment is not closed (no -->)", incomplete: true)
                }
                position = e + 3
                return .comment(XMLSpan(start: p + 4, end: e))
            }
            if has("<![CDATA[", at: p) {
                guard let e = find("]]>", from: p + 9) else {
                    throw XMLError(offset: p, reason: "CDATA section is not closed (no ]]>)", incomplete: true)
                }
                position = e + 3
                return .cdata(XMLSpan(start: p + 9, end: e))
            }
            if has("<!DOCTYPE", at: p) {
                position = try skipDoctype(p)
                return .doctype
            }
            throw XMLError(offset: p, reason: "'<!' starts neither a comment, CDATA nor DOCTYPE")
        case UInt8(ascii: "?"):
            guard let e = find("?>", from: p + 2) else {
                throw XMLError(offset: p, reason: "processing instruction is not closed (no ?>)", incomplete: true)
            }
            position = e + 2
            return .processingInstruction(XMLSpan(start: p + 2, end: e))
        default:
            return try startTag(p)
        }
    }

    /// Skips the rest of the element just started (its content and end tag).
    public mutating func skipElement() throws(XMLError) {
        let target = depth - 1
        while depth > target {
            if try next() == .endOfInput {
                throw XMLError(offset: length, reason: "the input ends inside an element", incomplete: true)
            }
        }
    }

    // MARK: - Tags

    @inline(__always)
    private mutating func push(_ name: XMLSpan) throws(XMLError) {
        guard depth < OpenElements.capacity else {
            throw XMLError(offset: name.start - 1, reason: "elements nest deeper than \(OpenElements.capacity)")
        }
        open.spans[depth] = name
        depth += 1
    }

    @inline(__always)
    private static func isSpace(_ c: UInt8) -> Bool {
        c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D
    }

    /// Bytes that end a name: 0x00–0x20, `"`, `'`, `/`, `<`, `=`, `>` — as a 128-bit mask (bytes ≥ 0x80 never do).
    private static let nameEndLow: UInt64 =
        0x1_FFFF_FFFF | 1 << 0x22 | 1 << 0x27 | 1 << 0x2F | 1 << 0x3C | 1 << 0x3D | 1 << 0x3E

    @inline(__always)
    private static func endsName(_ c: UInt8) -> Bool {
        c < 64 && (nameEndLow >> UInt64(c)) & 1 != 0
    }

    @inline(__always)
    private static func startsName(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || c == UInt8(ascii: "_") || c == UInt8(ascii: ":") || c >= 0x80
    }

    private func name(at p: Int) throws(XMLError) -> Int {
        guard p < length else { throw XMLError(offset: p, reason: "the input ends inside a tag", incomplete: true) }
        guard Self.startsName(base[p]) else {
            throw XMLError(offset: p, reason: "'\(Self.shown(base[p]))' cannot start a name")
        }
        var q = p + 1
        while q < length && !Self.endsName(base[q]) { q += 1 }
        return q
    }

    private static func shown(_ c: UInt8) -> String {
        c >= 0x21 && c < 0x7F ? String(UnicodeScalar(c)) : "byte 0x" + String(c, radix: 16, uppercase: true)
    }

    private mutating func startTag(_ p: Int) throws(XMLError) -> XMLEvent {
        let nameEnd = try name(at: p + 1)
        let tagName = XMLSpan(start: p + 1, end: nameEnd)
        attributeCount = 0
        var q = nameEnd
        while true {
            let before = q
            while q < length && Self.isSpace(base[q]) { q += 1 }
            guard q < length else {
                throw XMLError(offset: p, reason: "tag <\(string(tagName))> is not closed", incomplete: true)
            }
            let c = base[q]
            if c == UInt8(ascii: ">") {
                position = q + 1
                try push(tagName)
                return .start(name: tagName)
            }
            if c == UInt8(ascii: "/") {
                guard q + 1 < length, base[q + 1] == UInt8(ascii: ">") else {
                    throw XMLError(
                        offset: q, reason: "'/' in tag <\(string(tagName))> is not followed by '>'",
                        incomplete: q + 1 >= length)
                }
                position = q + 2
                try push(tagName)
                pendingEnd = tagName
                return .start(name: tagName)
            }
            if q == before {
                throw XMLError(offset: q, reason: "attributes of <\(string(tagName))> must be separated by spaces")
            }
            let attrEnd = try name(at: q)
            let attrName = XMLSpan(start: q, end: attrEnd)
            q = attrEnd
            while q < length && Self.isSpace(base[q]) { q += 1 }
            guard q < length, base[q] == UInt8(ascii: "=") else {
                throw XMLError(
                    offset: q, reason: "attribute '\(string(attrName))' of <\(string(tagName))> has no '=' and value",
                    incomplete: q >= length)
            }
            q += 1
            while q < length && Self.isSpace(base[q]) { q += 1 }
            guard q < length, base[q] == UInt8(ascii: "\"") || base[q] == UInt8(ascii: "'") else {
                throw XMLError(
                    offset: q, reason: "the value of attribute '\(string(attrName))' must be quoted with \" or '",
                    incomplete: q >= length)
            }
            // One pass over the (short) value: its closing quote, and whether it holds '<' or '&'.
            let quote = base[q]
            var close = q + 1
            var amp = false
            while close < length {
                let b = base[close]
                if b == quote { break }
                if b == UInt8(ascii: "<") {
                    throw XMLError(offset: q, reason: "'<' in the value of attribute '\(string(attrName))'")
                }
                if b == UInt8(ascii: "&") { amp = true }
                close += 1
            }
            guard close < length else {
                throw XMLError(
                    offset: q, reason: "the value of attribute '\(string(attrName))' is not closed", incomplete: true)
            }
            if amp && !tolerant { try checkReferences(q + 1, close) }
            let attribute = XMLAttribute(name: attrName, value: XMLSpan(start: q + 1, end: close, hasReferences: amp))
            if attributeCount < attributeStorage.count {
                attributeStorage[attributeCount] = attribute
            } else {
                attributeStorage.append(attribute)
            }
            attributeCount += 1
            q = close + 1
        }
    }

    private mutating func endTag(_ p: Int) throws(XMLError) -> XMLEvent {
        // Fast path: the end tag names the open element, as it almost always does.
        if depth > 0 {
            let top = open.spans[depth - 1]
            let e = p + 2 + top.count
            if e < length && base[e] == UInt8(ascii: ">") && XMLText.same(base + p + 2, base + top.start, top.count) {
                depth -= 1
                position = e + 1
                return .end(name: XMLSpan(start: p + 2, end: e))
            }
        }
        let nameEnd = try name(at: p + 2)
        let tagName = XMLSpan(start: p + 2, end: nameEnd)
        var q = nameEnd
        while q < length && Self.isSpace(base[q]) { q += 1 }
        guard q < length, base[q] == UInt8(ascii: ">") else {
            throw XMLError(
                offset: p, reason: "end tag </\(string(tagName))> is not closed with '>'", incomplete: q >= length)
        }
        guard depth > 0 else {
            throw XMLError(offset: p, reason: "end tag </\(string(tagName))> closes no open element")
        }
        let top = open.spans[depth - 1]
        guard top.count == tagName.count, XMLText.same(base + top.start, base + tagName.start, top.count) else {
            throw XMLError(
                offset: p, reason: "end tag </\(string(tagName))> does not match the open element <\(string(top))>")
        }
        depth -= 1
        position = q + 1
        return .end(name: tagName)
    }

    private func skipDoctype(_ p: Int) throws(XMLError) -> Int {
        guard let e = Self.doctypeEnd(base, p, length) else {
            throw XMLError(offset: p, reason: "DOCTYPE is not closed", incomplete: true)
        }
        return e
    }

    /// The offset just past the DOCTYPE declaration that starts at `p` (its `<!DOCTYPE`) in `base[0..<end]`:
    /// its `>` outside the internal subset's brackets and quoted strings; nil when it does not end there.
    static func doctypeEnd(_ base: UnsafePointer<UInt8>, _ p: Int, _ end: Int) -> Int? {
        var q = p + 9
        var bracket = false
        while q < end {
            let c = base[q]
            if c == UInt8(ascii: "[") {
                bracket = true
            } else if c == UInt8(ascii: "]") {
                bracket = false
            } else if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") {
                guard let e = memchr(base + q + 1, Int32(c), end - q - 1) else { return nil }
                q = UnsafeRawPointer(e).assumingMemoryBound(to: UInt8.self) - base
            } else if c == UInt8(ascii: ">") && !bracket {
                return q + 1
            }
            q += 1
        }
        return nil
    }

    /// Strict mode: every `&` in `[s, e)` must start a known entity or a character reference.
    private func checkReferences(_ s: Int, _ e: Int) throws(XMLError) {
        var i = s
        while let a = find(UInt8(ascii: "&"), from: i, to: e) {
            guard let r = XMLText.reference(base, a, e) else {
                throw XMLError(offset: a, reason: "'&' starts no known entity or character reference")
            }
            i = a + r.length
        }
    }

    // MARK: - Searching

    @inline(__always)
    func find(_ byte: UInt8, from: Int, to: Int? = nil) -> Int? {
        let end = to ?? length
        guard from < end else { return nil }
        guard let r = memchr(base + from, Int32(byte), end - from) else { return nil }
        return UnsafeRawPointer(r) - UnsafeRawPointer(base)
    }

    private func find(_ s: StaticString, from: Int) -> Int? {
        XMLText.find(s, in: base, from: from, end: length)
    }

    private func has(_ s: StaticString, at p: Int) -> Bool {
        p + s.utf8CodeUnitCount <= length && memcmp(base + p, s.utf8Start, s.utf8CodeUnitCount) == 0
    }
}

/// The names of a scanner's open elements, in a buffer that needs no reference counting to read.
final class OpenElements {
    /// The deepest nesting accepted.
    static let capacity = 4096
    let spans = UnsafeMutablePointer<XMLSpan>.allocate(capacity: OpenElements.capacity)
    deinit { spans.deallocate() }
}
