import Foundation
import SluiceCore
import SluiceInterfaces
import SluiceReport

/// Reads records of a ``RecordFormat`` from files (gzip detected by magic bytes), cutting them into chunks
/// at record boundaries for the decode workers.
public final class FileSource: Source, @unchecked Sendable {
    /// The files, in order.
    public let paths: [String]
    /// The format.
    public let format: any RecordFormat
    /// The declared schema, or nil to infer it from the first file.
    public let declaredSchema: Schema?
    /// Fields that must not be null (e.g. upsert keys), applied to the settled schema.
    public let requiredFields: [String]
    /// Progress counters.
    public let progress = SourceProgress()

    private var schema: Schema?
    private var context = SourceContext(chunkBytes: 4 << 20, maxRows: 65_536)
    private var fileIndex = -1
    private var current: OpenFile?
    /// Set when a wait on a stream noticed cancellation: only whole records already read are emitted.
    private var stopped = false
    /// The decoder each file's header gave when the files were checked at open, by file index: reading a file
    /// later reuses it instead of building it again.
    private var checkedDecoders: [Int: any RecordDecoder] = [:]
    /// The first file's head, read once at open for inference and the header check.
    private var firstHead: (bytes: [UInt8], complete: Bool)?
    /// Chunk buffers handed back by decoded chunks.
    private let pool = BufferPool()
    /// What the format changed to read each file's header (`file: note`), for the report.
    private let headerNotes = Locked<[String]>([])

    private struct OpenFile {
        let input: InputFile
        var framer: any RecordFramer
        /// Built from the file's header once the preamble is read.
        var decoder: (any RecordDecoder)?
        var offset: Int64
        var startLine: Int?
        var buffer: UnsafeMutableRawBufferPointer
        var filled: Int
        var eof: Bool
        var lastRaw: Int64
    }

    /// Creates a source over `paths`; `schema` nil means infer it from the first file.
    public init(paths: [String], format: any RecordFormat, schema: Schema? = nil, requiredFields: [String] = []) {
        self.paths = paths
        self.format = format
        self.declaredSchema = schema
        self.requiredFields = requiredFields
    }

    /// `a.csv, b.csv (csv)`.
    public var name: String {
        let shown = paths.count > 3 ? "\(paths[0]) and \(paths.count - 1) more" : paths.joined(separator: ", ")
        return "\(shown) (\(format.name))"
    }

    /// A `header` line for each column a file's header did not name usably (empty, or a repeat), with the
    /// name it was given; then the format's own lines (what an XML mapping ignored).
    public var reportLines: [ReportLine] {
        headerNotes.withLock { $0 }.map { ReportLine(label: "header", text: $0) }
            + format.reportNotes().map { ReportLine(label: $0.label, text: $0.text) }
    }

    /// Passes the sink's stored source hashes to the format's decoders.
    public func useStoredSourceHashes(_ stored: StoredSourceHashes) { format.useStoredSourceHashes(stored) }

    /// Checks the files, settles the schema and computes the total size for progress.
    public func open(context: SourceContext) throws -> Schema {
        self.context = context
        guard !paths.isEmpty else { throw SluiceError(.config, "no input files") }
        var total: Int64 = 0
        var known = true
        for p in paths where p != "-" {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else {
                throw SluiceError(.io, "no such file", position: SourcePosition(file: p))
            }
            if isDir.boolValue { throw SluiceError(.io, "is a directory", position: SourcePosition(file: p)) }
            let attrs = try? FileManager.default.attributesOfItem(atPath: p)
            total += (attrs?[.size] as? NSNumber)?.int64Value ?? 0
        }
        if paths.contains("-") { known = false }
        progress.setTotal(known ? total : nil)
        var s: Schema
        if let declaredSchema {
            s = declaredSchema
        } else {
            s = try inferSchema()
        }
        for name in requiredFields {
            guard let i = s.index(of: name) else {
                throw SluiceError(.config, "key field '\(name)' is not in the schema (\(s))")
            }
            s.fields[i].nullable = false
        }
        schema = s
        try checkHeaders(s)
        return s
    }

    /// Reads each file's preamble now, so that a header that does not fit the schema is a configuration
    /// error before anything runs rather than an abort half-way. The first file's head is the one inference
    /// read (not read again); the decoders made here are the ones reading uses.
    private func checkHeaders(_ schema: Schema) throws {
        for (i, path) in paths.enumerated() where path != "-" {
            let (head, complete) =
                i == 0 && firstHead != nil ? firstHead! : try InputFile.head(of: path, maxBytes: 64 << 10)
            try head.withUnsafeBytes { view in
                if let pre = try format.preamble(view, atEOF: complete, file: path) {
                    checkedDecoders[i] = try format.makeDecoder(schema: schema, header: pre.header, file: path)
                }
            }
        }
        firstHead = nil
    }

