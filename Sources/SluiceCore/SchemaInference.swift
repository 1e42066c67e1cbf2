/// Infers field types from sample values: `bool`, `int64` → `float64` → `string` widening, timestamps
/// (RFC 3339 / ISO-8601), and `json` for objects and arrays. Empty values carry no information.
public struct SchemaInference: Sendable {
    /// What has been seen so far for each field, in first-seen order.
    public private(set) var names: [String] = []
    private var kinds: [Kind?] = []
    private var sawNull: [Bool] = []
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
        return names.count - 1
    }

    /// Observes a textual value (CSV); `nil` or empty is a null.
    public mutating func observe(text bytes: UnsafeRawBufferPointer?, for name: String) {
        let i = slot(name)
        guard let bytes, bytes.count > 0 else {
            sawNull[i] = true
            return
        }
        let p = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let n = bytes.count
        let k: Kind
        if ValueParsing.parseInt64(p, n) != nil {
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
                case .int64: t = .int64
                case .float64: t = .float64
                case .timestamp: t = .timestamp
                case .json: t = .json
                case .string, nil: t = .string
                }
                return Field(name, t)
            })
    }
}
