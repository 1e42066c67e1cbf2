import Foundation
import SluiceCore
import SluiceInterfaces

#if canImport(Glibc)
    import Glibc
#endif

/// A file path built from record fields: `{root}/{blobid:0:2}/{blobid:2:2}/{blobid}`.
///
/// `{name}` is a field's text (or a variable given at construction, such as `root`); `{name:start:length}`
/// is part of it, in bytes. Literal braces are written `{{` and `}}`.
public struct PathTemplate: Sendable, Hashable, CustomStringConvertible {
    /// One piece of the template.
    enum Piece: Sendable, Hashable {
        case literal([UInt8])
        case field(name: String, start: Int, length: Int?)
    }

    /// The template as written.
    public let text: String
    let pieces: [Piece]

    /// Parses a template; `variables` replace `{name}` for names that are not fields.
    /// - Throws: ``SluiceError`` (`.config`) for an unbalanced brace or a bad slice.
    public init(_ text: String, variables: [String: String] = [:]) throws {
        self.text = text
        var pieces: [Piece] = []
        var literal: [UInt8] = []
        let b = Array(text.utf8)
        var i = 0
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "{") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "{") {
                literal.append(c)
                i += 2
            } else if c == UInt8(ascii: "}") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "}") {
                literal.append(c)
                i += 2
            } else if c == UInt8(ascii: "{") {
                guard let close = b[i...].firstIndex(of: UInt8(ascii: "}")) else {
                    throw SluiceError(.config, "path template '\(text)': '{' at byte \(i) is never closed")
                }
                let inner = String(decoding: b[(i + 1)..<close], as: UTF8.self)
                let parts = inner.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
                guard !parts[0].isEmpty, parts.count == 1 || parts.count == 3 else {
                    throw SluiceError(
                        .config, "path template '\(text)': '{\(inner)}' is not {name} or {name:start:length}")
                }
                var start = 0
                var length: Int? = nil
                if parts.count == 3 {
                    guard let s = Int(parts[1]), let l = Int(parts[2]), s >= 0, l > 0 else {
                        throw SluiceError(.config, "path template '\(text)': bad slice in '{\(inner)}'")
                    }
                    start = s
                    length = l
                }
                if let v = variables[parts[0]] {
                    let vb = Array(v.utf8)
                    let lo = min(start, vb.count)
                    let hi = length.map { min(lo + $0, vb.count) } ?? vb.count
                    literal += vb[lo..<hi]
                } else {
                    if !literal.isEmpty { pieces.append(.literal(literal)) }
                    literal = []
                    pieces.append(.field(name: parts[0], start: start, length: length))
                }
                i = close + 1
            } else if c == UInt8(ascii: "}") {
                throw SluiceError(.config, "path template '\(text)': '}' at byte \(i) has no '{'")
            } else {
                literal.append(c)
                i += 1
            }
        }
        if !literal.isEmpty { pieces.append(.literal(literal)) }
        self.pieces = pieces
    }

    /// The field names the template reads.
    public var fieldNames: [String] {
        var names: [String] = []
        for case .field(let n, _, _) in pieces where !names.contains(n) { names.append(n) }
        return names
    }

    /// The template as written.
    public var description: String { text }
}

/// Reads the first bytes of the file each record points to: adds a `bytes` column with them (default name
/// `head`) and a `string` column (`head_error`) that says why, for records whose file is missing or
/// unreadable (their `head` is null). One `open`/`pread`/`close` per record, into the column buffer.
public struct ReadHeadTransform: Transform {
    /// The path template.
    public let path: PathTemplate
    /// Bytes to read. Default: 2,048.
    public let bytes: Int
    /// The output column. Default: `head`.
    public let column: String

    /// Creates the transform.
    public init(path: PathTemplate, bytes: Int = 2048, column: String = "head") {
        self.path = path
        self.bytes = bytes
        self.column = column
    }

    /// `read_head`.
    public var name: String { "read_head" }

