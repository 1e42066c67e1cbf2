/// A table of rows nested in a parent record, linked to it by the parent's key.
public struct ChildTable: Sendable, Hashable, Codable {
    /// The table name (`release_artist`).
    public var name: String
    /// The child rows' schema; its first field holds the parent's key.
    public var schema: Schema

    /// Creates a child table.
    public init(name: String, schema: Schema) {
        self.name = name
        self.schema = schema
    }

    /// The field linking a child row to its parent (the schema's first field).
    public var linkField: Field { schema.fields[0] }
}

/// The type of a field. Values are stored in columns of the matching physical layout.
public enum FieldType: String, Sendable, Hashable, CaseIterable, Codable {
    /// 64-bit signed integer.
    case int64
    /// 64-bit IEEE-754 floating point.
    case float64
    /// Boolean.
    case bool
    /// UTF-8 text.
    case string
    /// Arbitrary bytes.
    case bytes
    /// A UTC instant, stored as microseconds since the Unix epoch.
    case timestamp
    /// JSON text, kept as written.
    case json

    /// Whether values of this type are stored in a fixed-width buffer (as opposed to offsets and bytes).
    public var isFixedWidth: Bool {
        switch self {
        case .int64, .float64, .bool, .timestamp: return true
        case .string, .bytes, .json: return false
        }
    }
}

/// One named, typed field of a ``Schema``.
public struct Field: Sendable, Hashable, Codable {
    /// A field from a type name (`int64`, an alias such as `text`, `!` at the end for not null); `entry`
    /// names it in the error.
    /// - Throws: ``SluiceError`` (`.config`) for an unknown type.
    public static func parse(name: String, type text: String, entry: String) throws -> Field {
        var typeName = text.sluiceTrimmed()
        var nullable = true
        if typeName.hasSuffix("!") {
            nullable = false
            typeName.removeLast()
        }
        guard let type = FieldType(rawValue: typeName.lowercased()) ?? FieldType.alias(typeName) else {
            let known = FieldType.allCases.map(\.rawValue).joined(separator: ", ")
            throw SluiceError(.config, "schema entry '\(entry)': unknown type '\(typeName)' (known: \(known))")
        }
        return Field(name, type, nullable: nullable)
    }

    /// The field name, as written in the input header or keys.
    public var name: String
    /// The field type.
    public var type: FieldType
    /// Whether the field may hold nulls. Default: `true`.
    public var nullable: Bool

    /// Creates a field.
    public init(_ name: String, _ type: FieldType, nullable: Bool = true) {
        self.name = name
        self.type = type
        self.nullable = nullable
    }
}

/// An ordered list of fields, and the child tables nested records decompose into.
public struct Schema: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The fields in column order.
    public var fields: [Field]
    /// Child tables whose rows belong to a row of this schema (a release's artists, a comic's tags). Each
    /// child schema's first field links a child row to its parent's key. Empty for flat records.
    public var children: [ChildTable]

    /// Creates a schema from fields and, for nested records, child tables.
    public init(_ fields: [Field], children: [ChildTable] = []) {
        self.fields = fields
        self.children = children
    }

    /// The number of fields.
    public var count: Int { fields.count }

    /// The position of the field called `name`, if any.
    public func index(of name: String) -> Int? { fields.firstIndex { $0.name == name } }

    /// Parses a schema specification such as `id:int64,name:string,ts:timestamp`.
    ///
    /// A type may end with `!` to mark the field not nullable (`id:int64!`).
    /// - Throws: ``SluiceError`` with code ``SluiceError/Code/config`` naming the bad entry.
    public static func parse(_ spec: String) throws -> Schema {
        var fields: [Field] = []
        for raw in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let entry = raw.sluiceTrimmed()
            let parts = entry.split(separator: ":", maxSplits: 1).map { $0.sluiceTrimmed() }
            guard parts.count == 2, !parts[0].isEmpty else {
                throw SluiceError(.config, "schema entry '\(entry)' is not of the form name:type")
            }
            let field = try Field.parse(name: parts[0], type: parts[1], entry: entry)
            if fields.contains(where: { $0.name == parts[0] }) {
                throw SluiceError(.config, "schema names field '\(parts[0])' twice")
            }
            fields.append(field)
        }
        return Schema(fields)
    }

    /// A schema from `(name, type)` pairs, such as a pipeline file's `schema:` mapping.
    /// - Throws: ``SluiceError`` (`.config`) naming a bad type or a repeated name.
    public static func fields(_ pairs: [(name: String, type: String)]) throws -> Schema {
        var fields: [Field] = []
        for (name, type) in pairs {
            if fields.contains(where: { $0.name == name }) {
                throw SluiceError(.config, "schema names field '\(name)' twice")
            }
            fields.append(try Field.parse(name: name, type: type, entry: "\(name): \(type)"))
        }
        return Schema(fields)
    }

    /// The schema in the `name:type` form that ``parse(_:)`` reads.
    public var description: String {
        fields.map { "\($0.name):\($0.type.rawValue)\($0.nullable ? "" : "!")" }.joined(separator: ",")
    }
}

extension FieldType {
    /// Common alternative spellings accepted in schema specifications.
    static func alias(_ name: String) -> FieldType? {
        switch name.lowercased() {
        case "int", "integer", "bigint", "long": return .int64
        case "float", "double", "real", "number": return .float64
        case "boolean": return .bool
        case "text", "str", "varchar": return .string
        case "blob", "binary": return .bytes
        case "datetime", "time", "timestamptz": return .timestamp
        default: return nil
        }
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs (shared with the formats: `package`).
    package func sluiceTrimmed() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
