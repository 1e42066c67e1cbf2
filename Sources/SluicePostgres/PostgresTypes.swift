import Foundation
import SluiceCore

/// How one input column is put on the wire for one PostgreSQL column.
enum PostgresEncoding: Sendable, Equatable {
    case int8, int4, int2, float8, float4, bool
    /// The bytes as they are (`text`, `varchar`, `bpchar`, `name`, `json`, `bytea`).
    case raw
    /// `jsonb`: version byte 1, then the text.
    case jsonb
    /// `timestamptz` / `timestamp`: microseconds since 2000-01-01.
    case timestamp
    /// `date`: days since 2000-01-01.
    case date
    /// `uuid` from its 36- or 32-character text.
    case uuid
    /// The value's text, cast by the server (types without a binary encoder here, e.g. `numeric`).
    case text

    /// The PostgreSQL type OID the encoded bytes are in.
    func wireOID(target: UInt32) -> UInt32 {
        switch self {
        case .text: return PostgresOID.text
        default: return target
        }
    }
}

/// The PostgreSQL type OIDs Sluice knows.
enum PostgresOID {
    static let bool: UInt32 = 16
    static let bytea: UInt32 = 17
    static let name: UInt32 = 19
    static let int8: UInt32 = 20
    static let int2: UInt32 = 21
    static let int4: UInt32 = 23
    static let text: UInt32 = 25
    static let json: UInt32 = 114
    static let xml: UInt32 = 142
    static let float4: UInt32 = 700
    static let float8: UInt32 = 701
    static let bpchar: UInt32 = 1042
    static let varchar: UInt32 = 1043
    static let date: UInt32 = 1082
    static let timestamp: UInt32 = 1114
    static let timestamptz: UInt32 = 1184
    static let numeric: UInt32 = 1700
    static let uuid: UInt32 = 2950
    static let jsonb: UInt32 = 3802

    /// The array type of an element type, for the ones `unnest` parameters use.
    static func array(of element: UInt32) -> UInt32? {
        switch element {
        case bool: return 1000
        case bytea: return 1001
        case name: return 1003
        case int2: return 1005
        case int4: return 1007
        case text: return 1009
        case bpchar: return 1014
        case varchar: return 1015
        case int8: return 1016
        case float4: return 1021
        case float8: return 1022
        case timestamp: return 1115
        case date: return 1182
        case timestamptz: return 1185
        case json: return 199
        case uuid: return 2951
        case jsonb: return 3807
        default: return nil
        }
    }
}

/// One column of the target table and how an input column is written to it.
struct PostgresColumn: Sendable {
    /// Column name.
    var name: String
    /// Target type OID.
    var oid: UInt32
    /// Target type as SQL (`bigint`, `numeric(10,2)`).
    var sqlType: String
    /// The input column's type.
    var input: FieldType
    /// The encoding.
    var encoding: PostgresEncoding

    /// Whether the server must cast the value (staged as `text`).
    var needsCast: Bool { encoding == .text }
    /// The type the value has on the wire.
    var wireOID: UInt32 { encoding.wireOID(target: oid) }
    /// The staging column type.
    var stageType: String { needsCast ? "text" : sqlType }

    /// The SQL type Sluice creates for a field type.
    static func createType(_ t: FieldType) -> (String, UInt32) {
        switch t {
        case .int64: return ("bigint", PostgresOID.int8)
        case .float64: return ("double precision", PostgresOID.float8)
        case .bool: return ("boolean", PostgresOID.bool)
        case .string: return ("text", PostgresOID.text)
        case .bytes: return ("bytea", PostgresOID.bytea)
        case .timestamp: return ("timestamptz", PostgresOID.timestamptz)
        case .json: return ("jsonb", PostgresOID.jsonb)
        }
    }

    /// How `input` values go into a column of type `oid`: binary when the pair has an encoder, else text cast.
    static func encoding(input: FieldType, oid: UInt32) -> PostgresEncoding {
        switch (input, oid) {
        case (.int64, PostgresOID.int8): return .int8
        case (.int64, PostgresOID.int4): return .int4
        case (.int64, PostgresOID.int2): return .int2
        case (.int64, PostgresOID.float8), (.float64, PostgresOID.float8): return .float8
        case (.int64, PostgresOID.float4), (.float64, PostgresOID.float4): return .float4
        case (.bool, PostgresOID.bool): return .bool
        case (.string, PostgresOID.text), (.string, PostgresOID.varchar), (.string, PostgresOID.bpchar),
            (.string, PostgresOID.name), (.string, PostgresOID.json), (.json, PostgresOID.json),
            (.json, PostgresOID.text), (.json, PostgresOID.varchar), (.bytes, PostgresOID.bytea):
            return .raw
        case (.string, PostgresOID.jsonb), (.json, PostgresOID.jsonb): return .jsonb
        case (.string, PostgresOID.uuid): return .uuid
        case (.timestamp, PostgresOID.timestamptz), (.timestamp, PostgresOID.timestamp): return .timestamp
        case (.timestamp, PostgresOID.date): return .date
        default: return .text
        }
    }
}

