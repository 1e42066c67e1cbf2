import SluiceCore

/// What a field does when its path matches several elements (or attributes of several elements) in one
/// record or child row.
public enum XMLRepeated: String, Sendable, Hashable, CaseIterable {
    /// The record is rejected, naming the path: a value is never dropped without a word. The default.
    case reject
    /// The first one is kept and the others are ignored, on purpose.
    case first
    /// Every one is kept, in document order, as a JSON array of strings (the column's type is `json`; null
    /// when none is present).
    case list
}

/// One column filled from an XML record: an attribute (`@id`), a child element's text (`title`), a nested
/// element's text or attribute (`master_id/@is_main_release`), or the element's own text (`.`).
public struct XMLFieldMapping: Sendable, Hashable {
    /// The column name.
    public var name: String
    /// The path, relative to the record (or to the child element, in a child table).
    public var path: String
    /// The column type; text is converted to it (an empty value is null).
    public var type: FieldType
    /// Trim whitespace around the element's text (string columns; numbers, booleans and timestamps always
    /// ignore it). nil: as the child mapping or the source says (``XMLChildMapping/trim``,
    /// ``XMLMapping/trim``). Attribute values are never trimmed.
    public var trim: Bool?
    /// What to do when the path matches more than once. Default: ``XMLRepeated/reject``.
    public var repeated: XMLRepeated

    /// Creates a field mapping.
    public init(
        _ name: String, path: String, type: FieldType = .string, trim: Bool? = nil, repeated: XMLRepeated = .reject
    ) {
        self.name = name
        self.path = path
        self.type = type
        self.trim = trim
        self.repeated = repeated
    }

    /// The column's type: `json` for a list, else ``type``.
    public var columnType: FieldType { repeated == .list ? .json : type }
}

/// Repeated elements of a record (`artists/artist`) mapped to rows of a child table linked by the parent key,
/// or, with ``asJSON``, to one JSON array column of the parent.
public struct XMLChildMapping: Sendable, Hashable {
    /// The child table (or, with ``asJSON``, the parent column) name.
    public var table: String
    /// The path of the repeated element, relative to the record.
    public var path: String
    /// The child row's columns, relative to the repeated element.
    public var fields: [XMLFieldMapping]
    /// Store the rows as a JSON array in a parent column instead of a child table.
    public var asJSON: Bool
    /// Trim whitespace around the text of this mapping's fields, unless a field says otherwise. nil: as the
    /// source says (``XMLMapping/trim``).
    public var trim: Bool?

    /// Creates a child mapping.
    public init(table: String, path: String, fields: [XMLFieldMapping], asJSON: Bool = false, trim: Bool? = nil) {
        self.table = table
        self.path = path
        self.fields = fields
        self.asJSON = asJSON
        self.trim = trim
    }
}

/// How records of an XML document become rows: which elements are records, and which of their parts fill
/// which columns and child tables.
///
/// Every child table starts with two columns the mapping adds: the link to the parent (`release_id`, named
/// `<record>_<key>`) and the row's 1-based `position` among its siblings in the record.
public struct XMLMapping: Sendable, Hashable {
    /// The record elements' path from the document root (`/releases/release`).
    public var record: String
    /// The parent key column (required when there are child tables).
    public var key: String?
    /// The parent columns.
    public var fields: [XMLFieldMapping]
    /// Child tables and JSON list columns.
    public var children: [XMLChildMapping]
    /// The column holding each record's SHA-256 content hash, or nil for none.
    public var hashColumn: String?
    /// Keep a bare `&` as text instead of rejecting the record. Default: true.
    public var tolerant: Bool
    /// The column holding a 64-bit hash of each record's raw bytes (``SourceHash``, seeded with the mapping),
    /// added next to ``hashColumn`` (never without it). An update run (`--skip-unchanged`) skips decoding a
    /// record whose bytes hash to the stored value. nil: none. Default: `source_hash`.
    public var sourceHashColumn: String?
    /// Trim whitespace around element text in string columns, unless a child mapping or field says otherwise.
    /// Default: false: text is stored exactly as the document has it (only whitespace-only text between
    /// child elements is not part of a value).
    public var trim: Bool

    /// Creates a mapping.
    public init(
        record: String, key: String? = nil, fields: [XMLFieldMapping], children: [XMLChildMapping] = [],
        hashColumn: String? = "content_hash", tolerant: Bool = true, sourceHashColumn: String? = "source_hash",
        trim: Bool = false
    ) {
        self.trim = trim
        self.record = record
        self.key = key
        self.fields = fields
        self.children = children
        self.hashColumn = hashColumn
        self.tolerant = tolerant
        self.sourceHashColumn = sourceHashColumn
    }

