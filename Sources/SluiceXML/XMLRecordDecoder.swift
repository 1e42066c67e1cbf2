import Crypto
import SluiceCore
import SluiceReport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A value captured while a record is read, before it is converted into its column.
struct Slot {
    enum Kind: UInt8 {
        case none
        /// Raw bytes of the input, references to decode when `refs`.
        case span
        /// CDATA: literal bytes of the input.
        case literal
        /// Already decoded bytes in the scratch buffer.
        case scratch
    }
    var kind = Kind.none
    /// The element ended (or the attribute was read): later text of the same name is ignored.
    var final = false
    var refs = false
    /// Trim surrounding whitespace (element text the mapping trims, not attribute values).
    var trim = false
    /// The text so far is whitespace only (no reference, no CDATA): if a child element follows, it is the
    /// layout between elements, not a value.
    var blank = false
    /// The element has had a child element: whitespace-only text after it is layout too.
    var mixed = false
    /// A list (``XMLRepeated/list``): `scratch[start..<end]` holds its items, each a 4-byte length and the
    /// item's decoded bytes.
    var list = false
    /// The open item's length prefix, relative to `start` (-1: no item open).
    var item = -1
    var start = 0
    var end = 0
}

/// Decodes record elements of a chunk into parent rows, child-table rows and content hashes.
final class XMLRecordDecoder: RecordDecoder, @unchecked Sendable {
    let compiled: CompiledMapping
    let schema: Schema
    let skimmer: XMLRecordSkimmer
    let file: String
    let stored: StoredBox

    let ignored: IgnoredPaths

    init(compiled: CompiledMapping, schema: Schema, file: String, stored: StoredBox, ignored: IgnoredPaths) {
        self.compiled = compiled
        self.schema = schema
        skimmer = XMLRecordSkimmer(
            recordName: compiled.mapping.recordName, containerName: compiled.mapping.recordPath.dropLast().last ?? "")
        self.file = file
        self.stored = stored
        self.ignored = ignored
    }

    /// The int64 value of the record start tag's attribute `name` (the key), if it is there and plain digits.
    private static func keyAttribute(_ scanner: XMLScanner, _ name: [UInt8], _ p: UnsafePointer<UInt8>) -> Int64? {
        name.withUnsafeBufferPointer { n in
            scanner.withAttributes { attrs -> Int64? in
                for a in attrs where a.name.count == n.count && XMLText.same(p + a.name.start, n.baseAddress!, n.count)
                {
                    if a.value.hasReferences { return nil }
                    return ValueParsing.parseInt64(p + a.value.start, a.value.count)
                }
                return nil
            }
        }
    }

