import Foundation

/// The W2 MIME-backfill workload: a by-hash blob store (`root/ab/cd/abcd…`, 40-hex names) whose files start
/// with the real signatures of two dozen common types (PNG, JPEG, GIF, PDF, ZIP, gzip, ELF, XML, HTML,
/// JSON, text, …) and vary in size, plus a CSV of file rows (`id,blobid`) that point at them with
/// duplicates: the first `blobs` rows name every blob once, the rest name random blobs. Deterministic
/// for a seed. 1x = 1,000,000 rows / 200,000 blobs.
public struct W2Generator: Sendable {
    /// Distinct blobs.
    public var blobs: Int
    /// File rows.
    public var rows: Int
    /// The seed. Default: 2.
    public var seed: UInt64

    /// Creates a generator.
    public init(blobs: Int, rows: Int, seed: UInt64 = 2) {
        self.blobs = blobs
        self.rows = max(rows, blobs)
        self.seed = seed
    }

    /// The version of the content written: bumped whenever a blob's bytes change, so benchmarks never
    /// reuse a store written by an older generator. 2: tar headers carry a valid checksum.
    public static let version = 2

    /// The kinds of content written, by name.
    public static let kinds = [
        "png", "jpeg", "gif", "pdf", "zip", "gzip", "elf", "xml", "html", "json", "text", "bmp", "tiff", "webp",
        "mp3", "wav", "ogg", "bzip2", "7z", "postscript", "shell", "sqlite", "tar", "rtf",
    ]

    /// The blob id (40 hex digits) of blob `i`.
    public func blobID(_ i: Int) -> String {
        var r = SplitMix64(seed: seed &* 0x100_0000_01B3 &+ UInt64(i))
        var s = ""
        s.reserveCapacity(40)
        let hex = Array("0123456789abcdef")
        for _ in 0..<5 {
            let v = r.next()
            for k in 0..<8 { s.append(hex[Int((v >> (60 - 4 * UInt64(k))) & 15)]) }
        }
        return s
    }

    /// The path of blob `id` under `root`.
    public static func path(root: String, blobID id: String) -> String {
        let b = Array(id)
        return "\(root)/\(String(b[0..<2]))/\(String(b[2..<4]))/\(id)"
    }