    /// The source-hash column in use: ``sourceHashColumn`` when there is a ``hashColumn``.
    public var effectiveSourceHashColumn: String? {
        Self.sourceHashColumn(sourceHashColumn, hashColumn: hashColumn)
    }

    /// The source-hash column that `sourceHash` names: none without a content-hash column, which update runs
    /// need to compare the records they do decode.
    public static func sourceHashColumn(_ sourceHash: String?, hashColumn: String?) -> String? {
        hashColumn == nil ? nil : sourceHash
    }

    /// The record path's element names (`["releases", "release"]`).
    public var recordPath: [String] { record.split(separator: "/").map(String.init) }

    /// The record element's name.
    public var recordName: String { recordPath.last ?? record }

    /// The name of a child table's link column (`release_id`).
    public var linkColumn: String { "\(recordName)_\(key ?? "id")" }

    /// The schema of the rows this mapping produces: parent fields, JSON list columns, the hash column, and the
    /// child tables.
    /// - Throws: ``SluiceError`` (`.config`) for an invalid mapping.
    public func schema() throws -> Schema {
        guard recordPath.count >= 2 else {
            throw SluiceError(
                .config,
                "record path '\(record)' must name the record element inside its container (e.g. /releases/release)")
        }
        var fieldsOut: [Field] = []
        var names = Set<String>()
        func add(_ f: Field) throws {
            guard names.insert(f.name).inserted else {
                throw SluiceError(.config, "XML mapping names column '\(f.name)' twice")
            }
            fieldsOut.append(f)
        }
        for f in fields {
            try Self.checkPath(f.path, field: f.name)
            try Self.checkRepeated(f)
            try add(Field(f.name, f.columnType))
        }
        for c in children where c.asJSON { try add(Field(c.table, .json)) }
        if let h = hashColumn { try add(Field(h, .bytes)) }
        if let s = effectiveSourceHashColumn { try add(Field(s, .int64)) }
        var tables: [ChildTable] = []
        let real = children.filter { !$0.asJSON }
        if !real.isEmpty {
            guard let key, let k = fields.first(where: { $0.name == key }) else {
                throw SluiceError(
                    .config, "XML child tables need the record's key column (key: …) among the record's fields")
            }
            guard k.type == .int64 || k.type == .string else {
                throw SluiceError(.config, "the record key '\(key)' must be int64 or string to link child tables")
            }
            for c in real {
                var cf = [Field(linkColumn, k.type, nullable: false), Field("position", .int64, nullable: false)]
                for f in c.fields {
                    try Self.checkPath(f.path, field: f.name)
                    try Self.checkRepeated(f)
                    guard f.name != linkColumn && f.name != "position" else {
                        throw SluiceError(
                            .config, "child table \(c.table): column '\(f.name)' is reserved (link and position)")
                    }
                    cf.append(Field(f.name, f.columnType))
                }
                tables.append(ChildTable(name: c.table, schema: Schema(cf)))
            }
        }
        for (i, c) in children.enumerated() {
            for d in children[(i + 1)...]
            where d.path == c.path || d.path.hasPrefix(c.path + "/") || c.path.hasPrefix(d.path + "/") {
                throw SluiceError(.config, "child mappings \(c.table) and \(d.table) overlap (\(c.path), \(d.path))")
            }
        }
        if let key, fields.first(where: { $0.name == key }) == nil {
            throw SluiceError(.config, "the record key '\(key)' is not one of the mapped fields")
        }
        return Schema(fieldsOut, children: tables)
    }

    static func checkRepeated(_ f: XMLFieldMapping) throws {
        if f.repeated == .list && f.path == "." {
            throw SluiceError(
                .config,
                "field '\(f.name)': '.' is one value; repeated: list applies to a path below the element")
        }
    }

    static func checkPath(_ path: String, field: String) throws {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.isEmpty, !parts.contains(where: \.isEmpty) else {
            throw SluiceError(.config, "field '\(field)': path '\(path)' is empty or has an empty step")
        }
        for (i, p) in parts.enumerated() where p.hasPrefix("@") && i != parts.count - 1 {
            throw SluiceError(.config, "field '\(field)': an attribute (@…) can only end a path ('\(path)')")
        }
        for (i, p) in parts.enumerated() where p == "." && (i != parts.count - 1 || parts.count > 1) {
            throw SluiceError(.config, "field '\(field)': '.' (the element's own text) must be the whole path")
        }
    }
}
