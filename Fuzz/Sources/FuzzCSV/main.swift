import FuzzSupport
import SluiceCSV
import SluiceCore

// Input: one byte of options (bit 0: header, bit 1: declared schema, bit 2: `;` delimiter, bit 3: null tokens),
// then the CSV text. Properties: see `checkDecoding`.
private let declared = Schema([
    Field("id", .int64), Field("name", .string), Field("ts", .timestamp), Field("v", .float64), Field("b", .bool),
])

/// libFuzzer's entry point: checks the properties above for one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCSV(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let flags = data[0]
    var o = CSVOptions()
    o.header = flags & 1 != 0
    if flags & 4 != 0 { o.delimiter = UInt8(ascii: ";") }
    if flags & 8 != 0 { o.nullTokens = ["NULL", "\\N"] }
    o.maxRecordBytes = 4096
    o.inferenceSampleRecords = 50
    let input = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    checkDecoding(input, format: CSVFormat(options: o), schema: flags & 2 != 0 ? declared : nil)
    return 0
}
