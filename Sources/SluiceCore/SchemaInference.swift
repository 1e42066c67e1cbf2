/// Infers field types from sample values: `bool`, `int64` → `float64` → `string` widening, timestamps
/// (RFC 3339 / ISO-8601), and `json` for objects and arrays. Empty values carry no information.
///
/// Epoch timestamps are inferred only where both the name and the values say so: an integer field named like
/// a time (`ts`, `time`, `timestamp`, `date`, `datetime`, or ending in `_at`, `_ts`, `_time`, `_date`) whose
/// every value lies between 2000 and 2100 in one unit (seconds, milliseconds or microseconds).
public struct SchemaInference: Sendable {
    /// What has been seen so far for each field, in first-seen order.
    public private(set) var names: [String] = []
    private var kinds: [Kind?] = []
    private var sawNull: [Bool] = []
    private var intRange: [(min: Int64, max: Int64)] = []
    private var index: [String: Int] = [:]

    enum Kind: Int, Sendable { case bool, int64, float64, timestamp, json, string }

    /// Creates an empty inference.
    public init() {}

    /// Creates an inference seeded with field names in order (CSV header).
    public init(names: [String]) {
        for n in names { _ = slot(n) }
    }

    private mutating func slot(_ name: String) -> Int {
        if let i = index[name] { return i }
        index[name] = names.count
        names.append(name)
        kinds.append(nil)
        sawNull.append(false)
        intRange.append((Int64.max, Int64.min))
        return names.count - 1
    }

    /// Observes a textual value (CSV); `nil`, empty, or a `missing` token (`NA`, `NULL`, …) is a null.
    public mutating func observe(text bytes: UnsafeRawBufferPointer?, missing: Bool = false, for name: String) {
        let i = slot(name)
        guard let bytes, bytes.count > 0, !missing else {
            sawNull[i] = true
            return
        }
        let p = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let n = bytes.count
        let k: Kind
        if let v = ValueParsing.parseInt64(p, n) {
            noteInteger(i, v)
            k = .int64
        } else if ValueParsing.parseDouble(p, n) != nil, p[n - 1] &- 48 <= 9 || p[n - 1] == UInt8(ascii: ".") {
            k = .float64
        } else if n >= 4, n <= 5, ValueParsing.parseBool(p, n) != nil {
            k = .bool
        } else if n >= 10, p[4] == UInt8(ascii: "-"), Timestamp.parseISO8601(p, n) != nil {
            k = .timestamp
        } else {
            k = .string
        }
        merge(i, k)
    }

    /// Observes an integer value for `name` (JSON numbers; lets epoch timestamps be recognised).
    public mutating func observe(integer v: Int64, for name: String) {
        let i = slot(name)
        noteInteger(i, v)
        merge(i, .int64)
    }

    private mutating func noteInteger(_ i: Int, _ v: Int64) {
        intRange[i] = (min(intRange[i].min, v), max(intRange[i].max, v))
    }

    /// Whether a field name reads as a point in time.
    static func looksTemporal(_ name: String) -> Bool {
        let n = name.lowercased()
        if ["ts", "time", "timestamp", "date", "datetime", "created", "updated"].contains(n) { return true }
        return ["_at", "_ts", "_time", "_date", "_timestamp"].contains { n.hasSuffix($0) }
    }

    /// Whether every integer seen lies within 2000…2100 in one epoch unit.
    static func epochRange(_ r: (min: Int64, max: Int64)) -> Bool {
        let seconds: ClosedRange<Int64> = 946_684_800...4_102_444_800
        for scale: Int64 in [1, 1_000, 1_000_000] {
            let unit = (seconds.lowerBound * scale)...(seconds.upperBound * scale)
            if unit.contains(r.min) && unit.contains(r.max) { return true }
        }
        return false
    }

    /// Observes a typed JSON value kind for `name`.
    public mutating func observe(json kind: JSONKind, for name: String) {
        let i = slot(name)
        switch kind {
        case .null: sawNull[i] = true
        case .bool: merge(i, .bool)
        case .integer: merge(i, .int64)
        case .float: merge(i, .float64)
        case .string(let looksLikeTimestamp): merge(i, looksLikeTimestamp ? .timestamp : .string)
        case .nested: merge(i, .json)
        }
    }

    /// The kind of a JSON value, as seen by ``observe(json:for:)``.
    public enum JSONKind: Sendable {
        /// `null`.
        case null
        /// `true` or `false`.
        case bool
        /// An integer that fits in 64 bits.
        case integer
        /// Any other number.
        case float
        /// A string; `true` if it parses as an RFC 3339 timestamp.
        case string(looksLikeTimestamp: Bool)
        /// An object or array.
        case nested
    }

    private mutating func merge(_ i: Int, _ k: Kind) {
        guard let old = kinds[i] else {
            kinds[i] = k
            return
        }
        if old == k { return }
        switch (old, k) {
        case (.int64, .float64), (.float64, .int64): kinds[i] = .float64
        default: kinds[i] = (old == .json || k == .json) && (old != .string && k != .string) ? .json : .string
        }
    }

    /// The inferred schema; fields never seen with a value are strings. Every field is nullable.
    public var schema: Schema {
        Schema(
            names.enumerated().map { i, name in
                let t: FieldType
                switch kinds[i] {
                case .bool: t = .bool
                case .int64:
                    t = Self.looksTemporal(name) && Self.epochRange(intRange[i]) ? .timestamp : .int64
                case .float64: t = .float64
                case .timestamp: t = .timestamp
                case .json: t = .json
                case .string, nil: t = .string
                }
                return Field(name, t)
            })
    }
}
