/// A block of raw input bytes that starts and ends on record boundaries, owned by whoever holds it.
public final class Chunk: @unchecked Sendable {
    /// The bytes (`count` of them are valid).
    public let storage: UnsafeMutableRawBufferPointer
    /// Valid bytes in `storage`.
    public let count: Int
    /// The input file (or source name).
    public let file: String
    /// 0-based ordinal of the file in the run.
    public let fileIndex: Int
    /// Byte offset of the chunk's first byte in the (decompressed) file.
    public let fileOffset: Int64
    /// The 1-based line number of the chunk's first byte, when the reader knows it (first chunk of a file).
    public let startLine: Int?
    /// The decoder for this chunk's file (formats may map columns per file, e.g. from a CSV header).
    public let decoder: any RecordDecoder
    /// Takes the storage back when the chunk is done (a pool of buffers), instead of deallocating it.
    private let recycle: (@Sendable (UnsafeMutableRawBufferPointer) -> Void)?

    /// Takes ownership of `storage`; `recycle`, if given, receives it when the chunk is freed.
    public init(
        storage: UnsafeMutableRawBufferPointer, count: Int, file: String, fileIndex: Int, fileOffset: Int64,
        startLine: Int?, decoder: any RecordDecoder,
        recycle: (@Sendable (UnsafeMutableRawBufferPointer) -> Void)? = nil
    ) {
        self.storage = storage
        self.count = count
        self.file = file
        self.fileIndex = fileIndex
        self.fileOffset = fileOffset
        self.startLine = startLine
        self.decoder = decoder
        self.recycle = recycle
    }

    deinit {
        if let recycle { recycle(storage) } else { storage.deallocate() }
    }

    /// The valid bytes.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[0..<count]) }
}

/// A record a decoder could not turn into a row, with its place relative to its chunk.
public struct RecordReject: Sendable {
    /// 0-based line relative to the chunk's first line.
    public var relativeLine: Int
    /// Byte offset relative to the chunk's first byte.
    public var relativeOffset: Int
    /// The raw input of the record (possibly truncated to 64 KiB).
    public var raw: [UInt8]
    /// Why the record was rejected.
    public var reason: String

    /// Creates a reject.
    public init(relativeLine: Int, relativeOffset: Int, raw: [UInt8], reason: String) {
        self.relativeLine = relativeLine
        self.relativeOffset = relativeOffset
        self.raw = raw.count > 65_536 ? Array(raw[0..<65_536]) : raw
        self.reason = reason
    }
}

/// What one call of ``RecordDecoder/decode(_:from:line:into:maxRows:maxBytes:rejects:)`` did.
public struct DecodeProgress: Sendable {
    /// Offset just past the last byte consumed.
    public var end: Int
    /// Line (relative to the chunk) at `end`.
    public var line: Int

    /// Creates a progress value.
    public init(end: Int, line: Int) {
        self.end = end
        self.line = line
    }
}

/// Turns the bytes of a chunk into rows. Implementations are immutable and used by several threads at once.
public protocol RecordDecoder: Sendable {
    /// The schema of the rows produced.
    var schema: Schema { get }

    /// Decodes records starting at byte `start` (a record boundary, at relative line `line`) until the
    /// chunk ends, `maxRows` rows are in the builder, or its variable data exceeds `maxBytes`.
    /// Bad records are appended to `rejects`; good ones to `builder`, with their relative line and offset.
    func decode(
        _ chunk: UnsafeRawBufferPointer, from start: Int, line: Int, into builder: RecordBatchBuilder,
        maxRows: Int, maxBytes: Int, rejects: inout [RecordReject]
    ) -> DecodeProgress
}

/// Finds record boundaries in a stream, so that input can be cut into chunks that decode independently.
public protocol RecordFramer {
    /// `buffer` starts on a record boundary. Returns the length of the longest prefix made of whole records
    /// (0 when no record is complete yet). With `atEOF` the whole buffer is records.
    mutating func completeLength(of buffer: UnsafeRawBufferPointer, atEOF: Bool) -> Int
}

/// What comes before the records of a file.
public struct Preamble: Sendable {
    /// Bytes to skip (byte-order mark, header line).
    public var length: Int
    /// Lines skipped.
    public var lines: Int
    /// The header's field names, if the format has a header.
    public var header: [String]?
    /// What the format changed to read the header, for the run report (`field 1 has no name: named
    /// column1`).
    public var notes: [String]

    /// Creates a preamble.
    public init(length: Int, lines: Int, header: [String]?, notes: [String] = []) {
        self.length = length
        self.lines = lines
        self.header = header
        self.notes = notes
    }
}

/// A text format of records: how to find its preamble and record boundaries, infer a schema and decode.
public protocol RecordFormat: Sendable {
    /// Short name (`csv`, `jsonl`).
    var name: String { get }
    /// Reads the preamble from the first bytes of a file; returns nil when more bytes are needed.
    func preamble(_ head: UnsafeRawBufferPointer, atEOF: Bool, file: String) throws -> Preamble?
    /// Infers a schema from whole records in `sample` (which follows the preamble).
    func inferSchema(sample: UnsafeRawBufferPointer, header: [String]?) throws -> Schema
    /// A framer for one file.
    func makeFramer() -> any RecordFramer
    /// A decoder producing `schema` from a file with this `header`.
    func makeDecoder(schema: Schema, header: [String]?, file: String) throws -> any RecordDecoder
    /// Lets decoders skip records whose raw bytes hash to what the sink holds (see ``StoredSourceHashes``);
    /// called before decoding starts. Default: nothing (every record is decoded).
    func useStoredSourceHashes(_ stored: StoredSourceHashes)
    /// Lines for the run report, read once after the run (`("ignored", "tracklist/track/artists: 1,204
    /// elements not in the mapping")`). Default: none.
    func reportNotes() -> [(label: String, text: String)]
}

extension RecordFormat {
    /// Does nothing.
    public func useStoredSourceHashes(_ stored: StoredSourceHashes) {}
    /// None.
    public func reportNotes() -> [(label: String, text: String)] { [] }
}

/// Records a source rejected before the run started (the sample it inferred a schema from), for the rejects
/// file: the error that stops the run carries them as its `underlying` error, and the runtime writes them.
public struct EarlyRejects: Error, Sendable {
    /// One rejected record and its place in the input.
    public struct Record: Sendable {
        /// The input file.
        public var file: String
        /// The 1-based line where the record starts.
        public var line: Int
        /// The byte offset where the record starts.
        public var offset: Int64
        /// Why it was rejected.
        public var reason: String
        /// Its raw bytes.
        public var raw: [UInt8]

        /// Creates a record.
        public init(file: String, line: Int, offset: Int64, reason: String, raw: [UInt8]) {
            self.file = file
            self.line = line
            self.offset = offset
            self.reason = reason
            self.raw = raw
        }
    }

    /// The records, in input order.
    public var records: [Record]

    /// Creates the list.
    public init(_ records: [Record]) { self.records = records }
}
