import CMagic
import Foundation
import SluiceCore
import SluiceRuntime

/// A libmagic handle, loaded with the system database once.
public final class MagicHandle: @unchecked Sendable {
    let cookie: OpaquePointer

    /// Opens libmagic in MIME-type mode (`image/png`) and loads its default database.
    /// - Throws: ``SluiceError`` (`.config`) when libmagic or its database cannot be loaded.
    public init() throws {
        guard let c = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR) else {
            throw SluiceError(.config, "libmagic: magic_open failed")
        }
        if magic_load(c, nil) != 0 {
            let reason = magic_error(c).map { String(cString: $0) } ?? "unknown error"
            magic_close(c)
            throw SluiceError(.config, "libmagic: cannot load the magic database: \(reason)")
        }
        cookie = c
    }

    deinit { magic_close(cookie) }

    /// The MIME type of `bytes`, or nil with libmagic's error.
    public func mimeType(_ bytes: UnsafeRawBufferPointer) -> (UnsafePointer<CChar>?, String?) {
        if let r = magic_buffer(cookie, bytes.baseAddress, bytes.count) { return (r, nil) }
        return (nil, magic_error(cookie).map { String(cString: $0) } ?? "libmagic failed")
    }

    /// The MIME type of the file at `path` (libmagic reading the file itself).
    public func mimeType(file path: String) -> String? {
        magic_file(cookie, path).map { String(cString: $0) }
    }
}

/// Handles shared by the decode workers: a worker takes one for a batch and gives it back, so there are
/// at most as many handles as workers, each loaded once.
final class MagicPool: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [MagicHandle] = []

    func take() throws -> MagicHandle {
        lock.lock()
        if let h = free.popLast() {
            lock.unlock()
            return h
        }
        lock.unlock()
        return try MagicHandle()
    }

    func give(_ h: MagicHandle) {
        lock.lock()
        free.append(h)
        lock.unlock()
    }
}

/// Detects the MIME type of a bytes column (default `head`, from ``ReadHeadTransform``) with libmagic and
/// adds it as a string column (default `mime_type`). Runs on every decode worker, each with its own handle.
/// A null input gives a null type.
///
/// With `fastSignatures`, heads that start with one of a few unambiguous signatures (``FastSignatures``)
/// skip libmagic and get the answer libmagic gave, at startup, for that signature; everything else goes
/// to libmagic.
public struct MimeTransform: Transform {
    /// The bytes column to look at.
    public let input: String
    /// The output column.
    public let output: String
    /// The signature table, when enabled.
    public let fast: FastSignatures?
    private let pool = MagicPool()

    /// Creates the transform; loads one libmagic handle now so a broken installation fails before the run.
    /// - Throws: ``SluiceError`` (`.config`) when libmagic cannot be loaded.
    public init(input: String = "head", output: String = "mime_type", fastSignatures: Bool = false) throws {
        self.input = input
        self.output = output
        let magic = try MagicHandle()
        fast = fastSignatures ? FastSignatures(calibratingWith: magic) : nil
        pool.give(magic)
    }

    /// `mime`.
    public var name: String { "mime" }

    /// The input plus `output: string`.
    public func outputSchema(for schema: Schema) throws -> Schema {
        guard let i = schema.index(of: input) else {
            throw SluiceError(.config, "mime: input column '\(input)' is not a field (\(schema)); add read_head first")
        }
        guard schema.fields[i].type == .bytes || schema.fields[i].type == .string else {
            throw SluiceError(.config, "mime: input column '\(input)' must be bytes or string")
        }
        var s = schema
        s.fields.removeAll { $0.name == output }
        s.fields.append(Field(output, .string))
        return s
    }

    /// Detects every row's type.
    public func apply(_ batch: RecordBatch) throws -> RecordBatch {
        let out = try outputSchema(for: batch.schema)
        let magic = try pool.take()
        defer { pool.give(magic) }
        let col = Column(type: .string, capacity: batch.count, byteCapacity: batch.count * 24)
        let v = batch.columns[batch.schema.index(of: input)!].view
        withExtendedLifetime(batch) {
            for row in 0..<batch.count {
                if v.isNull(row) {
                    col.appendNull()
                    continue
                }
                let (p, n) = v.bytes(row)
                if let fast, let known = fast.match(p, n) {
                    known.withUnsafeBufferPointer { col.append(bytes: UnsafeRawBufferPointer($0)) }
                    continue
                }
                let (r, _) = magic.mimeType(UnsafeRawBufferPointer(start: p, count: n))
                guard let r else {
                    col.appendNull()
                    continue
                }
                col.append(bytes: UnsafeRawBufferPointer(start: r, count: strlen(r)))
            }
        }
        var cols = batch.columns.enumerated().filter { batch.schema.fields[$0.offset].name != output }.map(\.element)
        cols.append(col)
        return RecordBatch(
            schema: out, columns: cols, count: batch.count, origin: batch.origin, rowOrigins: batch.rowOrigins,
            inputBytes: batch.inputBytes)
    }
}

/// Signatures whose libmagic MIME type does not depend on anything after them, answered without libmagic.
///
/// Each rule's answer is what this machine's libmagic says for a sample that starts with the signature,
/// asked once at startup, so the strings always match the installed libmagic; a rule whose sample libmagic
/// does not type as the rule expects is left out. Rules: GIF (`GIF87a`/`GIF89a`), PDF (`%PDF-`), gzip
/// (`1f 8b 08`), bzip2 (`BZh[1-9]1AY&SY`), 7-Zip, SQLite 3, PNG (signature and `IHDR`, not animated),
/// JPEG (`ff d8 ff` then a JFIF, Exif, quantization-table or Adobe marker), WebP and WAVE (RIFF) and Ogg
/// Vorbis. Formats whose type libmagic decides from later bytes (ZIP-based documents, TIFF-based raw
/// images, ELF, ID3, text) always go to libmagic.
public struct FastSignatures: Sendable {
    /// Rule name → the MIME type libmagic gave for its sample.
    public let answers: [String: String]
    private let table: [(rule: Rule, answer: [UInt8])]

