import FuzzSupport
import SluiceCore
import SluiceJSONLines

// Input: one byte of options (bit 0: declared schema), then the JSON Lines text. Properties: see
// `checkDecoding`.
private let declared = Schema([
    Field("id", .int64), Field("name", .string), Field("ts", .timestamp), Field("v", .float64), Field("b", .bool),
    Field("j", .json),
])

/// libFuzzer's entry point: checks the properties above for one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSONLines(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    checkDecoding(input, format: JSONLinesFormat(), schema: data[0] & 1 != 0 ? declared : nil)
    return 0
}
