import Crypto
import SluiceCore
import SluiceXML
import Testing

/// Golden vectors for the two hashes Sluice stores in users' tables (`content_hash`, `source_hash`). These
/// values are persisted: a change of one byte of either encoding makes every stored record look changed to
/// the next update run. A failure here means the format changed; change it only on purpose, with a note in
/// the README, and update the vectors.
@Suite struct PersistedHashTests {
    private let document = """
        <releases>
        <release id="42"><title>Blue Train </title><master_id is_main_release="true">7</master_id>\
        <artists><artist><id>3</id><name>John Coltrane</name></artist><artist><id>9</id><name>Lee Morgan</name></artist></artists>\
        <genres><genre>Jazz</genre></genres>\
        <extraartists><artist><name>Rudy</name><role>Engineer</role></artist></extraartists></release>
        <release id="43"><title>Empty</title></release>
        </releases>
        """

    private func hex(_ v: Value) -> String {
        guard case .bytes(let b) = v else { return "\(v)" }
        return b.map { String(format: "%02x", $0) }.joined()
    }

    @Test func sourceHashVectors() {
        func h(_ s: String, _ seed: UInt64) -> Int64 {
            let bytes = Array(s.utf8) + [0]  // a readable base address even for the empty input
            return bytes.withUnsafeBytes { SourceHash.hash($0.baseAddress!, count: $0.count - 1, seed: seed) }
        }
        // Every path of the construction: empty, a tail only, 8-byte words, one 32-byte block, blocks + words + tail.
        let vectors: [(String, Int64, Int64)] = [
            ("", 1_350_101_205_680_583_983, 4_969_048_995_287_903_947),
            ("a", -3_091_315_171_577_852_796, 7_875_958_717_969_063_088),
            ("<release id=\"1\"/>", 229_025_412_025_410_749, -7_353_096_605_864_644_443),
            (String(repeating: "0123456789abcdef", count: 2), -3_809_971_499_952_121_322, 7_955_666_867_484_602_815),
            (String(repeating: "xyz", count: 33), -7_028_076_989_909_204_650, -2_917_145_737_585_978_574),
        ]
        for (input, seed0, seed42) in vectors {
            #expect(h(input, 0) == seed0, "\(input.utf8.count) bytes, seed 0")
            #expect(h(input, 42) == seed42, "\(input.utf8.count) bytes, seed 42")
        }
        #expect(SourceHash.seed("release v1") == 10_792_544_693_191_790_984)
    }

    @Test func contentAndSourceHashesOfADecodedDocument() throws {
        let format = try XMLFormat(mapping: mapping)
        let schema = try #require(format.declaredSchema)
        let d = try decodeDocument(document, format)
        let ch = try #require(schema.index(of: "content_hash"))
        let sh = try #require(schema.index(of: "source_hash"))
        // Text is kept exactly since the seed "sluice-xml-source-2": release 42's title keeps its trailing
        // space, so its content hash changed; release 43's values did not change, nor did its content hash.
        #expect(
            d.rows.map { hex($0[ch]) } == [
                "daf59a76bf47ceb99ddba4c689d54e6844576764623e374f455d713aca2b875a",
                "012e596a30193cc66817e555602c26a56efa4384c70639fc4e3413dc5bdf57c5",
            ])
        #expect(d.rows.map { $0[sh] } == [.int64(3_884_869_664_034_954_126), .int64(1_862_827_759_774_353_096)])
        // `trim: true` stores what earlier versions stored: the content hashes are those of "sluice-xml-source-1".
        var trimmed = mapping
        trimmed.trim = true
        let t = try decodeDocument(document, try XMLFormat(mapping: trimmed))
        #expect(
            t.rows.map { hex($0[ch]) } == [
                "198d4a1f0916a09bdc642d9ef54f01af15f83f56cbb709b762b1290d70a29243",
                "012e596a30193cc66817e555602c26a56efa4384c70639fc4e3413dc5bdf57c5",
            ])
    }

    @Test func theContentHashIsSHA256OfTheDocumentedCanonicalEncoding() throws {
        // Release 43 by hand, following the specification on `RecordState.flush(parentRow:)`.
        var bytes: [UInt8] = []
        func int(_ v: Int64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        func text(_ s: String) {
            bytes.append(4)
            withUnsafeBytes(of: UInt32(s.utf8.count).littleEndian) { bytes += $0 }
            bytes += Array(s.utf8)
        }
        bytes.append(1)
        int(43)  // id
        text("Empty")  // title
        bytes += [0, 0, 0]  // master, main, notes: absent
        for _ in 0..<2 {  // release_artist, release_genre: no rows
            bytes.append(9)
            withUnsafeBytes(of: UInt32(0).littleEndian) { bytes += $0 }
        }
        text("[]")  // credits, a JSON list column
        let digest = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        #expect(digest == "012e596a30193cc66817e555602c26a56efa4384c70639fc4e3413dc5bdf57c5")
    }
}
