import SluiceCore

/// Infers a mapping from the document's own structure, from a sample of records:
/// - the record's attributes, and child elements that hold only text and occur at most once, become columns
///   (an element's attributes become `element_attribute` columns);
/// - an element that repeats, or a wrapper holding repeated elements (`artists/artist`), becomes a child table
///   `<record>_<element>` (or `<record>_<container>`, singular, when the container says more: `aliases/name`
///   → `artist_alias`) whose columns are the element's attributes, its single text children, its own text,
///   and JSON lists of the text elements that repeat inside it (`descriptions/description`); a child column
///   called `id` or `position` is renamed `<element>_id`, `<element>_position`;
/// - a wrapper whose children do not repeat is flattened into `wrapper_child` columns;
/// - deeper structure is left out (map it explicitly, or as JSON).
///
/// A column is `int64` when every sampled value is an integer, else `string`.
public enum XMLMappingInference {
    final class Stat {
        let name: String
        var children: [Stat] = []
        var index: [String: Int] = [:]
        var attributes: [String] = []
        var attributeInts: [String: Bool] = [:]
        var textInt = true
        var textSeen = false
        var maxPerParent = 0
        var inCurrentParent = 0
        init(name: String) { self.name = name }

        func child(_ n: String) -> Stat {
            if let i = index[n] { return children[i] }
            let s = Stat(name: n)
            index[n] = children.count
            children.append(s)
            return s
        }
        var isLeaf: Bool { children.isEmpty }
    }

    /// Infers a mapping for records at `record` from whole records in `sample` (after the preamble).
    /// - Throws: ``SluiceError`` when the sample holds no record.
    public static func infer(
        sample: UnsafeRawBufferPointer, record: String, key: String?, hashColumn: String?
    ) throws -> XMLMapping {
        let recordName = Array((record.split(separator: "/").last.map(String.init) ?? record).utf8)
        let root = Stat(name: String(decoding: recordName, as: UTF8.self))
        var scanner = XMLScanner(sample, tolerant: true)
        let p = sample.baseAddress?.assumingMemoryBound(to: UInt8.self)
        var records = 0
        outer: while records < 2000 {
            let here = scanner.position
            if let p, here + 1 < sample.count, p[here] == UInt8(ascii: "<"), p[here + 1] == UInt8(ascii: "/") { break }
            guard let event = try? scanner.next() else { break }
            switch event {
            case .endOfInput: break outer
            case .start(let name) where scanner.equals(name, recordName):
                guard (try? walk(&scanner, root, p!)) != nil else { break outer }
                records += 1
            case .start:
                guard (try? scanner.skipElement()) != nil else { break outer }
            default: continue
            }
        }
        guard records > 0 else {
            throw SluiceError(.format, "no <\(root.name)> record found to infer a mapping from (record path \(record))")
        }
        return mapping(root, record: record, key: key, hashColumn: hashColumn)
    }

    private static func isInt(_ s: String) -> Bool {
        var u = Array(s.utf8)
        return u.withUnsafeMutableBufferPointer { ValueParsing.parseInt64($0.baseAddress!, $0.count) != nil }
            && !u.isEmpty
    }

    private static func walk(_ scanner: inout XMLScanner, _ node: Stat, _ p: UnsafePointer<UInt8>) throws {
        for a in scanner.attributes {
            let n = scanner.string(a.name)
            if node.attributeInts[n] == nil { node.attributes.append(n) }
            let v = scanner.string(a.value)
            node.attributeInts[n] = (node.attributeInts[n] ?? true) && isInt(v)
        }
        for c in node.children { c.inCurrentParent = 0 }
        let depth = scanner.depth - 1
        while true {
            switch try scanner.next() {
            case .start(let name):
                let c = node.child(scanner.string(name))
                c.inCurrentParent += 1
                c.maxPerParent = max(c.maxPerParent, c.inCurrentParent)
                try walk(&scanner, c, p)
            case .end:
                if scanner.depth == depth { return }
            case .text(let span), .cdata(let span):
                let t = XMLText.trimmed(p, span)
                if t.count > 0 {
                    node.textSeen = true
                    node.textInt = node.textInt && isInt(scanner.string(t))
                }
            case .endOfInput: throw XMLError(offset: 0, reason: "end")
            default: continue
            }
        }
    }

    private static func type(_ isInt: Bool?) -> FieldType { isInt == true ? .int64 : .string }

    /// What a child table of `element` inside `container` is called after the record's name: the element
    /// when the container only pluralises it (`artists/artist`, `tracklist/track`, `companies/company`),
    /// else the container, made singular (`aliases/name` → `alias`, `extraartists/artist` → `extraartist`).
    static func tableName(container: String, element: String) -> String {
        let one = singular(container)
        return container.hasPrefix(element) || one == element ? element : one
    }

    /// An English plural made singular, by its ending (`companies` → `company`, `aliases` → `alias`,
    /// `members` → `member`); a word that does not look plural is kept.
    static func singular(_ word: String) -> String {
        for (plural, one) in [("ies", "y"), ("sses", "ss"), ("shes", "sh"), ("ches", "ch"), ("xes", "x"), ("ses", "s")]
        where word.count > plural.count + 1 && word.hasSuffix(plural) {
            return String(word.dropLast(plural.count)) + one
        }
        if word.count > 2 && word.hasSuffix("s") && !word.hasSuffix("ss") { return String(word.dropLast()) }
        return word
    }

