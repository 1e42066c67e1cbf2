import CMagic
import Foundation
import SluiceCore
import SluiceInterfaces

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

/// Signatures whose libmagic MIME type does not depend on the bytes after them, answered without libmagic.
///
/// Each rule's answer is what this machine's libmagic says for the rule's sample, asked at startup with
/// four different payloads after the signature (zeros, one repeated byte, pseudo-random bytes, text); a rule
/// is used only if libmagic gives the same answer, of the expected kind, for all four. The strings therefore
/// always match the installed libmagic, and a libmagic that decides a signature differently disables the rule.
///
/// Only heads libmagic cannot read as text are answered (they hold a byte 0x00–0x03): libmagic's JSON, CSV
/// and text tests can claim a head whose signature is ASCII, such as `%PDF-` or `BZh91AY&SY`, when the rest
/// is text. A head whose first 512 bytes pass libmagic's tar checksum test is answered only by the tar rule,
/// and one with the boot-sector mark `55 AA` at offset 510 only by libmagic, which calls many formats with
/// that mark a DOS/MBR boot sector (a compressed or pixel payload has it once in 65,536 heads).
///
/// Rules: GIF (`GIF87a`/`GIF89a`), PDF (`%PDF-`), gzip (`1f 8b 08`), bzip2 (`BZh[1-9]1AY&SY`), 7-Zip,
/// SQLite 3, PNG (signature and `IHDR`, not animated), JPEG (`ff d8 ff` then a JFIF, Exif,
/// quantization-table or Adobe marker), WebP and WAVE (RIFF), Ogg Vorbis, BMP (a known DIB header size,
/// reserved bytes zero, one plane) and POSIX/GNU tar (a `ustar` header whose checksum libmagic's tar test
/// accepts, and not a Gentoo package). Formats whose type libmagic decides from later bytes always go to
/// libmagic: ZIP-based documents, TIFF-based raw images, ELF, text, and ID3-tagged MP3 (libmagic types
/// whatever follows the tag, and reads random-looking audio as a FAT boot sector about once in a thousand).
public struct FastSignatures: Sendable {
    /// Rule name → the MIME type libmagic gave for its samples.
    public let answers: [String: String]
    private let table: [(rule: Rule, answer: [UInt8])]

    struct Rule: Sendable {
        var name: String
        /// The signature and whatever header the predicate needs; calibration appends payloads to it.
        var sample: [UInt8]
        var expectedPrefix: String
        var matches: @Sendable (UnsafePointer<UInt8>, Int) -> Bool
    }

    static func has(_ p: UnsafePointer<UInt8>, _ n: Int, _ at: Int, _ bytes: [UInt8]) -> Bool {
        guard n >= at + bytes.count else { return false }
        for (i, b) in bytes.enumerated() where p[at + i] != b { return false }
        return true
    }

    static func le16(_ p: UnsafePointer<UInt8>, _ at: Int) -> Int { Int(p[at]) | Int(p[at + 1]) << 8 }
    static func le32(_ p: UnsafePointer<UInt8>, _ at: Int) -> Int { le16(p, at) | le16(p, at + 2) << 16 }

