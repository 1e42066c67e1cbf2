import SluiceCore
import Testing

@testable import SluiceXML

/// Every event of `xml`, rendered as text (`<a>`, `</a>`, `"text"`, `@name=value`, `!error`).
func events(_ xml: String, tolerant: Bool = true) -> [String] {
    var bytes = Array(xml.utf8)
    return bytes.withUnsafeMutableBytes { buf in
        var s = XMLScanner(UnsafeRawBufferPointer(buf), tolerant: tolerant)
        var out: [String] = []
        let p = UnsafeRawBufferPointer(buf).baseAddress!.assumingMemoryBound(to: UInt8.self)
        func decoded(_ span: XMLSpan) -> String {
            var o = [UInt8](repeating: 0, count: span.count)
            let n = XMLText.decode(p, span.start, span.end, into: &o)
            return String(decoding: o[0..<n], as: UTF8.self)
        }
        while true {
            do throws(XMLError) {
                switch try s.next() {
                case .start(let n):
                    out.append("<\(s.string(n))>")
                    for a in s.attributes { out.append("@\(s.string(a.name))=\(decoded(a.value))") }
                case .end(let n): out.append("</\(s.string(n))>")
                case .text(let t): out.append("\"\(decoded(t))\"")
                case .cdata(let t): out.append("cdata:\(s.string(t))")
                case .comment(let t): out.append("comment:\(s.string(t))")
                case .processingInstruction(let t): out.append("pi:\(s.string(t))")
                case .doctype: out.append("doctype")
                case .endOfInput: return out
                }
            } catch {
                out.append("!\(error.offset):\(error.reason)")
                return out
            }
        }
    }
}

@Suite struct XMLScannerTests {
    @Test func elementsAttributesAndTextInBothQuoteStyles() {
        #expect(
            events(#"<a x="1" y='two'>hi<b/></a>"#) == [
                "<a>", "@x=1", "@y=two", "\"hi\"", "<b>", "</b>", "</a>",
            ])
    }

    @Test func predefinedEntitiesAndCharacterReferencesDecode() {
        #expect(
            events("<a t=\"&lt;&quot;&#65;\">&amp;&gt;&apos;&#x263A;&#13;</a>") == [
                "<a>", "@t=<\"A", "\"&>'☺\r\"", "</a>",
            ])
    }

    @Test func aGreaterThanInsideAQuotedAttributeIsPartOfTheValue() {
        #expect(events(#"<a v="x>y" w='>'/>"#) == ["<a>", "@v=x>y", "@w=>", "</a>"])
    }

    @Test func cdataCommentsAndProcessingInstructionsAreEvents() {
        #expect(
            events("<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x \"y\">]><r><!-- c --><![CDATA[<&>]]></r>") == [
                "pi:xml version=\"1.0\"", "doctype", "<r>", "comment: c ", "cdata:<&>", "</r>",
            ])
    }

    @Test func aBareAmpersandIsTextWhenTolerantAndAnErrorWhenStrict() {
        #expect(events("<a>R&B &co</a>") == ["<a>", "\"R&B &co\"", "</a>"])
        #expect(
            events("<a>R&B</a>", tolerant: false) == ["<a>", "!4:'&' starts no known entity or character reference"])
        #expect(events("<a>&#0;</a>", tolerant: false).last?.hasPrefix("!3:") == true)
    }

    @Test func deeplyNestedElementsAreBalanced() {
        let depth = 500
        let xml = String(repeating: "<d>", count: depth) + "x" + String(repeating: "</d>", count: depth)
        let e = events(xml)
        #expect(e.count == 2 * depth + 1)
        #expect(e.filter { $0 == "<d>" }.count == depth)
        #expect(e.last == "</d>")
    }

    @Test func mismatchedAndUnclosedTagsAreErrorsAtTheirOffset() {
        #expect(events("<a><b></a>").last == "!6:end tag </a> does not match the open element <b>")
        #expect(events("<a x=1>").last == "!5:the value of attribute 'x' must be quoted with \" or '")
        #expect(events("<a x=\"1\"").last == "!0:tag <a> is not closed")
        #expect(events("</a>").last == "!0:end tag </a> closes no open element")
        #expect(events("<a><!-- never").last == "!3:comment is not closed (no -->)")
        #expect(events("<a><![CDATA[x").last == "!3:CDATA section is not closed (no ]]>)")
        #expect(events("<a x=\"1\"y=\"2\"/>").last == "!8:attributes of <a> must be separated by spaces")
        #expect(events("<1a/>").last == "!1:'1' cannot start a name")
    }

    @Test func invalidUTF8IsFoundAtItsOffset() {
        let good = Array("héllo wörld ☺ 𝄞 plain ascii text".utf8)
        #expect(good.withUnsafeBufferPointer { XMLText.invalidUTF8($0.baseAddress!, 0, $0.count) } == nil)
        for bad: [UInt8] in [[0xC3], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xFF], [0xE2, 0x98]] {
            let bytes = Array("abcdefghij".utf8) + bad + Array("xyz".utf8)
            #expect(bytes.withUnsafeBufferPointer { XMLText.invalidUTF8($0.baseAddress!, 0, $0.count) } == 10)
        }
    }

    @Test func theSkimmerFindsRecordEndsAndRecoversFromBrokenRecords() {
        func cuts(_ xml: String) -> [Int] {
            var bytes = Array(xml.utf8)
            return bytes.withUnsafeMutableBytes { buf in
                let sk = XMLRecordSkimmer(recordName: "r")
                var out: [Int] = []
                var at = 0
                while true {
                    let b = sk.scan(UnsafeRawBufferPointer(buf), from: at, firstOnly: true)
                    if b.cut <= at || b.containerEnded { break }
                    out.append(b.cut)
                    at = b.cut
                }
                return out
            }
        }
        // Quoted '>' and '</r>' inside a comment or CDATA do not end a record.
        #expect(cuts(#"<r a="x>y"><!-- </r> --><![CDATA[</r>]]></r><r/>"#) == [44, 48])
        // An unclosed child is closed by the record's end tag; an unclosed record ends where the next starts.
        #expect(cuts("<r><t>x</r><r><u></r>") == [11, 21])
        #expect(cuts("<r><t>x</t><r>y</r>") == [11, 19])
        // Nested elements with the record's name deeper down are not records.
        #expect(cuts("<r><s><r>in</r></s></r><r/>") == [23, 27])
    }
}
