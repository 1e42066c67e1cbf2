import FuzzSupport
import SluiceCore
import SluiceXML

// Input: one byte of options (bit 0: the explicit mapping below, else one inferred from the document; bit 1:
// strict, a bare `&` is an error; bit 2: trim), then the document. Records are `/r/x`. Properties: see
// `checkDecoding`.
private func mapping(tolerant: Bool, trim: Bool) -> XMLMapping {
    XMLMapping(
        record: "/r/x", key: "id",
        fields: [
            XMLFieldMapping("id", path: "@id", type: .int64), XMLFieldMapping("a", path: "a"),
            XMLFieldMapping("n", path: "n", type: .int64), XMLFieldMapping("c", path: "b/@c", type: .bool),
            XMLFieldMapping("t", path: ".", type: .string),
        ],
        children: [
            XMLChildMapping(
                table: "x_y", path: "ys/y", fields: [XMLFieldMapping("v", path: "."), XMLFieldMapping("w", path: "@w")]),
            XMLChildMapping(table: "zs", path: "z", fields: [XMLFieldMapping("k", path: "k")], asJSON: true),
        ], tolerant: tolerant, trim: trim)
}

/// libFuzzer's entry point: checks the properties above for one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzXML(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let flags = data[0]
    let input = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    let format: XMLFormat
    if flags & 1 != 0 {
        format = try! XMLFormat(mapping: mapping(tolerant: flags & 2 == 0, trim: flags & 4 != 0))
    } else {
        format = XMLFormat(record: "/r/x", tolerant: flags & 2 == 0, trim: flags & 4 != 0)
    }
    checkDecoding(input, format: format, schema: format.declaredSchema)
    return 0
}