    private static func mapping(_ root: Stat, record: String, key: String?, hashColumn: String?) -> XMLMapping {
        var used = Set<String>()
        func unique(_ n: String, in set: inout Set<String>) -> String {
            var name = n
            var k = 2
            while !set.insert(name).inserted {
                name = "\(n)_\(k)"
                k += 1
            }
            return name
        }
        var fields: [XMLFieldMapping] = []
        for a in root.attributes {
            fields.append(XMLFieldMapping(unique(a, in: &used), path: "@" + a, type: type(root.attributeInts[a])))
        }
        var children: [XMLChildMapping] = []
        var tables = Set<String>()
        /// A child table of element `c` (inside `container`, if any), named after the container when it says
        /// more than the element (`aliases/name` → `artist_alias`), else after the element
        /// (`artists/artist` → `release_artist`). Its columns: the element's attributes, its single text
        /// children, its own text, and, as JSON lists, text elements that repeat inside it
        /// (`descriptions/description` → `descriptions`).
        func childTable(_ c: Stat, container: Stat?) {
            let path = container.map { "\($0.name)/\(c.name)" } ?? c.name
            var cols = Set(["position", "\(root.name)_\(key ?? "id")"])
            var cf: [XMLFieldMapping] = []
            func rename(_ n: String) -> String { n == "id" || n == "position" ? "\(c.name)_\(n)" : n }
            for a in c.attributes {
                cf.append(XMLFieldMapping(unique(rename(a), in: &cols), path: "@" + a, type: type(c.attributeInts[a])))
            }
            for g in c.children {
                if g.isLeaf {
                    guard g.textSeen else { continue }
                    if g.maxPerParent <= 1 {
                        cf.append(
                            XMLFieldMapping(unique(rename(g.name), in: &cols), path: g.name, type: type(g.textInt)))
                    } else {
                        cf.append(XMLFieldMapping(unique(rename(g.name), in: &cols), path: g.name, repeated: .list))
                    }
                } else if g.maxPerParent <= 1, g.children.count == 1, let item = g.children.first, item.isLeaf,
                    item.textSeen
                {
                    if item.maxPerParent > 1 || singular(g.name) != g.name {
                        // A wrapper of text elements (`descriptions/description`): one JSON list, also when the
                        // sample had one at most, so that a later record holding several is not rejected.
                        cf.append(
                            XMLFieldMapping(
                                unique(rename(g.name), in: &cols), path: "\(g.name)/\(item.name)", repeated: .list))
                    } else {
                        cf.append(
                            XMLFieldMapping(
                                unique("\(g.name)_\(item.name)", in: &cols), path: "\(g.name)/\(item.name)",
                                type: type(item.textInt)))
                    }
                }
            }
            if c.isLeaf && c.textSeen {
                cf.append(XMLFieldMapping(unique(c.name, in: &cols), path: ".", type: type(c.textInt)))
            }
            guard !cf.isEmpty else { return }
            let suffix = container.map { tableName(container: $0.name, element: c.name) } ?? c.name
            children.append(
                XMLChildMapping(table: unique("\(root.name)_\(suffix)", in: &tables), path: path, fields: cf))
        }
        for e in root.children {
            if e.isLeaf {
                if e.maxPerParent <= 1 {
                    if e.textSeen {
                        fields.append(XMLFieldMapping(unique(e.name, in: &used), path: e.name, type: type(e.textInt)))
                    }
                    for a in e.attributes {
                        fields.append(
                            XMLFieldMapping(
                                unique("\(e.name)_\(a)", in: &used), path: "\(e.name)/@\(a)",
                                type: type(e.attributeInts[a])))
                    }
                } else {
                    childTable(e, container: nil)
                }
            } else if e.maxPerParent > 1 {
                childTable(e, container: nil)
            } else {
                let list = e.children.count == 1 || e.children.contains { $0.maxPerParent > 1 }
                if list {
                    for c in e.children { childTable(c, container: e) }
                } else {
                    for a in e.attributes {
                        fields.append(
                            XMLFieldMapping(
                                unique("\(e.name)_\(a)", in: &used), path: "\(e.name)/@\(a)",
                                type: type(e.attributeInts[a])))
                    }
                    for c in e.children where c.isLeaf && c.textSeen {
                        fields.append(
                            XMLFieldMapping(
                                unique("\(e.name)_\(c.name)", in: &used), path: "\(e.name)/\(c.name)",
                                type: type(c.textInt)))
                    }
                }
            }
        }
        let k = key ?? (fields.contains { $0.name == "id" } ? "id" : nil)
        if k == nil { children.removeAll() }
        var hash = hashColumn
        if let h = hash, used.contains(h) { hash = unique(h, in: &used) }
        return XMLMapping(record: record, key: k, fields: fields, children: children, hashColumn: hash)
    }
}
