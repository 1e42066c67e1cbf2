import SluiceCore

#if canImport(Glibc)
    import Glibc
#endif

/// One outcome of decoding: a row or a reject, at its place in the input.
public struct Outcome: Equatable, CustomStringConvertible {
    /// 1-based line of the record (or of what the reject names).
    public var line: Int
    /// Byte offset of the record (or of what the reject names).
    public var offset: Int
    /// The row's values, or nil for a reject.
    public var values: [Value]?
    /// The reject's reason.
    public var reason: String?

    /// `line 3 @17: …`.
    public var description: String {
        "line \(line) @\(offset): " + (values.map { "\($0)" } ?? "reject: \(reason ?? "")")
    }
}

/// Everything decoding an input gave.
public struct Decoded: Equatable {
    /// Rows and rejects, in the order the decoder produced them.
    public var outcomes: [Outcome]
    /// Child-table rows, per child table, in order.
    public var children: [[[Value]]]
    /// The preamble's length.
    public var preambleLength: Int
}

/// Stops the process with a message: a property the fuzzer found broken (libFuzzer keeps the input).
public func violated(_ what: String, input: UnsafeRawBufferPointer) -> Never {
    let shown = String(decoding: input.prefix(400), as: UTF8.self)
    let message = Array("PROPERTY VIOLATED: \(what)\ninput (\(input.count) bytes): \(shown.debugDescription)\n".utf8)
    _ = message.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    abort()
}

/// Decodes `input` the way the runtime does: the preamble, then windows of at most `chunk` bytes cut by the
/// format's framer after whole records (a window grows when no record is whole in it, as the runtime's buffer
/// does), each piece decoded by calls of at most `maxRows` rows. Returns nil when the preamble or the schema
/// cannot be read (an error before any record, not a property).
public func decode(
    _ input: UnsafeRawBufferPointer, format: any RecordFormat, schema declared: Schema?, chunk: Int, maxRows: Int
) -> Decoded? {
    guard let pre = try? format.preamble(input, atEOF: true, file: "fuzz") else { return nil }
    if pre.length > input.count { violated("preamble longer than the input", input: input) }
    let body = UnsafeRawBufferPointer(rebasing: input[pre.length...])
    guard let schema = declared ?? (try? format.inferSchema(sample: body, header: pre.header)), schema.count > 0,
        let decoder = try? format.makeDecoder(schema: schema, header: pre.header, file: "fuzz")
    else { return nil }
    var framer = format.makeFramer()
    var outcomes: [Outcome] = []
    var children = [[[Value]]](repeating: [], count: schema.children.count)
    var at = 0
    var line = 1 + pre.lines
    var window = max(chunk, 1)
    while at < body.count {
        let end = min(body.count, at + window)
        let view = UnsafeRawBufferPointer(rebasing: body[at..<end])
        let cut = framer.completeLength(of: view, atEOF: end == body.count)
        if cut > view.count { violated("the framer cut past its buffer (\(cut) of \(view.count))", input: input) }
        if cut == 0 {
            if end == body.count { violated("the framer kept bytes at the end of the input", input: input) }
            window *= 2
            continue
        }
        window = max(chunk, 1)
        let piece = UnsafeRawBufferPointer(rebasing: view[0..<cut])
        var pos = 0
        var l = 0
        while pos < piece.count {
            let builder = RecordBatchBuilder(schema: schema, trackOrigins: true)
            var found: [RecordReject] = []
            let p = decoder.decode(
                piece, from: pos, line: l, into: builder, maxRows: maxRows, maxBytes: 1 << 30, rejects: &found)
            if p.end < pos || p.end > piece.count {
                violated("decode ended at \(p.end), outside \(pos)...\(piece.count)", input: input)
            }
            let batch = builder.build()
            var here: [Outcome] = []
            for r in 0..<batch.count {
                let o = batch.position(ofRow: r)
                here.append(
                    Outcome(
                        line: line + (o.line ?? 1) - 1, offset: pre.length + at + Int(o.offset ?? 0),
                        values: batch.row(r)))
            }
            for r in found {
                here.append(
                    Outcome(
                        line: line + r.relativeLine, offset: pre.length + at + r.relativeOffset, values: nil,
                        reason: r.reason))
            }
            // Rows and rejects of one call, in input order (a call returns them in two lists).
            here.sort { ($0.offset, $0.line) < ($1.offset, $1.line) }
            outcomes += here
            for (c, child) in batch.children.enumerated() {
                for r in 0..<child.count { children[c].append(child.row(r)) }
            }
            if p.end == pos {
                violated("decode made no progress at byte \(pre.length + at + pos) of \(input.count)", input: input)
            }
            pos = p.end
            l = p.line
        }
        line += l
        at += cut
    }
    return Decoded(outcomes: outcomes, children: children, preambleLength: pre.length)
}

/// The 1-based line of byte `offset` of `input`.
public func lineOf(_ offset: Int, in input: UnsafeRawBufferPointer) -> Int {
    var n = 1
    for i in 0..<min(offset, input.count) where input[i] == 0x0A { n += 1 }
    return n
}

/// Checks the properties every decoder must have, for `input` decoded with `format`:
/// - decoding is independent of chunk size, of where chunks are cut and of rows per call;
/// - every outcome (row or reject) names a place inside the input whose line number is right, and places
///   strictly increase: each record ends in exactly one row or one reject.
public func checkDecoding(
    _ input: UnsafeRawBufferPointer, format: any RecordFormat, schema: Schema?, lineExact: Bool = true
) {
    guard let whole = decode(input, format: format, schema: schema, chunk: 1 << 30, maxRows: 1 << 20) else {
        return
    }
    let knob = input.count > 0 ? Int(input[input.count - 1]) : 0
    for (chunk, rows) in [(1, 1), (2 + knob % 13, 3), (7 + knob, 2), (64, 1 << 20)] {
        guard let other = decode(input, format: format, schema: schema, chunk: chunk, maxRows: rows) else {
            violated("chunk \(chunk): the preamble or schema failed only in chunks", input: input)
        }
        if other != whole {
            let n = min(other.outcomes.count, whole.outcomes.count)
            let i = (0..<n).first { other.outcomes[$0] != whole.outcomes[$0] } ?? n
            let a = i < whole.outcomes.count ? "\(whole.outcomes[i])" : "nothing"
            let b = i < other.outcomes.count ? "\(other.outcomes[i])" : "nothing"
            if getenv("SLUICE_FUZZ_VERBOSE") != nil {
                // Every outcome of both decodings, for a person reading a failure.
                let listed =
                    "whole:\n" + whole.outcomes.map { "  \($0)\n" }.joined() + "chunked (\(chunk) bytes):\n"
                    + other.outcomes.map { "  \($0)\n" }.joined()
                _ = Array(listed.utf8).withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            }
            violated(
                "chunks of \(chunk) bytes, \(rows) rows per call decode differently at outcome \(i): whole \(a), chunked \(b)"
                    + (other.outcomes == whole.outcomes ? " (child rows differ)" : ""), input: input)
        }
    }
    var last = -1
    for o in whole.outcomes {
        if o.offset < whole.preambleLength || o.offset >= input.count {
            violated("\(o) is outside the input's records (\(whole.preambleLength)..<\(input.count))", input: input)
        }
        if o.offset <= last { violated("\(o) does not follow the previous outcome (offset \(last))", input: input) }
        last = o.offset
        if lineExact && o.line != lineOf(o.offset, in: input) {
            violated("\(o): its line should be \(lineOf(o.offset, in: input))", input: input)
        }
    }
}
