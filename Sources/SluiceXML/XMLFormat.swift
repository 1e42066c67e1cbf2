import SluiceCore
import Synchronization

/// XML documents whose records are the repeated children of one container element (`/releases/release`),
/// read as a stream: the preamble is everything up to the container's start tag, chunks are cut after whole
/// records, and each record becomes a parent row plus rows of child tables (see ``XMLMapping``).
///
/// Without an explicit mapping, one is inferred from the first records (``XMLMappingInference``).
public final class XMLFormat: RecordFormat, Sendable {
    /// `xml`.
    public var name: String { "xml" }
    /// The record path (`/releases/release`).
    public let record: String
    /// The key column (links child tables), if known before inference.
    public let key: String?
    /// The hash column for an inferred mapping (nil: none).
    public let hashColumn: String?
    /// Whether an inferred mapping keeps a bare `&` as text.
    public let tolerant: Bool
    /// The source-hash column of an inferred mapping (see ``XMLMapping/sourceHashColumn``).
    public let sourceHashColumn: String?
    /// Whether an inferred mapping trims element text (see ``XMLMapping/trim``).
    public let trim: Bool
    private let state: Locked<CompiledMapping?>
    private let stored = StoredBox()
    private let ignored = IgnoredPaths()

    /// A format with an explicit mapping.
    /// - Throws: ``SluiceError`` (`.config`) for an invalid mapping.
    public init(mapping: XMLMapping) throws {
        record = mapping.record
        key = mapping.key
        hashColumn = mapping.hashColumn
        tolerant = mapping.tolerant
        sourceHashColumn = mapping.sourceHashColumn
        trim = mapping.trim
        state = Locked(try CompiledMapping(mapping))
    }

    /// A format whose mapping is inferred from the document's first records.
    public init(
        record: String, key: String? = nil, hashColumn: String? = "content_hash", tolerant: Bool = true,
        sourceHashColumn: String? = "source_hash", trim: Bool = false
    ) {
        self.trim = trim
        self.record = record
        self.key = key
        self.hashColumn = hashColumn
        self.tolerant = tolerant
        self.sourceHashColumn = sourceHashColumn
        state = Locked(nil)
    }

    /// The mapping in use (explicit, or inferred once ``inferSchema(sample:header:)`` ran).
    public var mapping: XMLMapping? { state.withLock { $0?.mapping } }

    /// The schema of an explicit mapping (nil until inferred otherwise).
    public var declaredSchema: Schema? { state.withLock { $0?.schema } }

    private var path: [String] { record.split(separator: "/").map(String.init) }

    /// Skips the XML declaration, comments, DOCTYPE and the start tags down to the records' container.
    public func preamble(_ head: UnsafeRawBufferPointer, atEOF: Bool, file: String) throws -> Preamble? {
        let steps = path
        guard steps.count >= 2 else {
            throw SluiceError(
                .config,
                "record path '\(record)' must name the record element inside its container (e.g. /releases/release)")
        }
        var start = 0
        if head.count >= 3 && head[0] == 0xEF && head[1] == 0xBB && head[2] == 0xBF { start = 3 }
        var scanner = XMLScanner(head, from: start, tolerant: true)
        var level = 0
        let containers = steps.dropLast().map { Array($0.utf8) }
        while true {
            let before = scanner.position
            let event: XMLEvent
            do {
                event = try scanner.next()
            } catch {
                // Cut off by the end of what was read so far: read more.
                if !atEOF && error.incomplete { return nil }
                throw SluiceError(
                    .format, "before the first record: \(error.reason)",
                    position: Self.position(head, error.offset, file: file))
            }
            switch event {
            case .endOfInput:
                if atEOF {
                    throw SluiceError(
                        .format, "the document has no <\(steps.dropLast().joined(separator: "><"))> element",
                        position: SourcePosition(file: file))
                }
                return nil
            case .start(let name):
                if scanner.equals(name, containers[level]) {
                    level += 1
                    if level == containers.count {
                        let end = scanner.position
                        // A self-closing container has no records.
                        let lines = XMLText.lineFeeds(head.baseAddress!.assumingMemoryBound(to: UInt8.self), 0, end)
                        return Preamble(length: end, lines: lines, header: nil)
                    }
                } else if level == 0 {
                    throw SluiceError(
                        .format,
                        "the document's root element is <\(scanner.string(name))>, not <\(steps[0])> (record path \(record))",
                        position: Self.position(head, before, file: file))
                } else {
                    do { try scanner.skipElement() } catch {
                        if !atEOF && error.incomplete { return nil }
                        throw SluiceError(
                            .format, error.reason, position: Self.position(head, error.offset, file: file))
                    }
                }
            case .end:
                throw SluiceError(
                    .format, "the document has no <\(steps.dropLast().joined(separator: "><"))> element",
                    position: Self.position(head, before, file: file))
            default:
                continue
            }
        }
    }