    /// Infers the schema from the first file's first records (at most 4 MiB).
    private func inferSchema() throws -> Schema {
        guard paths[0] != "-" else {
            throw SluiceError(.config, "reading standard input needs a declared schema (--schema)")
        }
        let (head, complete) = try InputFile.head(of: paths[0], maxBytes: 4 << 20)
        firstHead = (head, complete)
        let path = paths[0]
        return try head.withUnsafeBytes { view -> Schema in
            guard let pre = try format.preamble(view, atEOF: true, file: path) else {
                throw SluiceError(.format, "cannot read the start of the file", position: SourcePosition(file: path))
            }
            var framer = format.makeFramer()
            let body = UnsafeRawBufferPointer(rebasing: view[pre.length...])
            let whole = framer.completeLength(of: body, atEOF: complete)
            let sample = UnsafeRawBufferPointer(rebasing: body[0..<whole])
            let schema = try format.inferSchema(sample: sample, header: pre.header)
            if schema.count > 0 { return schema }
            throw noSchema(sample, pre, path)
        }
    }

    /// Why no schema could be inferred from `sample`: the sampled records the decoder rejects (the first one's
    /// line and reason in the message, all of them for the rejects file), or an input with no fields at all.
    private func noSchema(_ sample: UnsafeRawBufferPointer, _ pre: Preamble, _ path: String) -> SluiceError {
        var rejects: [RecordReject] = []
        if let decoder = try? format.makeDecoder(schema: Schema([]), header: pre.header, file: path) {
            let builder = RecordBatchBuilder(schema: Schema([]), rowCapacity: 1024)
            var at = 0
            var line = 0
            while at < sample.count && rejects.count < 10_000 {
                let p = decoder.decode(
                    sample, from: at, line: line, into: builder, maxRows: 1 << 20, maxBytes: 1 << 30, rejects: &rejects)
                if p.end <= at { break }
                (at, line) = (p.end, p.line)
            }
        }
        let records = rejects.map {
            EarlyRejects.Record(
                file: path, line: pre.lines + $0.relativeLine + 1, offset: Int64(pre.length + $0.relativeOffset),
                reason: $0.reason, raw: $0.raw)
        }
        guard let first = records.first else {
            return SluiceError(.format, "no fields found to infer a schema from", position: SourcePosition(file: path))
        }
        return SluiceError(
            .format,
            "\(first.reason) (no sampled record could be read, so no schema could be inferred: "
                + "\(records.count) rejected; fix the input or give --schema)",
            position: SourcePosition(file: path, line: first.line), underlying: EarlyRejects(records))
    }

