import Foundation
import SluiceCore

/// The W5 workload: a Discogs-shaped releases dump (`<releases><release id="…">…`), deterministic from a
/// seed, streamed to gzip in constant memory, plus an update dump derived from it.
///
/// Each release has, on average: 1.3 artists, 1.2 labels, 1.1 formats (with descriptions), 1.5 genres,
/// 2 styles, 10 tracks, 4.5 identifiers, 4 companies and 2 videos — with the explicit mapping in
/// `examples/discogs-releases.yaml`, about 28 rows per release — plus images and extra artists. Titles and
/// notes carry escaped `&amp;`, bare `&` and `&#13;` as the real dumps do. About 3.4 KB per release.
///
/// The update dump keeps release order and, by a hash of the release id: drops 0.3%, changes 3% (a title,
/// a track, a catalogue number or a genre), rewrites 0.5% with identical content but attributes in another
/// order and different indentation, and appends 1% new releases after the last id.
public struct W5Generator: Sendable {
    /// Releases in the initial dump (1x = 190,000).
    public var releases: Int
    /// Seed.
    public var seed: UInt64
    /// Write a bare `&` in notes, as real dumps do (not well-formed XML: strict parsers such as `xmllint`
    /// stop there). False writes `&amp;` instead, for side-by-side parsing with strict tools.
    public var bareAmpersands = true

    /// The version of the content written; bump when any release's bytes change.
    public static let version = 1

    /// Creates a generator.
    public init(releases: Int, seed: UInt64 = 5) {
        self.releases = releases
        self.seed = seed
    }

    /// What an update dump does to the initial one, release by release.
    public enum Change: Sendable { case same, changed, reordered, deleted }

    /// Counts of an update dump relative to the initial dump.
    public struct UpdateCounts: Sendable, Equatable, Codable {
        /// Releases with different content.
        public var changed = 0
        /// Releases added.
        public var added = 0
        /// Releases removed.
        public var deleted = 0
        /// Releases with identical content but reordered attributes and whitespace.
        public var reordered = 0
        /// Releases written byte for byte as before.
        public var same = 0
    }

    /// The change the update dump makes to release `id` (1-based).
    public func change(of id: Int) -> Change {
        var r = SplitMix64(seed: seed ^ 0xC0FFEE ^ UInt64(id) &* 0x9E37_79B9)
        let x = r.below(10_000)
        if x < 30 { return .deleted }
        if x < 330 { return .changed }
        if x < 380 { return .reordered }
        return .same
    }

    /// Releases the update dump adds.
    public var added: Int { releases / 100 }

    /// The update dump's expected counts.
    public func updateCounts() -> UpdateCounts {
        var c = UpdateCounts()
        for id in 1...max(releases, 1) where releases > 0 {
            switch change(of: id) {
            case .same: c.same += 1
            case .changed: c.changed += 1
            case .reordered: c.reordered += 1
            case .deleted: c.deleted += 1
            }
        }
        c.added = added
        return c
    }

    /// Writes the initial dump (gzip when the path ends in `.gz`).
    public func writeInitial(to path: String) throws {
        try write(to: path, update: false)
    }

    /// The initial dump with `&amp;` for every `&` (well-formed, for strict parsers), at `path`.
    public func writeWellFormed(to path: String) throws {
        var g = self
        g.bareAmpersands = false
        try g.writeInitial(to: path)
    }

    /// Writes the update dump (gzip when the path ends in `.gz`).
    public func writeUpdate(to path: String) throws {
        try write(to: path, update: true)
    }

    private func write(to path: String, update: Bool) throws {
        let out = try ByteSink(path: path, gzip: path.hasSuffix(".gz"), level: 1)
        var buf: [UInt8] = []
        buf.reserveCapacity(1 << 20)
        buf.append(contentsOf: "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<releases>\n".utf8)
        let total = update ? releases + added : releases
        for id in 1...max(total, 1) where total > 0 {
            var variant = 0
            var reordered = false
            if update && id <= releases {
                switch change(of: id) {
                case .deleted: continue
                case .changed: variant = 1
                case .reordered: reordered = true
                case .same: break
                }
            }
            release(id, variant: variant, reordered: reordered, into: &buf)
            if buf.count > 900_000 {
                try out.write(buf)
                buf.removeAll(keepingCapacity: true)
            }
        }
        buf.append(contentsOf: "</releases>\n".utf8)
        try out.write(buf)
        try out.close()
    }