    static func position(_ buf: UnsafeRawBufferPointer, _ offset: Int, file: String) -> SourcePosition {
        let p = buf.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let o = min(offset, buf.count)
        return SourcePosition(file: file, line: 1 + XMLText.lineFeeds(p, 0, o), offset: Int64(o))
    }

    /// The mapping's schema; infers the mapping from `sample` first when none was given.
    public func inferSchema(sample: UnsafeRawBufferPointer, header: [String]?) throws -> Schema {
        if let s = declaredSchema { return s }
        var inferred = try XMLMappingInference.infer(
            sample: sample, record: record, key: key, hashColumn: hashColumn)
        inferred.tolerant = tolerant
        inferred.sourceHashColumn = sourceHashColumn
        inferred.trim = trim
        let compiled = try CompiledMapping(inferred)
        state.withLock { $0 = compiled }
        return compiled.schema
    }

    /// A framer cutting after whole records.
    public func makeFramer() -> any RecordFramer {
        XMLFramer(
            skimmer: XMLRecordSkimmer(recordName: path.last ?? record, containerName: path.dropLast().last ?? ""))
    }

    /// A decoder for `schema` (the mapping's schema, possibly with keys made non-null).
    public func makeDecoder(schema: Schema, header: [String]?, file: String) throws -> any RecordDecoder {
        guard let compiled = state.withLock({ $0 }) else {
            throw SluiceError(.config, "the XML mapping is not settled (no sample was read)")
        }
        let mine = compiled.schema
        guard schema.fields.map(\.name) == mine.fields.map(\.name), schema.fields.map(\.type) == mine.fields.map(\.type)
        else {
            throw SluiceError(.config, "the schema \(schema) does not match the XML mapping's \(mine)")
        }
        return XMLRecordDecoder(compiled: compiled, schema: schema, file: file, stored: stored, ignored: ignored)
    }

    /// An `ignored` line per element path the mapping does not cover, with how many such elements the run
    /// read (map them, or know they are left out).
    public func reportNotes() -> [(label: String, text: String)] { ignored.lines() }

    /// Lets the decoders skip records whose raw bytes hash to the stored source hash (needs a source-hash
    /// column and an int64 key attribute on the record element; otherwise every record is decoded).
    public func useStoredSourceHashes(_ s: StoredSourceHashes) { stored.value.withLock { $0 = s } }
}

/// The sink's stored source hashes, shared by a format's decoders (set once, before decoding starts).
final class StoredBox: Sendable {
    let value = Locked<StoredSourceHashes?>(nil)
}

/// Cuts a stream after its last whole item, found as the decoder steps over items (``XMLRecordSkimmer``).
struct XMLFramer: RecordFramer {
    let skimmer: XMLRecordSkimmer

    mutating func completeLength(of buffer: UnsafeRawBufferPointer, atEOF: Bool) -> Int {
        if atEOF { return buffer.count }
        return skimmer.lastItemEnd(buffer)
    }
}
