import Foundation
import SluiceCore
import SluiceRuntime
import SluiceTesting
import SluiceWorkloads
import Testing

@testable import SluiceContent

@Suite struct ContentTests {
    @Test func pathTemplatesTakeFieldsSlicesVariablesAndEscapedBraces() throws {
        let t = try PathTemplate("{root}/{id:0:2}/{{x}}/{id}", variables: ["root": "/srv"])
        #expect(t.fieldNames == ["id"])
        #expect(throws: SluiceError.self) { try PathTemplate("{id") }
        #expect(throws: SluiceError.self) { try PathTemplate("id}") }
        #expect(throws: SluiceError.self) { try PathTemplate("{id:1}") }
        #expect(throws: SluiceError.self) { try PathTemplate("{id:0:0}") }
    }

    @Test func readHeadReadsTheFirstBytesAndTurnsMissingFilesIntoErrorValues() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("ab/cd"), withIntermediateDirectories: true)
        _ = try dir.write("ab/cd/abcdef", bytes: Array(repeating: 7, count: 5000))
        _ = try dir.write("ab/cd/abcd00", bytes: [1, 2, 3])
        _ = try dir.write("ab/cd/abcd11", bytes: [])
        let schema = try Schema.parse("id:string,n:int64")
        let builder = RecordBatchBuilder(schema: schema)
        let long = String(repeating: "x", count: 5000)
        for (id, n) in [("abcdef", 1), ("abcd00", 2), ("abcd11", 3), ("zz", 4), (nil, 5), (long, 6)]
            as [(String?, Int64)]
        {
            if let id { builder.columns[0].append(string: id) } else { builder.columns[0].appendNull() }
            builder.columns[1].append(int64: n)
            builder.finishRow()
        }
        let transform = ReadHeadTransform(
            path: try PathTemplate("{root}/{id:0:2}/{id:2:2}/{id}", variables: ["root": dir.path]), bytes: 2048)
        let out = try transform.apply(builder.build())
        #expect(out.schema.description == "id:string,n:int64,head:bytes,head_error:string")
        let heads = (0..<out.count).map { out.columns[2].value(at: $0) }
        #expect(heads[0] == .bytes(Array(repeating: 7, count: 2048)))
        #expect(heads[1] == .bytes([1, 2, 3]))
        #expect(heads[2] == .bytes([]))
        #expect(heads[3] == .null && heads[4] == .null && heads[5] == .null)
        let errors = (0..<out.count).map { out.columns[3].value(at: $0) }
        #expect(errors[0] == .null && errors[1] == .null && errors[2] == .null)
        #expect(errors[3] == .string("\(dir.path)/zz//zz: No such file or directory"))
        #expect(errors[4] == .string("path field is null"))
        #expect(errors[5] == .string("path is longer than 4095 bytes"))
        #expect(throws: SluiceError.self) {
            try ReadHeadTransform(path: try PathTemplate("{missing}")).outputSchema(for: schema)
        }
    }

    @Test(arguments: [false, true])
    func mimeAgreesWithLibmagicOnEveryKindOfTheW2Corpus(fastSignatures: Bool) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let gen = W2Generator(blobs: 300, rows: 300)
        try gen.write(root: dir.file("blobs"), rowsCSV: dir.file("rows.csv"))
        let schema = try Schema.parse("blobid:string")
        let builder = RecordBatchBuilder(schema: schema)
        for i in 0..<300 {
            builder.columns[0].append(string: gen.blobID(i))
            builder.finishRow()
        }
        let read = ReadHeadTransform(
            path: try PathTemplate("{root}/{blobid:0:2}/{blobid:2:2}/{blobid}", variables: ["root": dir.file("blobs")]))
        let mime = try MimeTransform(fastSignatures: fastSignatures)
        if fastSignatures { #expect(mime.fast?.answers.count == 13, "\(mime.fast?.answers ?? [:])") }
        let out = try mime.apply(try read.apply(builder.build()))
        let magic = try MagicHandle()
        var seen = Set<String>()
        for i in 0..<300 {
            let path = W2Generator.path(root: dir.file("blobs"), blobID: gen.blobID(i))
            let expected = magic.mimeType(file: path)
            #expect(out.columns[3].value(at: i) == .string(expected ?? "?"), "\(path)")
            seen.insert(expected ?? "?")
        }
        #expect(seen.count >= 20, "\(seen.sorted())")
        #expect(seen.isSuperset(of: ["image/png", "image/jpeg", "application/pdf", "application/json", "text/plain"]))
    }

    /// Heads of the formats whose rules look past the signature (BMP, tar) or that no rule may answer
    /// (ID3-tagged MP3, ASCII signatures before text, boot-sector marks), varied the way real files vary,
    /// each labelled with whether a rule should answer it.
    static func variedHeads() -> [(label: String, head: [UInt8], ruleApplies: Bool)] {
        var x: UInt64 = 42
        func next() -> UInt64 {
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            return x
        }
        func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
        func tarSum(_ h: [UInt8]) -> Int { h.withUnsafeBufferPointer { FastSignatures.tarChecksum($0.baseAddress!) } }
        func le(_ v: Int, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        func payload(_ k: Int) -> [UInt8] {
            switch k % 3 {
            case 0: return bytes(1800)
            case 1: return Array(String(repeating: "alpha bravo\n", count: 150).utf8)
            default: return [UInt8](repeating: 0, count: 1800)
            }
        }
        var out: [(String, [UInt8], Bool)] = []
        for (k, header) in [12, 40, 52, 56, 64, 108, 124, 99].enumerated() {
            var h = Array("BM".utf8) + le(100_000 + k, 4) + le(0, 4) + le(14 + header, 4) + le(header, 4)
            if header == 12 {
                h += le(64, 2) + le(48, 2) + le(1, 2) + le(24, 2)
            } else {
                h += le(640, 4) + le(-480, 4) + le(1, 2) + le([1, 4, 8, 16, 24, 32][k % 6], 2) + le(k % 4, 4)
                h += bytes(header - 20)
            }
            out.append(("bmp header \(header)", h + payload(k), header != 99))
        }
        for (k, tag) in [0, 16, 300, 1200].enumerated() {
            let size = [UInt8((tag >> 21) & 127), UInt8((tag >> 14) & 127), UInt8((tag >> 7) & 127), UInt8(tag & 127)]
            let flags: UInt8 = [0, 0x40, 0x80, 0x10][k]
            let head = Array("ID3".utf8) + [UInt8(2 + k % 3), 0, flags] + size + bytes(tag)
            out.append(("id3 tag \(tag) then an MPEG frame", head + [0xFF, 0xFB, 0x90, 0x64] + payload(k), false))
            out.append(("id3 tag \(tag) without a frame", head + payload(k), false))
        }
        for (k, name) in ["data.bin", "%PDF-1.4", "GIF89a", "#!/bin/sh", "dir/", "x/gpkg-1"].enumerated() {
            var h = FastSignatures.tarHeader(name: name, size: 1000 + k)
            out.append(("tar \(name)", h + payload(k), name != "x/gpkg-1"))
            if k == 0 {
                h.replaceSubrange(257..<265, with: Array("ustar  \u{0}".utf8))
                let digits = Array(String(tarSum(h), radix: 8).utf8) + [0]
                h.replaceSubrange(148..<156, with: digits + [UInt8](repeating: 0x20, count: 8 - digits.count))
                out.append(("tar GNU magic, unpadded checksum", h + payload(k), true))
                h[148] &+= 1
                out.append(("tar bad checksum", h + payload(k), false))
            }
        }
        for (name, signature) in [("bmp", out[1].1.prefix(54)), ("gzip", [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3])] {
            var h = Array(signature) + bytes(1200)
            h[510] = 0x55
            h[511] = 0xAA
            out.append(("\(name) with the boot-sector mark at 510", h, false))
        }
        out.append(
            (
                "bzip2 signature, then CSV text",
                Array("BZh91AY&SY".utf8) + Array(String(repeating: "a,b\n", count: 200).utf8), false
            ))
        var v7 = FastSignatures.tarHeader(name: "%PDF-1.4", size: 10)
        v7.replaceSubrange(257..<265, with: [UInt8](repeating: 0, count: 8))
        v7.replaceSubrange(148..<156, with: Array(String(format: "%06o", tarSum(v7)).utf8) + [0, 0x20])
        out.append(("old-style tar (no ustar magic) named %PDF-1.4", v7 + payload(0), false))
        return out
    }

    @Test func fastSignaturesAnswerExactlyWhatLibmagicSaysAndStepAsideOtherwise() throws {
        let magic = try MagicHandle()
        let fast = FastSignatures(calibratingWith: magic)
        #expect(fast.answers["bmp"] == "image/bmp")
        #expect(fast.answers["mp3"] == nil)
        #expect(fast.answers["tar"] == "application/x-tar")
        for rule in FastSignatures.rules {
            for payload in FastSignatures.payloads {
                let sample = rule.sample + payload
                #expect(sample.withUnsafeBufferPointer { fast.match($0.baseAddress!, $0.count) } != nil, "\(rule.name)")
            }
        }
        for (label, head, applies) in Self.variedHeads() {
            let head = Array(head.prefix(2048))
            let libmagic = head.withUnsafeBytes { b in magic.mimeType(b).0.map { String(cString: $0) } }
            let answer = head.withUnsafeBufferPointer { fast.match($0.baseAddress!, $0.count) }
            #expect((answer != nil) == applies, "\(label): rule \(answer == nil ? "did not answer" : "answered")")
            if let answer { #expect(String(decoding: answer, as: UTF8.self) == libmagic, "\(label)") }
        }
    }
}
