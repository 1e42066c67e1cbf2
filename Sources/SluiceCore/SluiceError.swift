/// Where in the input a problem was found.
public struct SourcePosition: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The file (or other source name).
    public var file: String
    /// The 1-based line number, if known.
    public var line: Int?
    /// The 1-based column, if known.
    public var column: Int?
    /// The 0-based byte offset in the (decompressed) input, if known.
    public var offset: Int64?
    /// The 1-based record number, if known.
    public var record: Int64?

    /// Creates a position.
    public init(file: String, line: Int? = nil, column: Int? = nil, offset: Int64? = nil, record: Int64? = nil) {
        self.file = file
        self.line = line
        self.column = column
        self.offset = offset
        self.record = record
    }

    /// `file:line:column (byte N, record M)`, leaving out what is unknown.
    public var description: String {
        var s = file
        if let line { s += ":\(line)" }
        if let column { s += ":\(column)" }
        var extra: [String] = []
        if let offset { extra.append("byte \(offset)") }
        if let record { extra.append("record \(record)") }
        if !extra.isEmpty { s += " (\(extra.joined(separator: ", ")))" }
        return s
    }
}

/// The error type of Sluice: an opaque code, a message, where it happened and what caused it.
///
/// `description` never includes row data; the message may quote configuration but not input values.
public struct SluiceError: Error, Sendable, CustomStringConvertible {
    /// The kind of error; decides the exit status of the CLI.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        let raw: String
        /// Bad configuration, arguments or pipeline file (exit status 2).
        public static let config = Code(raw: "config")
        /// An input file could not be opened or read.
        public static let io = Code(raw: "io")
        /// Input that cannot be parsed at all (as opposed to a per-record reject).
        public static let format = Code(raw: "format")
        /// The sink failed.
        public static let sink = Code(raw: "sink")
        /// Too many rejected records (`--max-errors`).
        public static let tooManyErrors = Code(raw: "too-many-errors")
        /// The run was interrupted by a signal or cancellation.
        public static let interrupted = Code(raw: "interrupted")
        /// The code's name.
        public var description: String { raw }
    }

    /// The kind of error.
    public var code: Code
    /// A human-readable explanation.
    public var message: String
    /// Where the error was found, if it concerns a place in the input.
    public var position: SourcePosition?
    /// The underlying error, if any.
    public var underlying: (any Error & Sendable)?

    /// Creates an error.
    public init(
        _ code: Code, _ message: String, position: SourcePosition? = nil, underlying: (any Error & Sendable)? = nil
    ) {
        self.code = code
        self.message = message
        self.position = position
        self.underlying = underlying
    }

    /// `position: message`.
    public var description: String {
        if let position { return "\(position): \(message)" }
        return message
    }
}