    private static func a(_ s: String) -> [UInt8] { Array(s.utf8) }
    private static func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    private static func le16(_ v: Int) -> [UInt8] { (0..<2).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    private static let gif87 = a("GIF87a"), gif89 = a("GIF89a"), pdf = a("%PDF-"), gzip: [UInt8] = [0x1F, 0x8B, 8]
    private static let bzh = a("BZh"), bzMagic = a("1AY&SY"), sevenZip: [UInt8] = [0x37, 0x7A, 0xBC, 0xAF, 0x27, 0x1C]
    private static let sqlite = a("SQLite format 3\u{0}"), actl = a("acTL"), jpeg: [UInt8] = [0xFF, 0xD8, 0xFF]
    private static let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + a("IHDR")
    private static let riff = a("RIFF"), webp = a("WEBPVP8"), wave = a("WAVEfmt "), oggS = a("OggS")
    private static let vorbis = [1] + a("vorbis"), bm = a("BM")
    private static let ustar = a("ustar\u{0}"), gnuTar = a("ustar  \u{0}"), gpkg = a("/gpkg-1")

    /// DIB header sizes libmagic's BMP test knows (OS/2 1.x and 2.x, Windows 3.x, the V2–V5 headers).
    static let dibHeaderSizes: Set<Int> = [12, 40, 52, 56, 64, 108, 124]

    /// A BMP file header and DIB header: `BM`, zero reserved bytes, a known header size, one plane, and
    /// the pixel data after the headers.
    static func isBMP(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        guard n >= 54, has(p, n, 0, bm), le32(p, 6) == 0 else { return false }
        let header = le32(p, 14)
        guard dibHeaderSizes.contains(header), n >= 14 + header, le32(p, 10) >= 14 + header else { return false }
        return le16(p, header == 12 ? 22 : 26) == 1
    }

    /// A tar header with the `ustar` magic (POSIX or GNU) whose checksum field (octal, optionally
    /// space-padded, ended by NUL or space) equals the unsigned sum of the header's 512 bytes with the
    /// field counted as spaces — libmagic's own tar test, which runs before its magic rules — and whose
    /// name does not end in `/gpkg-1` (Gentoo packages, which libmagic sends to its rules).
    static func isTar(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        guard n >= 512, has(p, n, 257, ustar) || has(p, n, 257, gnuTar), tarChecksumHolds(p, n) else { return false }
        var end = 0
        while end < 100 && p[end] != 0 { end += 1 }
        return !(end < 100 && end >= gpkg.count && has(p, n, end - gpkg.count, gpkg))
    }

    /// Whether the head's first 512 bytes carry a tar checksum libmagic's tar test accepts: the field at
    /// 148 (octal digits, optionally after spaces, ended by NUL, space or the field's end) equals the
    /// unsigned sum of the 512 bytes with the field counted as spaces. Such a head is a tar to libmagic
    /// whatever its first bytes say, so no other rule may answer it.
    static func tarChecksumHolds(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        guard n >= 512 else { return false }
        var i = 148
        while i < 156 && p[i] == 0x20 { i += 1 }
        var value = 0, digits = 0
        while i < 156 && p[i] >= 0x30 && p[i] <= 0x37 {
            value = value << 3 | Int(p[i] - 0x30)
            digits += 1
            i += 1
        }
        guard digits > 0, i == 156 || p[i] == 0 || p[i] == 0x20 else { return false }
        return tarChecksum(p) == value
    }

    /// The sum a tar checksum field holds: the unsigned sum of the header's 512 bytes, counting the field's
    /// own 8 bytes (148–155) as spaces.
    static func tarChecksum(_ p: UnsafePointer<UInt8>) -> Int {
        var sum = 8 * 0x20
        for k in 0..<512 where k < 148 || k >= 156 { sum += Int(p[k]) }
        return sum
    }

    /// Whether the head holds a byte that no encoding libmagic tries (ASCII, UTF-8, Latin-1, extended
    /// ASCII, EBCDIC; UTF-16 and UTF-32 need a byte-order mark none of the signatures starts with) reads as
    /// text: 0x00–0x03. A head without one might be text to libmagic — `BZh91AY&SY` followed by lines with
    /// commas is CSV — so it goes to libmagic.
    static func hasBinaryByte(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        for i in 0..<n where p[i] <= 3 { return true }
        return false
    }

    /// A 512-byte `ustar` header for a file named `name` with a valid checksum.
    static func tarHeader(name: String, size: Int) -> [UInt8] {
        var h = a(name) + [UInt8](repeating: 0, count: 100 - name.utf8.count)
        h += a("0000644\u{0}0001750\u{0}0001750\u{0}") + a(String(size, radix: 8).leftPadded(to: 11)) + [0]
        h += a("14600000000\u{0}") + a("        ") + a("0")
        h += [UInt8](repeating: 0, count: 257 - h.count) + a("ustar\u{0}00")
        h += [UInt8](repeating: 0, count: 512 - h.count)
        let sum = h.withUnsafeBufferPointer { tarChecksum($0.baseAddress!) }
        h.replaceSubrange(148..<156, with: a(String(sum, radix: 8).leftPadded(to: 6)) + [0, 0x20])
        return h
    }

    /// The rules, in order. Tar comes first because libmagic's tar test runs before its magic rules: a tar
    /// whose first member is named `%PDF-1.4` is a tar.
    static let rules: [Rule] = [
        Rule(
            name: "tar", sample: tarHeader(name: "data/report.bin", size: 1500), expectedPrefix: "application/",
            matches: isTar),
        Rule(name: "gif", sample: gif89 + [1, 0, 1, 0, 0, 0, 0], expectedPrefix: "image/") { p, n in
            has(p, n, 0, gif87) || has(p, n, 0, gif89)
        },
        Rule(name: "pdf", sample: a("%PDF-1.4\n"), expectedPrefix: "application/pdf") { p, n in has(p, n, 0, pdf) },
        Rule(name: "gzip", sample: gzip + [0, 0, 0, 0, 0, 0, 3], expectedPrefix: "application/") { p, n in
            has(p, n, 0, gzip)
        },
        Rule(name: "bzip2", sample: a("BZh91AY&SY"), expectedPrefix: "application/") { p, n in
            n >= 10 && has(p, n, 0, bzh) && p[3] >= 0x31 && p[3] <= 0x39 && has(p, n, 4, bzMagic)
        },
        Rule(name: "7z", sample: sevenZip + [0, 4], expectedPrefix: "application/") { p, n in has(p, n, 0, sevenZip) },
        Rule(name: "sqlite", sample: sqlite + [0x10, 0, 1, 1], expectedPrefix: "application/") { p, n in
            has(p, n, 0, sqlite)
        },
        Rule(name: "png", sample: png + [0, 0, 2, 0, 0, 0, 1, 0, 8, 6, 0, 0, 0], expectedPrefix: "image/png") { p, n in
            has(p, n, 0, png) && n >= 41 && !has(p, n, 37, actl)
        },
        Rule(
            name: "jpeg", sample: jpeg + [0xE0, 0, 16] + a("JFIF") + [0, 1, 1, 0, 0, 1, 0, 1, 0, 0],
            expectedPrefix: "image/jpeg"
        ) { p, n in
            n >= 4 && has(p, n, 0, jpeg) && (p[3] == 0xE0 || p[3] == 0xE1 || p[3] == 0xDB || p[3] == 0xEE)
        },
        Rule(name: "webp", sample: riff + [0, 4, 0, 0] + a("WEBPVP8 "), expectedPrefix: "image/") { p, n in
            has(p, n, 0, riff) && has(p, n, 8, webp)
        },
        Rule(
            name: "wav", sample: riff + [0, 4, 0, 0] + wave + [16, 0, 0, 0, 1, 0, 2, 0, 0x44, 0xAC, 0, 0],
            expectedPrefix: "audio/"
        ) { p, n in has(p, n, 0, riff) && has(p, n, 8, wave) },
        Rule(
            name: "ogg-vorbis", sample: oggS + [0, 2] + [UInt8](repeating: 0, count: 22) + vorbis,
            expectedPrefix: "audio/"
        ) {
            p, n in has(p, n, 0, oggS) && has(p, n, 28, vorbis)
        },
        Rule(
            name: "bmp",
            sample: bm + le32(70_000) + le32(0) + le32(54) + le32(40) + le32(160) + le32(120) + le16(1) + le16(24)
                + le32(0) + le32(57_600) + le32(2835) + le32(2835) + le32(0) + le32(0),
            expectedPrefix: "image/bmp", matches: isBMP),
    ]

    /// The payloads calibration appends to each rule's sample: libmagic must type all four the same. Each
    /// holds a NUL, as every head a rule answers does (``hasBinaryByte(_:_:)``).
    static let payloads: [[UInt8]] = {
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        let random = (0..<1536).map { _ -> UInt8 in
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            return UInt8(truncatingIfNeeded: x)
        }
        let text = Array(String(repeating: "the river and the stone, in light of paper\n", count: 35).utf8) + [0]
        return [[UInt8](repeating: 0, count: 1536), [UInt8](repeating: 0x5A, count: 1535) + [0], random + [0], text]
    }()

    /// Asks `magic` for each rule's sample with every payload and keeps the rules whose answers agree and
    /// are of the expected kind.
    public init(calibratingWith magic: MagicHandle) {
        var answers: [String: String] = [:]
        var table: [(rule: Rule, answer: [UInt8])] = []
        rules: for rule in Self.rules {
            var answer: String?
            for payload in Self.payloads {
                let (r, _) = (rule.sample + payload).withUnsafeBytes { magic.mimeType($0) }
                guard let r else { continue rules }
                let text = String(cString: r)
                guard text.hasPrefix(rule.expectedPrefix), answer == nil || answer == text else { continue rules }
                answer = text
            }
            guard let answer else { continue }
            answers[rule.name] = answer
            table.append((rule, Array(answer.utf8)))
        }
        self.answers = answers
        self.table = table
    }

    /// The libmagic answer for a head that matches a rule, or nil (ask libmagic).
    @inline(__always)
    public func match(_ p: UnsafePointer<UInt8>, _ n: Int) -> [UInt8]? {
        guard n >= 4 else { return nil }
        // Only a head some rule matches pays for the checks below; text heads go to libmagic after the
        // signature comparisons alone.
        for entry in table where entry.rule.matches(p, n) {
            guard Self.hasBinaryByte(p, n) else { return nil }
            // libmagic's tar test runs before its rules; its boot-sector rule outranks most signatures.
            if entry.rule.name == "tar" { return entry.answer }
            let bootMark = n >= 512 && p[510] == 0x55 && p[511] == 0xAA
            return bootMark || Self.tarChecksumHolds(p, n) ? nil : entry.answer
        }
        return nil
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