/// Encodes batches as PostgreSQL binary values: `COPY … (FORMAT binary)` tuples and one-dimensional arrays.
/// One encoder per writer; its buffer is reused from batch to batch.
final class PostgresBinaryEncoder {
    private(set) var base: UnsafeMutablePointer<UInt8>
    var count = 0
    private var capacity: Int

    init(capacity: Int = 1 << 20) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
    }

    deinit { base.deallocate() }

    /// The bytes written so far.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    func reset() { count = 0 }

    @inline(__always) func ensure(_ n: Int) {
        if count + n > capacity { grow(count + n) }
    }

    private func grow(_ needed: Int) {
        var c = capacity * 2
        while c < needed { c *= 2 }
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: c)
        p.update(from: base, count: count)
        base.deallocate()
        base = p
        capacity = c
    }

    @inline(__always) func put16(_ v: Int16) {
        ensure(2)
        UnsafeMutableRawPointer(base + count).storeBytes(of: v.bigEndian, as: Int16.self)
        count += 2
    }

    @inline(__always) func put32(_ v: Int32) {
        ensure(4)
        UnsafeMutableRawPointer(base + count).storeBytes(of: v.bigEndian, as: Int32.self)
        count += 4
    }

    @inline(__always) func put64(_ v: UInt64) {
        ensure(8)
        UnsafeMutableRawPointer(base + count).storeBytes(of: v.bigEndian, as: UInt64.self)
        count += 8
    }

    @inline(__always) func putBytes(_ p: UnsafePointer<UInt8>, _ n: Int) {
        ensure(n)
        (base + count).update(from: p, count: n)
        count += n
    }

    func putString(_ s: String) {
        var s = s
        s.withUTF8 { u in
            put32(Int32(u.count))
            if let b = u.baseAddress { putBytes(b, u.count) }
        }
    }

    /// The binary `COPY` header.
    func putCopyHeader() {
        let sig: [UInt8] = [0x50, 0x47, 0x43, 0x4F, 0x50, 0x59, 0x0A, 0xFF, 0x0D, 0x0A, 0x00]
        sig.withUnsafeBufferPointer { putBytes($0.baseAddress!, 11) }
        put32(0)
        put32(0)
    }

    /// The binary `COPY` trailer.
    func putCopyTrailer() { put16(-1) }

    /// Microseconds between 1970-01-01 and 2000-01-01.
    static let postgresEpochMicros: Int64 = 946_684_800_000_000

    /// Writes the value at `row` of `view` with its length word; returns a reason when it cannot be
    /// represented in the target type (the caller drops the row).
    @inline(__always)
    func putValue(_ view: ColumnView, _ row: Int, _ column: PostgresColumn) -> String? {
        if view.isNull(row) {
            put32(-1)
            return nil
        }
        switch column.encoding {
        case .int8:
            put32(8)
            put64(view.slot(row))
        case .int4:
            let v = view.int64(row)
            guard v >= Int64(Int32.min) && v <= Int64(Int32.max) else {
                return "\(column.name): \(v) is out of range for \(column.sqlType)"
            }
            put32(4)
            put32(Int32(v))
        case .int2:
            let v = view.int64(row)
            guard v >= Int64(Int16.min) && v <= Int64(Int16.max) else {
                return "\(column.name): \(v) is out of range for \(column.sqlType)"
            }
            put32(2)
            put16(Int16(v))
        case .float8:
            put32(8)
            put64(column.input == .int64 ? Double(view.int64(row)).bitPattern : view.slot(row))
        case .float4:
            let d = column.input == .int64 ? Double(view.int64(row)) : view.double(row)
            put32(4)
            put32(Int32(bitPattern: Float(d).bitPattern))
        case .bool:
            put32(1)
            ensure(1)
            base[count] = view.slot(row) != 0 ? 1 : 0
            count += 1
        case .raw:
            let (p, n) = view.bytes(row)
            put32(Int32(n))
            putBytes(p, n)
        case .jsonb:
            let (p, n) = view.bytes(row)
            put32(Int32(n + 1))
            ensure(1)
            base[count] = 1
            count += 1
            putBytes(p, n)
        case .timestamp:
            put32(8)
            put64(UInt64(bitPattern: view.int64(row) &- Self.postgresEpochMicros))
        case .date:
            let micros = view.int64(row)
            var days = micros / 86_400_000_000
            if micros % 86_400_000_000 < 0 { days -= 1 }
            put32(4)
            put32(Int32(truncatingIfNeeded: days - 10_957))
        case .uuid:
            let (p, n) = view.bytes(row)
            guard let u = Self.parseUUID(p, n) else {
                return
                    "\(column.name): '\(String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self))' is not a UUID"
            }
            put32(16)
            withUnsafeBytes(of: u) { putBytes($0.baseAddress!.assumingMemoryBound(to: UInt8.self), 16) }
        case .text:
            putString(Self.text(view, row, column.input))
        }
        return nil
    }

    /// A value as PostgreSQL input text (for server-side casts).
    static func text(_ view: ColumnView, _ row: Int, _ type: FieldType) -> String {
        switch type {
        case .int64: return String(view.int64(row))
        case .float64:
            let d = view.double(row)
            if d.isNaN { return "NaN" }
            if d.isInfinite { return d > 0 ? "Infinity" : "-Infinity" }
            return "\(d)"
        case .bool: return view.slot(row) != 0 ? "true" : "false"
        case .timestamp: return Timestamp.format(micros: view.int64(row))
        case .bytes:
            let (p, n) = view.bytes(row)
            let hex: [UInt8] = Array("0123456789abcdef".utf8)
            var out = "\\x"
            out.reserveCapacity(2 + 2 * n)
            for i in 0..<n {
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(p[i] >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(p[i] & 15)]))
            }
            return out
        case .string, .json:
            let (p, n) = view.bytes(row)
            return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
        }
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (or 32 hex digits, optionally in braces).
    static func parseUUID(_ p: UnsafePointer<UInt8>, _ n: Int) -> (UInt64, UInt64)? {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        var hi: UInt8? = nil
        var i = 0
        var end = n
        if n >= 2 && p[0] == UInt8(ascii: "{") && p[n - 1] == UInt8(ascii: "}") {
            i = 1
            end = n - 1
        }
        while i < end {
            let c = p[i]
            i += 1
            if c == UInt8(ascii: "-") { continue }
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let h = hi {
                out.append(h << 4 | v)
                hi = nil
            } else {
                hi = v
            }
        }
        guard out.count == 16, hi == nil else { return nil }
        var a: UInt64 = 0
        var b: UInt64 = 0
        for k in 0..<8 { a = a << 8 | UInt64(out[k]) }
        for k in 8..<16 { b = b << 8 | UInt64(out[k]) }
        return (a.bigEndian, b.bigEndian)
    }
}