    func decode(
        _ chunk: UnsafeRawBufferPointer, from start: Int, line: Int, into builder: RecordBatchBuilder, maxRows: Int,
        maxBytes: Int, rejects: inout [RecordReject]
    ) -> DecodeProgress {
        guard start < chunk.count, let raw = chunk.baseAddress else { return DecodeProgress(end: start, line: line) }
        var state = RecordState(compiled: compiled, base: raw.assumingMemoryBound(to: UInt8.self), count: chunk.count)
        defer {
            if !state.ignored.isEmpty { ignored.add(state.ignored, state.ignoredNames, paths: compiled.nodePaths) }
            state.free()
        }
        state.bind(builder)
        var scanner = XMLScanner(chunk, from: start, tolerant: compiled.mapping.tolerant)
        let p = state.base
        var lineAt = line
        var linePos = start
        func lineOf(_ offset: Int) -> Int {
            if offset >= linePos {
                lineAt += XMLText.lineFeeds(p, linePos, offset)
            } else {
                lineAt -= XMLText.lineFeeds(p, offset, linePos)
            }
            linePos = offset
            return lineAt
        }
        // The reject names the error's line and byte offset. (A column is not given: a chunk can begin
        // mid-line, so the column of a chunk's first byte is unknown here.)
        //
        // A chunk ends where the framer cut it, so what a decoder sees of a broken item must not depend on the
        // cut: the item ends where the skimmer (which the framer uses) sees it end, and an error at or past
        // that end, or one found because the bytes ran out, is that the item is not closed. Any other error
        // lies in bytes every chunk cut holds alike.
        func reject(recordStart: Int, errorAt found: Int, reason given: String, incomplete: Bool = false) -> Int {
            let end = skimmer.itemEnd(chunk, at: recordStart, recover: true) ?? chunk.count
            var errorAt = found
            var reason = given
            if incomplete || found >= end {
                errorAt = recordStart
                reason = notClosed(recordStart)
            }
            let shown = min(end - recordStart, 16 << 10)
            let l = lineOf(errorAt)
            rejects.append(
                RecordReject(
                    relativeLine: l, relativeOffset: errorAt,
                    raw: Array(UnsafeBufferPointer(start: p + recordStart, count: shown)),
                    reason: reason))
            return end
        }
        func reject(recordStart: Int, _ error: XMLError) -> Int {
            reject(recordStart: recordStart, errorAt: error.offset, reason: error.reason, incomplete: error.incomplete)
        }
        // Why the item at `start` (its `<`) is rejected when it does not end: the record's reason for a record.
        func notClosed(_ start: Int) -> String {
            let name = XMLText.tagName(p, from: start + 1, end: chunk.count)
            if name == compiled.mapping.recordName { return state.notClosed }
            let r = compiled.mapping.recordName
            return name.isEmpty
                ? "the markup here is not closed before the next <\(r)> or the end of the input"
                : "<\(name)> is not closed: no </\(name)> before the next <\(r)> or the end of the input"
        }

        let recordName = state.recordName
        let recordNameLength = state.recordNameLength
        // An update run: records whose raw bytes hash to the stored source hash are skipped undecoded.
        let sourceColumn = compiled.sourceHashColumn
        let keyName = compiled.keyAttribute
        let seed = compiled.sourceSeed
        let storedHashes = sourceColumn != nil && keyName != nil ? stored.value.withLock { $0 } : nil
        let chunkPosition = builder.chunkPosition
        while builder.count < maxRows {
            // Summing the columns' sizes walks every column: do it every 64 records, not every record.
            if builder.count & 63 == 63 && builder.dataBytes >= maxBytes { break }
            let here = scanner.position
            if here >= chunk.count { break }
            // The container's end tag (more records may follow, as in concatenated documents) or a stray end
            // tag, left by a broken record, is skipped: the records after it are still read.
            if p[here] == UInt8(ascii: "<") && here + 1 < chunk.count && p[here + 1] == UInt8(ascii: "/") {
                if let (end, whole) = XMLRecordSkimmer.endTagEnd(p, here, chunk.count), whole {
                    scanner.reset(to: end)
                } else {
                    scanner.reset(
                        to: reject(
                            recordStart: here, errorAt: here,
                            reason:
                                "end tag </\(XMLText.tagName(p, from: here + 2, end: chunk.count))> is not closed with '>'"
                        ))
                }
                continue
            }
            let event: XMLEvent
            do {
                event = try scanner.next()
            } catch {
                scanner.reset(to: reject(recordStart: here, error))
                continue
            }
            switch event {
            case .endOfInput: break
            case .start(let name):
                guard name.count == recordNameLength && XMLText.same(p + name.start, recordName, recordNameLength)
                else {
                    if scanner.equals(name, skimmer.containerName) {
                        // The container's start tag between records (a second document): it opens nothing.
                        scanner.reset(to: scanner.position)
                        continue
                    }
                    // Another element between records: skipped, within the bytes the skimmer gives it (a record
                    // start ends an unclosed one), as every chunk cut sees it.
                    let end = skimmer.itemEnd(chunk, at: here, recover: true) ?? chunk.count
                    let window = UnsafeRawBufferPointer(rebasing: chunk[0..<end])
                    var junk = XMLScanner(window, from: here, tolerant: compiled.mapping.tolerant)
                    do {
                        _ = try junk.next()
                        try junk.skipElement()
                        scanner.reset(to: junk.position)
                    } catch {
                        scanner.reset(to: reject(recordStart: here, error))
                    }
                    continue
                }
                // The source hash of the record's bytes, once computed (a changed record is hashed once).
                var hashed: (end: Int, hash: Int64)?
                if let storedHashes, let keyName {
                    let end = skimmer.firstRecordEnd(chunk, from: here)
                    if end > 0, let key = Self.keyAttribute(scanner, keyName, p) {
                        let h = SourceHash.hash(p + here, count: end - here, seed: seed)
                        hashed = (end, h)
                        if storedHashes.claimUnchanged(key: key, hash: h, position: chunkPosition + Int64(here)) {
                            builder.unchangedKeys.append(key)
                            scanner.reset(to: end)
                            continue
                        }
                    }
                }
                do {
                    try state.read(&scanner, recordStart: here)
                } catch {
                    scanner.reset(to: reject(recordStart: here, error))
                    continue
                }
                if let bad = XMLText.invalidUTF8(p, here, scanner.position) {
                    _ = reject(recordStart: here, errorAt: bad, reason: "invalid UTF-8")
                    continue
                }
                let l = lineOf(here)
                if let problem = state.flush(parentRow: builder.count) {
                    builder.rollbackRow()
                    _ = reject(recordStart: here, errorAt: here, reason: problem)
                    scanner.reset(to: scanner.position)
                    continue
                }
                if let sc = sourceColumn {
                    let end = scanner.position
                    let h =
                        hashed.flatMap { $0.end == end ? $0.hash : nil }
                        ?? SourceHash.hash(p + here, count: end - here, seed: seed)
                    state.columns[sc]._withUnsafeGuaranteedRef { $0.append(int64: h) }
                    if let storedHashes, let kf = compiled.keyField {
                        let row = builder.count
                        let key = state.columns[kf]._withUnsafeGuaranteedRef {
                            $0.isNull(row) ? nil : $0.int64(at: row)
                        }
                        if let key, !storedHashes.claimDecoded(key: key, position: chunkPosition + Int64(here)) {
                            // A later occurrence of the key was skipped as unchanged: it, not this one, stays.
                            builder.rollbackRow()
                            builder.supersededRecords += 1
                            continue
                        }
                    }
                }
                builder.finishRow(line: UInt32(truncatingIfNeeded: l), offset: UInt32(truncatingIfNeeded: here))
            default:
                continue
            }
            if case .endOfInput = event { break }
        }
        let end = scanner.position
        return DecodeProgress(end: end, line: lineOf(end))
    }
}

/// Elements a mapping does not cover, counted by path over a run (every decoder of the format adds to it once
/// per chunk), for the run report: nothing is dropped unseen.
final class IgnoredPaths: Sendable {
    private let counts = Locked<[String: Int]>([:])

    /// Adds one chunk's counts (keyed by hash, with each hash's parent node and name).
    func add(_ found: [UInt64: Int], _ names: [UInt64: (Int, String)], paths: [String]) {
        counts.withLock { c in
            for (h, n) in found {
                guard let (parent, name) = names[h] else { continue }
                let path = paths[parent].isEmpty ? name : paths[parent] + "/" + name
                c[path, default: 0] += n
            }
        }
    }

    /// One line per ignored path, most frequent first (at most 20, then how many more).
    func lines() -> [(label: String, text: String)] {
        let all = counts.withLock { $0 }.sorted { ($0.value, $1.key) > ($1.value, $0.key) }
        var out = all.prefix(20).map {
            (label: "ignored", text: "\($0.key): \(Format.count(Int64($0.value))) elements not in the mapping")
        }
        if all.count > 20 { out.append((label: "ignored", text: "and \(all.count - 20) more paths")) }
        return out
    }
}