    private func openNext() throws -> Bool {
        fileIndex += 1
        guard fileIndex < paths.count, let schema else { return false }
        let path = paths[fileIndex]
        let input = try InputFile(path: path)
        let cap = max(context.chunkBytes, 16)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: cap, alignment: 16)
        var file = OpenFile(
            input: input, framer: format.makeFramer(), decoder: nil, offset: 0, startLine: 1, buffer: buffer,
            filled: 0, eof: false, lastRaw: 0)
        // Read the preamble (BOM, header) and build this file's decoder from its header.
        while true {
            try fillBuffer(&file)
            let view = UnsafeRawBufferPointer(rebasing: file.buffer[0..<file.filled])
            if let pre = try format.preamble(view, atEOF: file.eof, file: path) {
                file.decoder =
                    try checkedDecoders.removeValue(forKey: fileIndex)
                    ?? format.makeDecoder(schema: schema, header: pre.header, file: path)
                if !pre.notes.isEmpty { headerNotes.withLock { $0 += pre.notes.map { "\(path): \($0)" } } }
                file.offset = Int64(pre.length)
                file.startLine = 1 + pre.lines
                let rest = file.filled - pre.length
                if pre.length > 0 && rest > 0 {
                    file.buffer.baseAddress!.copyMemory(from: file.buffer.baseAddress! + pre.length, byteCount: rest)
                }
                file.filled = rest
                progress.add(read: 0, decoded: Int64(pre.length))
                break
            }
            if file.eof || file.filled == file.buffer.count {
                if file.filled == file.buffer.count && !file.eof {
                    grow(&file)
                    continue
                }
                throw SluiceError(
                    .format, "cannot read the file's header", position: SourcePosition(file: path, line: 1))
            }
        }
        current = file
        return true
    }

    private func grow(_ file: inout OpenFile) {
        let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: file.buffer.count * 2, alignment: 16)
        bigger.baseAddress!.copyMemory(from: file.buffer.baseAddress!, byteCount: file.filled)
        file.buffer.deallocate()
        file.buffer = bigger
    }

    /// Reads until the buffer is full or the input ends. On a stream (pipe, terminal) it waits in short
    /// polls, so that cancellation is noticed, and returns once data has waited `maxLatency`.
    private func fillBuffer(_ file: inout OpenFile) throws {
        var batcher = Batcher(policy: context.batching)
        if file.filled > 0 { _ = batcher.add(rows: 0, bytes: file.filled, now: MonotonicClock.now()) }
        while file.filled < file.buffer.count && !file.eof {
            if file.input.isStream {
                if context.isCancelled() {
                    stopped = true
                    return
                }
                let now = MonotonicClock.now()
                if let deadline = batcher.deadline, now >= deadline { return }
                let untilDeadline = batcher.deadline.map { ($0 - now) / 1_000_000 } ?? 200
                let ready = file.input.waitReadable(timeoutMillis: Int32(max(1, min(200, untilDeadline))))
                progress.addWait(MonotonicClock.now() - now)
                if !ready { continue }
            }
            let n = try file.input.read(
                into: file.buffer.baseAddress! + file.filled, count: file.buffer.count - file.filled)
            if n == 0 {
                file.eof = true
                break
            }
            file.filled += n
            _ = batcher.add(rows: 0, bytes: n, now: MonotonicClock.now())
            let raw = file.input.rawBytesRead
            progress.add(read: raw - file.lastRaw, decoded: Int64(n))
            file.lastRaw = raw
        }
    }

    /// The next chunk of whole records, or nil when every file is read.
    public func next() throws -> SourceItem? {
        while true {
            if current == nil {
                guard try openNext() else { return nil }
            }
            var file = current!
            try fillBuffer(&file)
            let view = UnsafeRawBufferPointer(rebasing: file.buffer[0..<file.filled])
            let cut = file.framer.completeLength(of: view, atEOF: file.eof)
            if cut == 0 {
                if stopped {
                    file.buffer.deallocate()
                    current = nil
                    return nil
                }
                if file.eof {
                    file.buffer.deallocate()
                    current = nil
                    continue
                }
                if file.filled == file.buffer.count { grow(&file) }
                current = file
                continue
            }
            // Hand the buffer over as the chunk; carry the partial record into a fresh buffer (a recycled one
            // when the size fits: reusing chunk buffers spares the kernel faulting in new pages for every chunk).
            let cap = max(context.chunkBytes, file.filled - cut, 16)
            let fresh = pool.take(byteCount: cap)
            let rest = file.filled - cut
            if rest > 0 { fresh.baseAddress!.copyMemory(from: file.buffer.baseAddress! + cut, byteCount: rest) }
            let pool = self.pool
            let chunk = Chunk(
                storage: file.buffer, count: cut, file: paths[fileIndex], fileIndex: fileIndex, fileOffset: file.offset,
                startLine: file.startLine, decoder: file.decoder!, recycle: { pool.give($0) })
            file.buffer = fresh
            file.filled = rest
            file.offset += Int64(cut)
            file.startLine = nil
            if file.eof && rest == 0 {
                fresh.deallocate()
                current = nil
            } else {
                current = file
            }
            return .chunk(chunk)
        }
    }
}

/// Chunk buffers of the usual size, kept for reuse (at most a few: the queues bound how many chunks live).
final class BufferPool: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [UnsafeMutableRawBufferPointer] = []
    private let limit = 3

    deinit { for b in free { b.deallocate() } }

    /// A buffer of exactly `byteCount` bytes: a recycled one if there is one of that size.
    func take(byteCount: Int) -> UnsafeMutableRawBufferPointer {
        lock.lock()
        if let i = free.lastIndex(where: { $0.count == byteCount }) {
            let b = free.remove(at: i)
            lock.unlock()
            return b
        }
        lock.unlock()
        return .allocate(byteCount: byteCount, alignment: 16)
    }

    /// Takes a buffer back (or frees it when the pool is full).
    func give(_ b: UnsafeMutableRawBufferPointer) {
        lock.lock()
        if free.count < limit {
            free.append(b)
            lock.unlock()
            return
        }
        lock.unlock()
        b.deallocate()
    }
}