    // MARK: - Content

    static let words = [
        "Blue", "Night", "Dance", "Love", "Electric", "Dream", "City", "Fire", "Soul", "Deep", "Sun", "Moon",
        "Silver", "Echo", "Wild", "River", "Golden", "Shadow", "Summer", "Rain", "Heart", "Machine", "Velvet",
        "Paradise", "Storm", "Crystal", "Midnight", "Ocean", "Funk", "Groove", "Rhythm", "Light", "Motion",
    ]
    static let firstNames = [
        "John", "Maria", "DJ", "Kenji", "Anna", "Paul", "Lena", "Carlos", "Fatou", "Ivan", "Zoe", "Omar",
    ]
    static let lastNames = [
        "Smith", "Müller", "Tanaka", "Rossi", "Nguyen", "Dubois", "Kowalski", "Silva", "Jensen", "O'Brien",
    ]
    static let genres = ["Electronic", "Rock", "Jazz", "Hip Hop", "Funk / Soul", "Pop", "Classical", "Reggae"]
    static let styles = [
        "House", "Techno", "Ambient", "Disco", "Punk", "Soul", "Dub", "Trance", "Garage Rock", "Downtempo",
        "Synth-pop", "Drum n Bass",
    ]
    static let formats = ["Vinyl", "CD", "Cassette", "File", "Box Set"]
    static let descriptions = ["LP", "Album", "12\"", "33 ⅓ RPM", "Single", "EP", "Compilation", "Reissue", "Stereo"]
    static let countries = ["US", "UK", "Germany", "Japan", "France", "Netherlands", "Italy", "Brazil", "Canada"]
    static let roles = ["Producer", "Mixed By", "Written-By", "Mastered By", "Artwork", "Vocals", "Engineer"]
    static let identifierTypes = ["Barcode", "Matrix / Runout", "Rights Society", "Label Code", "Mastering SID"]
    static let entityTypes = [
        ("13", "Phonographic Copyright (p)"), ("14", "Copyright (c)"), ("23", "Pressed By"), ("29", "Mastered At"),
        ("17", "Recorded At"), ("9", "Distributed By"),
    ]
    static let qualities = ["Correct", "Needs Vote", "Complete and Correct", "Needs Minor Changes"]

    private func pick<T>(_ list: [T], _ r: inout SplitMix64) -> T { list[Int(r.below(UInt64(list.count)))] }

    private func count(mean: Double, _ r: inout SplitMix64, max: Int) -> Int {
        // A geometric-ish count with the given mean, at least 1.
        // 1 + x with x uniform on [0, 2(mean-1)), rounded at random so the mean is exact.
        let x = (mean - 1) * 2 * Double(r.below(1_000_000)) / 1_000_000
        let up = Double(r.below(1_000_000)) / 1_000_000 < x - x.rounded(.down) ? 1 : 0
        return Swift.min(1 + Int(x) + up, max)
    }

    private func phrase(_ r: inout SplitMix64, words: Int) -> String {
        (0..<words).map { _ in pick(Self.words, &r) }.joined(separator: " ")
    }

    private func person(_ r: inout SplitMix64) -> String {
        "\(pick(Self.firstNames, &r)) \(pick(Self.lastNames, &r))"
    }