/// SQL quoting.
enum SQL {
    /// `"name"` with embedded quotes doubled.
    static func ident(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    /// A possibly schema-qualified table name (`app.events`), each part quoted.
    static func table(_ s: String) -> String {
        s.split(separator: ".", maxSplits: 1).map { ident(String($0)) }.joined(separator: ".")
    }

    /// `'text'` with embedded quotes doubled.
    static func literal(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }

    /// `prefix."column"`, as text for the types without an equality operator (json, xml).
    static func comparable(_ prefix: String, _ c: PostgresColumn) -> String {
        let v = "\(prefix).\(ident(c.name))"
        return c.oid == PostgresOID.json || c.oid == PostgresOID.xml ? "\(v)::text" : v
    }

    /// The `ON CONFLICT (key) DO …` clause of a merge into `table`: nothing when every column is a key
    /// column, else an update of `others` only where one of their values differs (so unchanged rows cost
    /// no write). `ROW(…)` makes a one-column comparison a row comparison too.
    static func onConflict(key: [String], others: [PostgresColumn], table: String) -> String {
        let keyList = key.map(ident).joined(separator: ", ")
        guard !others.isEmpty else { return " ON CONFLICT (\(keyList)) DO NOTHING" }
        let set = others.map { "\(ident($0.name)) = EXCLUDED.\(ident($0.name))" }.joined(separator: ", ")
        let mine = others.map { comparable(table, $0) }.joined(separator: ", ")
        let theirs = others.map { comparable("EXCLUDED", $0) }.joined(separator: ", ")
        return " ON CONFLICT (\(keyList)) DO UPDATE SET \(set) WHERE ROW(\(mine)) IS DISTINCT FROM ROW(\(theirs))"
    }
}
