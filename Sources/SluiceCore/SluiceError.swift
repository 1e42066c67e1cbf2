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

/// The error type of Sluice: an opaque code, a message, what the runtime may do about it, where in the input
/// it happened, where in the code it was thrown, and what caused it.
///
/// `description` never includes row data: a server's DETAIL and HINT (which quote row values, e.g.
/// `Key (id)=(5) already exists`) are kept in ``detail`` and shown by `debugDescription` and in the rejects
/// file, never in the run report or on the terminal.
public struct SluiceError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
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
        /// The connection to a store or server was lost (it must be opened again).
        public static let connectionLost = Code(raw: "connection-lost")
        /// Too many rejected records (`--max-errors`).
        public static let tooManyErrors = Code(raw: "too-many-errors")
        /// The run was interrupted by a signal or cancellation.
        public static let interrupted = Code(raw: "interrupted")
        /// The code's name.
        public var description: String { raw }
    }

    /// What the runtime may do about a failed write.
    public enum Kind: Sendable, Hashable {
        /// Worth retrying the same batch (busy database, lost connection, serialization failure).
        case retry
        /// Something in the batch's data was refused: the runtime bisects the batch to find the rows.
        case bisect
        /// Nothing more can be done: the run stops.
        case fatal
    }

    /// The kind of error.
    public var code: Code
    /// A human-readable explanation, without row data.
    public var message: String
    /// What the runtime may do about it. Default: ``Kind/fatal``.
    public var kind: Kind
    /// Where the error was found, if it concerns a place in the input.
    public var position: SourcePosition?
    /// The database's SQLSTATE (`23505`), when a database reported the error.
    public var sqlState: String?
    /// The system's `errno`, when a system call failed.
    public var errno: Int32?
    /// The server's DETAIL and HINT: may quote row values, so it is kept out of ``description``.
    public var detail: String?
    /// The underlying error, if any.
    public var underlying: (any Error & Sendable)?
    /// The source file (`Module/File.swift`) that threw it.
    public var file: String
    /// The line that threw it.
    public var line: Int

    /// Creates an error, recording where it was thrown.
    public init(
        _ code: Code, _ message: String, kind: Kind = .fatal, position: SourcePosition? = nil,
        sqlState: String? = nil, errno: Int32? = nil, detail: String? = nil,
        underlying: (any Error & Sendable)? = nil, file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.kind = kind
        self.position = position
        self.sqlState = sqlState
        self.errno = errno
        self.detail = detail
        self.underlying = underlying
        self.file = file
        self.line = line
    }

    /// A sink's failure, classified for the runtime: retry it, bisect the batch, or stop.
    public static func sink(
        _ kind: Kind, _ message: String, sqlState: String? = nil, detail: String? = nil,
        underlying: (any Error & Sendable)? = nil, file: String = #fileID, line: Int = #line
    ) -> SluiceError {
        SluiceError(
            .sink, message, kind: kind, sqlState: sqlState, detail: detail, underlying: underlying, file: file,
            line: line)
    }

    /// `position: message (SQLSTATE 23505)`, without row data.
    public var description: String {
        var s = position.map { "\($0): \(message)" } ?? message
        if let sqlState { s += " (SQLSTATE \(sqlState))" }
        return s
    }

    /// The description with the server's detail, the code, where it was thrown and what caused it.
    public var debugDescription: String {
        var s = "\(description) [\(code), \(kind)"
        if let errno { s += ", errno \(errno)" }
        s += ", thrown at \(file):\(line)]"
        if let detail { s += " — \(detail)" }
        if let underlying { s += " (underlying: \(underlying))" }
        return s
    }

    /// The reason a rejected row gets in the rejects file: the description and the server's detail, which
    /// may quote the row (the rejects file holds the row anyway).
    public var rejectReason: String { detail.map { "\(description) — \($0)" } ?? description }
}