    /// Writes the blob store under `root` and the file rows to `rowsCSV`; `progress` gets the blobs written.
    public func write(root: String, rowsCSV: String, progress: ((Int) -> Void)? = nil) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        var made = Set<String>()
        for i in 0..<blobs {
            let id = blobID(i)
            let p = Self.path(root: root, blobID: id)
            let dir = (p as NSString).deletingLastPathComponent
            if !made.contains(dir) {
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                made.insert(dir)
            }
            let bytes = content(i)
            guard fm.createFile(atPath: p, contents: Data(bytes)) else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: p])
            }
            if i % 10_000 == 0 { progress?(i) }
        }
        let out = try ByteSink(path: rowsCSV, gzip: false)
        var r = SplitMix64(seed: seed ^ 0x5EED)
        var line: [UInt8] = Array("id,blobid\n".utf8)
        for i in 0..<rows {
            let b = i < blobs ? i : Int(r.below(UInt64(blobs)))
            line += Array("\(i + 1),\(blobID(b))\n".utf8)
            if line.count > 1 << 16 {
                try out.write(line)
                line.removeAll(keepingCapacity: true)
            }
        }
        try out.write(line)
        try out.close()
    }

    /// The bytes of blob `i`: a signature for its kind, then filler of that kind (text for text formats),
    /// sized log-uniformly between 64 bytes and 16 KiB (JSON stays under 2 KiB so it is whole in the head).
    public func content(_ i: Int) -> [UInt8] {
        var r = SplitMix64(seed: seed &+ 0xB10B &+ UInt64(i) &* 0x9E37)
        let kind = Self.kinds[Int(r.below(UInt64(Self.kinds.count)))]
        let logSize = 6.0 + Double(r.below(1_000_000)) / 1_000_000 * 8.0
        var size = Int(pow(2.0, logSize))
        func random(_ n: Int) -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(n)
            while out.count < n {
                let v = r.next()
                for k in 0..<8 where out.count < n { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(k)))) }
            }
            return out
        }
        func words(_ n: Int) -> [UInt8] {
            let vocabulary = [
                "alpha", "bravo", "charlie", "delta", "echo", "river", "stone", "light", "paper", "window",
                "the", "of", "and", "a", "to", "in", "is", "it", "that", "was",
            ]
            var out: [UInt8] = []
            var col = 0
            while out.count < n {
                let w = vocabulary[Int(r.below(UInt64(vocabulary.count)))]
                out += Array(w.utf8)
                col += w.count + 1
                if col > 70 {
                    out.append(10)
                    col = 0
                } else {
                    out.append(32)
                }
            }
            return Array(out.prefix(n))
        }
        func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        func le16(_ v: Int) -> [UInt8] { (0..<2).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        func be32(_ v: Int) -> [UInt8] { (0..<4).reversed().map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        var head: [UInt8]
        var textBody = false
        switch kind {
        case "png":
            head =
                [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + be32(13) + Array("IHDR".utf8) + be32(640)
                + be32(480) + [8, 6, 0, 0, 0] + random(4)
        case "jpeg":
            head = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10] + Array("JFIF".utf8) + [0, 1, 1, 0, 0, 1, 0, 1, 0, 0]
        case "gif": head = Array("GIF89a".utf8) + le16(320) + le16(200) + [0xF7, 0, 0]
        case "pdf":
            head = Array("%PDF-1.4\n%\u{e2}\u{e3}\u{cf}\u{d3}\n1 0 obj\n<< /Type /Catalog >>\nendobj\n".utf8)
        case "zip":
            head =
                [0x50, 0x4B, 0x03, 0x04, 20, 0, 0, 0, 8, 0] + random(4) + random(4) + le32(size) + le32(size * 2)
                + le16(8) + le16(0) + Array("data.bin".utf8)
        case "gzip": head = [0x1F, 0x8B, 0x08, 0x00] + random(4) + [0x00, 0x03]
        case "elf":
            // ELF64 executable header (64 bytes) and one PT_LOAD program header (56 bytes), no sections.
            size = max(size, 4096)
            func le64(_ v: Int) -> [UInt8] { le32(v) + le32(0) }
            head =
                [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8) + le16(2) + le16(0x3E)
                + le32(1) + le64(0x401000) + le64(64) + le64(0) + le32(0) + le16(64) + le16(56) + le16(1)
                + le16(64) + le16(0) + le16(0)
            head +=
                le32(1) + le32(5) + le64(0) + le64(0x400000) + le64(0x400000) + le64(size) + le64(size)
                + le64(0x1000)
        case "xml":
            head = Array("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<catalog>\n  <item>".utf8)
            textBody = true
        case "html":
            head = Array("<!DOCTYPE html>\n<html>\n<head><title>page</title></head>\n<body>\n<p>".utf8)
            textBody = true
        case "json":
            size = min(size, 1500)
            var s = "{\"id\": \(i), \"items\": ["
            while s.utf8.count < size - 40 {
                s +=
                    "{\"k\": \(r.below(1000)), \"v\": \"\(String(decoding: words(8), as: UTF8.self).replacingOccurrences(of: "\n", with: " "))\"}, "
            }
            s += "{\"k\": 0}]}\n"
            return Array(s.utf8)
        case "text":
            head = []
            textBody = true
        case "bmp":
            head =
                Array("BM".utf8) + le32(size) + le32(0) + le32(54) + le32(40) + le32(64) + le32(64) + le16(1)
                + le16(24) + le32(0) + le32(0) + le32(2835) + le32(2835) + le32(0) + le32(0)
        case "tiff": head = [0x49, 0x49, 0x2A, 0x00] + le32(8) + le16(1) + le16(256) + le16(3) + le32(1) + le32(64)
        case "webp": head = Array("RIFF".utf8) + le32(size) + Array("WEBPVP8 ".utf8) + le32(size - 20)
        case "mp3":
            // ID3v2.3 tag of 16 bytes of padding, then an MPEG-1 layer III frame header.
            head =
                Array("ID3".utf8) + [3, 0, 0, 0, 0, 0, 16] + [UInt8](repeating: 0, count: 16) + [
                    0xFF, 0xFB, 0x90, 0x64,
                ]
        case "wav":
            head =
                Array("RIFF".utf8) + le32(size) + Array("WAVEfmt ".utf8) + le32(16) + le16(1) + le16(2)
                + le32(44100) + le32(176_400) + le16(4) + le16(16) + Array("data".utf8) + le32(size - 44)
        case "ogg":
            head =
                Array("OggS".utf8) + [0, 2] + [UInt8](repeating: 0, count: 8) + random(4) + le32(0) + random(4)
                + [1, 0x1E, 1] + Array("vorbis".utf8) + le32(0) + [2] + le32(44100)
        case "bzip2": head = Array("BZh91AY&SY".utf8)
        case "7z": head = [0x37, 0x7A, 0xBC, 0xAF, 0x27, 0x1C, 0x00, 0x04]
        case "postscript":
            head = Array("%!PS-Adobe-3.0\n%%Creator: sluice\n%%Pages: 1\n".utf8)
            textBody = true
        case "shell":
            head = Array("#!/bin/sh\nset -e\necho ".utf8)
            textBody = true
        case "sqlite": head = Array("SQLite format 3\u{0}".utf8) + be32(0x1000_0101) + [0x40, 0x20, 0x20]
        case "tar":
            var h = Array("data.bin".utf8) + [UInt8](repeating: 0, count: 100 - 8)
            h += Array("0000644\u{0}0001750\u{0}0001750\u{0}".utf8)
            h += Array(String(format: "%011o", size).utf8) + [0]
            h += Array("14600000000\u{0}".utf8) + Array("        ".utf8) + Array("0".utf8)
            h += [UInt8](repeating: 0, count: 257 - h.count) + Array("ustar\u{0}00".utf8)
            h += [UInt8](repeating: 0, count: 512 - h.count)
            // The checksum as tar writes it: six octal digits, NUL, space; the sum counts the field as spaces.
            let sum = h.reduce(0) { $0 + Int($1) }
            h.replaceSubrange(148..<156, with: Array(String(format: "%06o", sum).utf8) + [0, 0x20])
            head = h
        default:  // rtf
            head = Array("{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times;}}\n".utf8)
            textBody = true
        }
        size = max(size, head.count + 16)
        return head + (textBody ? words(size - head.count) : random(size - head.count))
    }
}