    struct Rule: Sendable {
        var name: String
        var sample: [UInt8]
        var expectedPrefix: String
        var matches: @Sendable (UnsafePointer<UInt8>, Int) -> Bool
    }

    static func has(_ p: UnsafePointer<UInt8>, _ n: Int, _ at: Int, _ bytes: [UInt8]) -> Bool {
        guard n >= at + bytes.count else { return false }
        for (i, b) in bytes.enumerated() where p[at + i] != b { return false }
        return true
    }

    private static func a(_ s: String) -> [UInt8] { Array(s.utf8) }
    private static let gif87 = a("GIF87a"), gif89 = a("GIF89a"), pdf = a("%PDF-"), gzip: [UInt8] = [0x1F, 0x8B, 8]
    private static let bzh = a("BZh"), bzMagic = a("1AY&SY"), sevenZip: [UInt8] = [0x37, 0x7A, 0xBC, 0xAF, 0x27, 0x1C]
    private static let sqlite = a("SQLite format 3\u{0}"), actl = a("acTL"), jpeg: [UInt8] = [0xFF, 0xD8, 0xFF]
    private static let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + a("IHDR")
    private static let riff = a("RIFF"), webp = a("WEBPVP8"), wave = a("WAVEfmt "), oggS = a("OggS")
    private static let vorbis = [1] + a("vorbis")

    static let rules: [Rule] = {
        let filler = [UInt8](repeating: 0x5A, count: 600)
        return [
            Rule(name: "gif", sample: gif89 + [1, 0, 1, 0, 0, 0, 0] + filler, expectedPrefix: "image/") { p, n in
                has(p, n, 0, gif87) || has(p, n, 0, gif89)
            },
            Rule(name: "pdf", sample: a("%PDF-1.4\n") + filler, expectedPrefix: "application/pdf") { p, n in
                has(p, n, 0, pdf)
            },
            Rule(name: "gzip", sample: gzip + [0, 0, 0, 0, 0, 0, 3] + filler, expectedPrefix: "application/") {
                p, n in has(p, n, 0, gzip)
            },
            Rule(name: "bzip2", sample: a("BZh91AY&SY") + filler, expectedPrefix: "application/") { p, n in
                n >= 10 && has(p, n, 0, bzh) && p[3] >= 0x31 && p[3] <= 0x39 && has(p, n, 4, bzMagic)
            },
            Rule(name: "7z", sample: sevenZip + [0, 4] + filler, expectedPrefix: "application/") { p, n in
                has(p, n, 0, sevenZip)
            },
            Rule(name: "sqlite", sample: sqlite + [0x10, 0, 1, 1] + filler, expectedPrefix: "application/") { p, n in
                has(p, n, 0, sqlite)
            },
            Rule(
                name: "png", sample: png + [0, 0, 2, 0, 0, 0, 1, 0, 8, 6, 0, 0, 0] + filler, expectedPrefix: "image/png"
            ) {
                p, n in has(p, n, 0, png) && n >= 41 && !has(p, n, 37, actl)
            },
            Rule(
                name: "jpeg", sample: jpeg + [0xE0, 0, 16] + a("JFIF") + [0, 1, 1, 0, 0, 1, 0, 1, 0, 0] + filler,
                expectedPrefix: "image/jpeg"
            ) { p, n in
                n >= 4 && has(p, n, 0, jpeg) && (p[3] == 0xE0 || p[3] == 0xE1 || p[3] == 0xDB || p[3] == 0xEE)
            },
            Rule(name: "webp", sample: riff + [0, 4, 0, 0] + a("WEBPVP8 ") + filler, expectedPrefix: "image/") {
                p, n in has(p, n, 0, riff) && has(p, n, 8, webp)
            },
            Rule(
                name: "wav",
                sample: riff + [0, 4, 0, 0] + wave + [16, 0, 0, 0, 1, 0, 2, 0, 0x44, 0xAC, 0, 0] + filler,
                expectedPrefix: "audio/"
            ) { p, n in has(p, n, 0, riff) && has(p, n, 8, wave) },
            Rule(
                name: "ogg-vorbis", sample: oggS + [0, 2] + [UInt8](repeating: 0, count: 22) + vorbis + filler,
                expectedPrefix: "audio/"
            ) { p, n in has(p, n, 0, oggS) && has(p, n, 28, vorbis) },
        ]
    }()

    /// Asks `magic` for each rule's sample and keeps the rules whose answer is of the expected kind.
    public init(calibratingWith magic: MagicHandle) {
        var answers: [String: String] = [:]
        var table: [(rule: Rule, answer: [UInt8])] = []
        for rule in Self.rules {
            let (r, _) = rule.sample.withUnsafeBytes { magic.mimeType($0) }
            guard let r else { continue }
            let text = String(cString: r)
            guard text.hasPrefix(rule.expectedPrefix) else { continue }
            answers[rule.name] = text
            table.append((rule, Array(text.utf8)))
        }
        self.answers = answers
        self.table = table
    }

    /// The libmagic answer for a head that matches a rule, or nil (ask libmagic).
    @inline(__always)
    public func match(_ p: UnsafePointer<UInt8>, _ n: Int) -> [UInt8]? {
        guard n >= 4 else { return nil }
        for entry in table where entry.rule.matches(p, n) { return entry.answer }
        return nil
    }
}
