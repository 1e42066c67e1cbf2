import FuzzSupport
import SluiceCore

// Input: a value's bytes. Properties: the integer parser agrees with Swift's `Int64(_:)`; the float parser
// agrees with Swift's `Double(_:)` (correctly rounded) wherever both accept the text, and reads its own
// output back; a timestamp reads back from its formatted form; the UTF-8 check agrees with the standard
// library's validation; booleans come only from the documented spellings.
private let trueWords: Set<String> = ["true", "t", "yes", "y", "1"]
private let falseWords: Set<String> = ["false", "f", "no", "n", "0"]

/// libFuzzer's entry point: checks the properties above for one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzValues(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let bytes = Array(input)
    let valid = String(validating: bytes, as: UTF8.self)
    if ValueParsing.isValidUTF8(data, size) != (valid != nil) {
        violated(
            "isValidUTF8 says \(ValueParsing.isValidUTF8(data, size)), the standard library disagrees", input: input)
    }
    let ascii = bytes.allSatisfy { $0 < 0x80 }
    let text = ascii ? String(decoding: bytes, as: UTF8.self) : nil
    let i = size > 0 ? ValueParsing.parseInt64(data, size) : nil
    if let text, i != Int64(text) {
        violated(
            "parseInt64 gives \(String(describing: i)), Int64(_:) gives \(String(describing: Int64(text)))",
            input: input)
    }
    if size > 0, let d = ValueParsing.parseDouble(data, size) {
        if let text, let reference = Double(text), !(d.isNaN && reference.isNaN), d.bitPattern != reference.bitPattern {
            violated("parseDouble gives \(d), Double(_:) gives \(reference)", input: input)
        }
        if d.isFinite {
            var shown = Array("\(d)".utf8)
            let back = shown.withUnsafeMutableBufferPointer { ValueParsing.parseDouble($0.baseAddress!, $0.count) }
            if back?.bitPattern != d.bitPattern {
                violated("parseDouble does not read back \(d) (got \(String(describing: back)))", input: input)
            }
        }
    }
    if size > 0, let b = ValueParsing.parseBool(data, size) {
        let word = String(decoding: bytes, as: UTF8.self).lowercased()
        if !(b ? trueWords : falseWords).contains(word) { violated("parseBool reads '\(word)' as \(b)", input: input) }
    }
    if size > 0, let t = Timestamp.parse(data, size) {
        let days = t / 86_400_000_000
        if (-700_000)...(2_900_000) ~= days {  // years 0000–9999, which the formatted form can hold
            var shown = Array(Timestamp.format(micros: t).utf8)
            let back = shown.withUnsafeMutableBufferPointer { Timestamp.parse($0.baseAddress!, $0.count) }
            if back != t {
                violated(
                    "timestamp \(t) formats as \(Timestamp.format(micros: t)), which reads back as \(String(describing: back))",
                    input: input)
            }
        }
    }
    return 0
}