    /// Escapes text for element content or a double-quoted attribute.
    private static func esc(_ s: String, into b: inout [UInt8]) {
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "&"): b.append(contentsOf: "&amp;".utf8)
            case UInt8(ascii: "<"): b.append(contentsOf: "&lt;".utf8)
            case UInt8(ascii: ">"): b.append(contentsOf: "&gt;".utf8)
            case UInt8(ascii: "\""): b.append(contentsOf: "&quot;".utf8)
            default: b.append(c)
            }
        }
    }

    private func element(_ name: String, _ text: String, into b: inout [UInt8]) {
        b.append(UInt8(ascii: "<"))
        b.append(contentsOf: name.utf8)
        b.append(UInt8(ascii: ">"))
        Self.esc(text, into: &b)
        b.append(contentsOf: "</".utf8)
        b.append(contentsOf: name.utf8)
        b.append(UInt8(ascii: ">"))
    }

    /// `<name a="…" b="…"` with attributes in order, or reversed when `reordered`.
    private func open(
        _ name: String, _ attrs: [(String, String)], reordered: Bool, close: String, into b: inout [UInt8]
    ) {
        b.append(UInt8(ascii: "<"))
        b.append(contentsOf: name.utf8)
        for (k, v) in reordered ? attrs.reversed() : attrs {
            b.append(UInt8(ascii: " "))
            b.append(contentsOf: k.utf8)
            b.append(contentsOf: "=\"".utf8)
            Self.esc(v, into: &b)
            b.append(UInt8(ascii: "\""))
        }
        b.append(contentsOf: close.utf8)
    }

    private func artist(_ r: inout SplitMix64, role: String, into b: inout [UInt8]) {
        b.append(contentsOf: "<artist>".utf8)
        element("id", String(1 + r.below(2_000_000)), into: &b)
        element("name", person(&r), into: &b)
        b.append(contentsOf: "<anv></anv>".utf8)
        element("join", r.below(5) == 0 ? "&" : "", into: &b)
        element("role", role, into: &b)
        b.append(contentsOf: "<tracks></tracks></artist>".utf8)
    }

    /// Appends release `id` (variant 1 is its changed form) to `b`.
    public func release(_ id: Int, variant: Int, reordered: Bool, into b: inout [UInt8]) {
        var r = SplitMix64(seed: seed &* 0x1000_0001 ^ UInt64(id))
        // Which part a changed release changes.
        var pr = SplitMix64(seed: UInt64(id) ^ 0xABCD)
        let changePart = variant == 0 ? -1 : Int(pr.below(4))
        let nl = reordered ? "\n    " : ""
        open("release", [("id", String(id)), ("status", "Accepted")], reordered: reordered, close: ">", into: &b)
        b.append(contentsOf: nl.utf8)
        b.append(contentsOf: "<images>".utf8)
        let w = String(300 + r.below(300))
        open(
            "image", [("height", w), ("type", "primary"), ("uri", ""), ("uri150", ""), ("width", w)],
            reordered: reordered, close: "/>", into: &b)
        b.append(contentsOf: "</images>".utf8)
        b.append(contentsOf: "<artists>".utf8)
        for _ in 0..<count(mean: 1.3, &r, max: 4) { artist(&r, role: "", into: &b) }
        b.append(contentsOf: "</artists>".utf8)
        var title = phrase(&r, words: 1 + Int(r.below(4)))
        if r.below(10) == 0 { title += " & " + phrase(&r, words: 1) }
        if changePart == 0 { title += " (Remastered)" }
        element("title", title, into: &b)
        b.append(contentsOf: nl.utf8)
        b.append(contentsOf: "<labels>".utf8)
        for k in 0..<count(mean: 1.2, &r, max: 3) {
            var catno = "\(pick(Self.words, &r).uppercased().prefix(3)) \(r.below(999))"
            if changePart == 2 && k == 0 { catno += "X" }
            open(
                "label",
                [("name", phrase(&r, words: 2) + " Records"), ("catno", catno), ("id", String(1 + r.below(900_000)))],
                reordered: reordered, close: "/>", into: &b)
        }
        b.append(contentsOf: "</labels>".utf8)
        b.append(contentsOf: "<extraartists>".utf8)
        for _ in 0..<Int(r.below(5)) { artist(&r, role: pick(Self.roles, &r), into: &b) }
        b.append(contentsOf: "</extraartists>".utf8)
        b.append(contentsOf: "<formats>".utf8)
        for _ in 0..<count(mean: 1.1, &r, max: 2) {
            open(
                "format", [("name", pick(Self.formats, &r)), ("qty", String(1 + r.below(2))), ("text", "")],
                reordered: reordered, close: ">", into: &b)
            b.append(contentsOf: "<descriptions>".utf8)
            for _ in 0..<(1 + Int(r.below(3))) { element("description", pick(Self.descriptions, &r), into: &b) }
            b.append(contentsOf: "</descriptions></format>".utf8)
        }
        b.append(contentsOf: "</formats>".utf8)
        b.append(contentsOf: nl.utf8)
        b.append(contentsOf: "<genres>".utf8)
        let ng = count(mean: 1.5, &r, max: 3)
        for k in 0..<ng {
            element("genre", changePart == 3 && k == ng - 1 ? "Stage & Screen" : pick(Self.genres, &r), into: &b)
        }
        b.append(contentsOf: "</genres>".utf8)
        b.append(contentsOf: "<styles>".utf8)
        for _ in 0..<count(mean: 2, &r, max: 4) { element("style", pick(Self.styles, &r), into: &b) }
        b.append(contentsOf: "</styles>".utf8)
        element("country", pick(Self.countries, &r), into: &b)
        element("released", "\(1960 + r.below(60))-\(String(format: "%02d", 1 + r.below(12)))-00", into: &b)
        // Notes carry what real dumps carry: a bare '&' and carriage returns as character references.
        b.append(contentsOf: "<notes>".utf8)
        let amp = bareAmpersands ? "&" : "&amp;"
        b.append(contentsOf: "Recorded at \(pick(Self.words, &r)) Studios. R\(amp)B mix&#13;\n".utf8)
        Self.esc("Thanks to \(person(&r)) & \(person(&r)).", into: &b)
        b.append(contentsOf: "</notes>".utf8)
        element("data_quality", pick(Self.qualities, &r), into: &b)
        if r.below(3) > 0 {
            open(
                "master_id", [("is_main_release", r.below(2) == 0 ? "true" : "false")], reordered: reordered,
                close: ">", into: &b)
            b.append(contentsOf: String(1 + r.below(3_000_000)).utf8)
            b.append(contentsOf: "</master_id>".utf8)
        }
        b.append(contentsOf: nl.utf8)
        b.append(contentsOf: "<tracklist>".utf8)
        let tracks = count(mean: 10, &r, max: 30)
        for k in 0..<tracks {
            b.append(contentsOf: "<track>".utf8)
            element("position", k < tracks / 2 ? "A\(k + 1)" : "B\(k + 1 - tracks / 2)", into: &b)
            var t = phrase(&r, words: 1 + Int(r.below(3)))
            if changePart == 1 && k == 0 { t += " (Edit)" }
            element("title", t, into: &b)
            element("duration", "\(2 + r.below(6)):\(String(format: "%02d", r.below(60)))", into: &b)
            b.append(contentsOf: "</track>".utf8)
        }
        b.append(contentsOf: "</tracklist>".utf8)
        b.append(contentsOf: "<identifiers>".utf8)
        for _ in 0..<count(mean: 4.5, &r, max: 9) {
            open(
                "identifier",
                [
                    ("type", pick(Self.identifierTypes, &r)), ("description", "Side \(r.below(2) == 0 ? "A" : "B")"),
                    ("value", String(r.next() % 1_000_000_000_000)),
                ],
                reordered: reordered, close: "/>", into: &b)
        }
        b.append(contentsOf: "</identifiers>".utf8)
        b.append(contentsOf: "<videos>".utf8)
        for _ in 0..<count(mean: 2, &r, max: 5) {
            open(
                "video",
                [
                    ("src", "https://www.youtube.com/watch?v=\(String(r.next(), radix: 36))"),
                    ("duration", String(60 + r.below(500))),
                    ("embed", "true"),
                ],
                reordered: reordered, close: ">", into: &b)
            element("title", phrase(&r, words: 3), into: &b)
            element("description", phrase(&r, words: 5), into: &b)
            b.append(contentsOf: "</video>".utf8)
        }
        b.append(contentsOf: "</videos>".utf8)
        b.append(contentsOf: "<companies>".utf8)
        for _ in 0..<count(mean: 4, &r, max: 8) {
            let cid = String(1 + r.below(500_000))
            let (code, typeName) = pick(Self.entityTypes, &r)
            b.append(contentsOf: "<company>".utf8)
            element("id", cid, into: &b)
            element("name", phrase(&r, words: 2) + " GmbH", into: &b)
            b.append(contentsOf: "<catno></catno>".utf8)
            element("entity_type", code, into: &b)
            element("entity_type_name", typeName, into: &b)
            element("resource_url", "https://api.discogs.com/labels/\(cid)", into: &b)
            b.append(contentsOf: "</company>".utf8)
        }
        b.append(contentsOf: "</companies>".utf8)
        b.append(contentsOf: reordered ? "\n</release>\n".utf8 : "</release>\n".utf8)
    }
}