    /// The input plus `head: bytes` and `head_error: string`.
    public func outputSchema(for input: Schema) throws -> Schema {
        for f in path.fieldNames where input.index(of: f) == nil {
            throw SluiceError(.config, "read_head: the path template names '\(f)', which is not a field (\(input))")
        }
        guard bytes > 0 else { throw SluiceError(.config, "read_head: bytes must be positive") }
        var s = input
        s.fields.removeAll { $0.name == column || $0.name == column + "_error" }
        s.fields.append(Field(column, .bytes))
        s.fields.append(Field(column + "_error", .string))
        return s
    }

    /// Reads every record's file head.
    public func apply(_ batch: RecordBatch) throws -> RecordBatch {
        let out = try outputSchema(for: batch.schema)
        let head = Column(type: .bytes, capacity: batch.count, byteCapacity: batch.count * min(bytes, 4096))
        let errors = Column(type: .string, capacity: batch.count)
        let pieces: [(literal: [UInt8], column: Int, start: Int, length: Int?)] = path.pieces.map {
            switch $0 {
            case .literal(let l): return (l, -1, 0, nil)
            case .field(let n, let s, let l): return ([], batch.schema.index(of: n)!, s, l)
            }
        }
        let views = batch.columns.map(\.view)
        var pathBuf = [UInt8](repeating: 0, count: 4096)
        withExtendedLifetime(batch) {
            for row in 0..<batch.count {
                // Build the NUL-terminated path in place.
                var n = 0
                var isNull = false
                var tooLong = false
                func put(_ ptr: UnsafePointer<UInt8>, _ len: Int, _ start: Int, _ length: Int?) {
                    let lo = min(start, len)
                    let hi = length.map { min(lo + $0, len) } ?? len
                    guard n + (hi - lo) < pathBuf.count else {
                        tooLong = true
                        return
                    }
                    for k in lo..<hi { pathBuf[n + k - lo] = ptr[k] }
                    n += hi - lo
                }
                for p in pieces {
                    if p.column < 0 {
                        p.literal.withUnsafeBufferPointer { put($0.baseAddress!, $0.count, 0, nil) }
                        continue
                    }
                    let v = views[p.column]
                    if v.isNull(row) {
                        isNull = true
                        break
                    }
                    let type = batch.schema.fields[p.column].type
                    if type == .string || type == .bytes || type == .json {
                        let (ptr, len) = v.bytes(row)
                        put(ptr, len, p.start, p.length)
                    } else {
                        let text = Array(batch.columns[p.column].value(at: row).description.utf8)
                        text.withUnsafeBufferPointer { put($0.baseAddress!, $0.count, p.start, p.length) }
                    }
                }
                if isNull || tooLong {
                    head.appendNull()
                    errors.append(
                        string: isNull ? "path field is null" : "path is longer than \(pathBuf.count - 1) bytes")
                    continue
                }
                pathBuf[n] = 0
                let fd = pathBuf.withUnsafeBufferPointer {
                    open(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), O_RDONLY | O_CLOEXEC)
                }
                if fd < 0 {
                    let e = errno
                    head.appendNull()
                    errors.append(
                        string: "\(String(decoding: pathBuf[0..<n], as: UTF8.self)): \(String(cString: strerror(e)))")
                    continue
                }
                let dst = head.beginBytes(reserving: bytes)
                var got = 0
                var failure: Int32 = 0
                while got < bytes {
                    let r = pread(fd, dst + got, bytes - got, off_t(got))
                    if r < 0 {
                        if errno == EINTR { continue }
                        failure = errno
                        break
                    }
                    if r == 0 { break }
                    got += r
                }
                close(fd)
                if failure != 0 {
                    // The started value is abandoned: appendNull takes its slot.
                    head.appendNull()
                    errors.append(
                        string:
                            "\(String(decoding: pathBuf[0..<n], as: UTF8.self)): \(String(cString: strerror(failure)))")
                } else {
                    head.endBytes(length: got)
                    errors.appendNull()
                }
            }
        }
        var cols = batch.columns.enumerated().filter {
            batch.schema.fields[$0.offset].name != column && batch.schema.fields[$0.offset].name != column + "_error"
        }.map(\.element)
        cols.append(head)
        cols.append(errors)
        return RecordBatch(
            schema: out, columns: cols, count: batch.count, origin: batch.origin, rowOrigins: batch.rowOrigins,
            inputBytes: batch.inputBytes)
    }
}
