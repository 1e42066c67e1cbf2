import Foundation
import SluiceContent
import SluiceCore
import SluiceRuntime
import SluiceTesting
import SluiceWorkloads
import Testing

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
        if fastSignatures { #expect(mime.fast?.answers.count == 11, "\(mime.fast?.answers ?? [:])") }
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
}
