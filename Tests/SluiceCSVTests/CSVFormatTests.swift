import SluiceCSV
import SluiceCore
import SluiceRuntime
import SluiceTesting
import Testing

let idName = Schema([Field("id", .int64), Field("name", .string)])

func csv(
    _ text: String, schema: Schema? = idName, chunkBytes: Int = 1 << 20, options: CSVOptions = CSVOptions()
)
    async throws -> PipelineHarness.Result
{
    try await PipelineHarness.load(
        text, name: "in.csv", format: CSVFormat(options: options), schema: schema, chunkBytes: chunkBytes)
}

@Suite struct CSVFormatTests {
    @Test func headerQuotedFieldsDoubledQuotesAndEmbeddedNewlines() async throws {
        let r = try await csv("id,name\n1,plain\n2,\"with, comma\"\n3,\"say \"\"hi\"\"\"\n4,\"two\nlines\"\n5,\"\"\n")
        #expect(r.rejects.isEmpty)
        #expect(
            r.rows == [
                [.int64(1), .string("plain")], [.int64(2), .string("with, comma")], [.int64(3), .string("say \"hi\"")],
                [.int64(4), .string("two\nlines")], [.int64(5), .string("")],
            ])
    }

    @Test func crlfBomAndMissingFinalNewline() async throws {
        let bytes: [UInt8] = [0xEF, 0xBB, 0xBF] + Array("id,name\r\n1,a\r\n2,\"b\r\nc\"\r\n3,z".utf8)
        let r = try await PipelineHarness.load(bytes: bytes, name: "in.csv", format: CSVFormat(), schema: idName)
        #expect(r.rows == [[.int64(1), .string("a")], [.int64(2), .string("b\r\nc")], [.int64(3), .string("z")]])
    }

    @Test func emptyUnquotedFieldIsNullQuotedEmptyIsEmptyString() async throws {
        let r = try await csv("id,name\n,\n2,\"\"\n")
        #expect(r.rows == [[.null, .null], [.int64(2), .string("")]])
    }

    @Test func nullTokensAndDelimiter() async throws {
        var o = CSVOptions()
        o.delimiter = UInt8(ascii: ";")
        o.nullTokens = ["NULL", "\\N"]
        let r = try await csv("id;name\n1;NULL\n\\N;x\n3;\"NULL\"\n4;\n", options: o)
        #expect(
            r.rows == [
                [.int64(1), .null], [.null, .string("x")], [.int64(3), .string("NULL")], [.int64(4), .string("")],
            ])
    }

    @Test func columnsMapByHeaderNameNotPosition() async throws {
        let r = try await csv("name,extra,id\nann,zzz,7\n")
        #expect(r.rows == [[.int64(7), .string("ann")]])
    }

    @Test func raggedRowsAreRejectedWithLineAndRestKept() async throws {
        let r = try await csv("id,name\n1,a\n2,b,c\n3\n4,d\n")
        #expect(r.rows == [[.int64(1), .string("a")], [.int64(4), .string("d")]])
        #expect(r.rejects.map(\.line) == [3, 4])
        #expect(r.rejects[0].reason.contains("expected 2 fields"))
        #expect(r.rejects[0].raw == "2,b,c")
        #expect(r.rejects[0].offset == 12)
        #expect(r.report.outcome == .completedWithRejects)
        #expect(r.report.recordsRejected == 2)
    }

    /// Found by FuzzCSV: a record of more than 65 fields overflowed the field buffer of a narrow schema.
    @Test func aRecordWithHundredsOfFieldsIsRaggedNotAnOverflow() async throws {
        let wide = String(repeating: ",", count: 300)
        let r = try await csv("id,name\n1,a\n\(wide)\n2,b\n\(wide)x\n")
        #expect(r.rows == [[.int64(1), .string("a")], [.int64(2), .string("b")]])
        #expect(r.rejects.map(\.line) == [3, 5])
        #expect(r.rejects.allSatisfy { $0.reason.contains("expected 2 fields, found more than 2") }, "\(r.rejects)")
    }

    /// Found by FuzzCSV: a chunk cut right after a broken record's first line hid the bytes its reason was
    /// read from, so the reason depended on the chunk size.
    @Test func aBrokenRecordHasTheSameReasonWhateverTheChunkSize() async throws {
        let text = "id,name\n1,a\n2,\"be,a\r\n2,\"b\r\nc\"\r\n3,z\n\"x\ny,z\n4\"q\n5,e\n"
        let whole = try await csv(text)
        #expect(whole.rejects.map(\.reason).contains("unexpected character after a closing quote"))
        for chunk in [1, 3, 8, 13] {
            let r = try await csv(text, chunkBytes: chunk)
            #expect(r.rows == whole.rows, "chunks of \(chunk)")
            #expect(
                r.rejects.map { "\($0.line ?? 0) \($0.reason)" } == whole.rejects.map { "\($0.line ?? 0) \($0.reason)" }
            )
        }
    }

    @Test func unterminatedQuoteIsRejectedAtItsOwnLineAndParsingResumes() async throws {
        let text = "id,name\n1,a\n2,\"broken\n3,c\n4,\"d\"\n5,e\n"
        let r = try await csv(text)
        #expect(
            r.rows == [
                [.int64(1), .string("a")], [.int64(3), .string("c")], [.int64(4), .string("d")],
                [.int64(5), .string("e")],
            ])
        #expect(r.rejects.count == 1)
        #expect(r.rejects[0].line == 3)
        #expect(r.rejects[0].raw == "2,\"broken\n")
    }

    @Test func unterminatedQuoteAtEndOfFile() async throws {
        let r = try await csv("id,name\n1,a\n2,\"never closed\n")
        #expect(r.rows == [[.int64(1), .string("a")]])
        #expect(r.rejects.map(\.line) == [3])
        #expect(r.rejects[0].reason == "unterminated quoted field")
    }

    @Test func textAfterClosingQuoteIsMalformed() async throws {
        let r = try await csv("id,name\n1,\"a\"x\n2,b\n")
        #expect(r.rows == [[.int64(2), .string("b")]])
        #expect(r.rejects.first?.reason == "unexpected character after a closing quote")
    }

    @Test func invalidUTF8IsRejected() async throws {
        let bytes = Array("id,name\n1,ok\n2,".utf8) + [0xC3, 0x28] + Array("\n3,caf\u{E9}\n".utf8)
        let r = try await PipelineHarness.load(bytes: bytes, name: "in.csv", format: CSVFormat(), schema: idName)
        #expect(r.rows == [[.int64(1), .string("ok")], [.int64(3), .string("café")]])
        #expect(r.rejects.first?.reason == "field 'name' is not valid UTF-8")
        #expect(r.rejects.first?.line == 3)
    }

    @Test func valuesThatDoNotFitTheSchemaAreRejectedNotCrashes() async throws {
        let schema = Schema([
            Field("i", .int64), Field("f", .float64), Field("b", .bool), Field("t", .timestamp), Field("j", .json),
        ])
        let text = """
            i,f,b,t,j
            1,1.5,true,2024-05-01T12:00:00Z,"{""a"":1}"
            x,1.5,true,2024-05-01T12:00:00Z,1
            9223372036854775808,1,true,2024-05-01,1
            2,abc,true,2024-05-01,1
            3,1,maybe,2024-05-01,1
            4,1,false,2024-13-01,1
            5,1,false,2024-02-29,"{bad"
            6,-2.5e3,F,1714564800,[1]

            """
        let r = try await csv(text, schema: schema)
        #expect(r.rows.count == 2)
        #expect(
            r.rows[0] == [.int64(1), .float64(1.5), .bool(true), .timestamp(1_714_564_800_000_000), .json("{\"a\":1}")])
        #expect(
            r.rows[1] == [.int64(6), .float64(-2500), .bool(false), .timestamp(1_714_564_800_000_000), .json("[1]")])
        #expect(r.rejects.map(\.line) == [3, 4, 5, 6, 7, 8])
        #expect(r.rejects[0].reason.contains("field 'i'"))
        #expect(r.rejects[2].reason.contains("field 'f'"))
        #expect(r.rejects[5].reason == "field 'j' is not valid JSON")
    }

    @Test func notNullFieldsRejectNulls() async throws {
        let schema = Schema([Field("id", .int64, nullable: false), Field("name", .string)])
        let r = try await csv("id,name\n,a\n2,b\n", schema: schema)
        #expect(r.rows == [[.int64(2), .string("b")]])
        #expect(r.rejects.first?.reason == "field 'id' is null but the schema does not allow nulls")
    }

    @Test func blankLinesAreSkipped() async throws {
        let r = try await csv("id,name\n1,a\n\n2,b\n\r\n")
        #expect(r.rows == [[.int64(1), .string("a")], [.int64(2), .string("b")]])
        #expect(r.rejects.isEmpty)
    }

    @Test func strayQuoteInsideUnquotedFieldIsText() async throws {
        let r = try await csv("id,name\n1,5\" screen\n")
        #expect(r.rows == [[.int64(1), .string("5\" screen")]])
    }

    @Test func missingSchemaColumnInHeaderIsAConfigError() async throws {
        await #expect(throws: SluiceError.self) { try await csv("id,title\n1,a\n") }
    }

    @Test func noHeaderMapsByPosition() async throws {
        var o = CSVOptions()
        o.header = false
        let r = try await csv("1,a\n2,b\n", options: o)
        #expect(r.rows == [[.int64(1), .string("a")], [.int64(2), .string("b")]])
    }

    @Test func inferredSchemaWidensTypes() async throws {
        let text = "a,b,c,d,e,f\n1,1,x,true,2024-01-01T00:00:00Z,\n2,2.5,3,false,2024-01-02,\n"
        let r = try await csv(text, schema: nil)
        #expect(
            r.schema?.fields.map(\.type) == [.int64, .float64, .string, .bool, .timestamp, .string])
        #expect(
            r.rows[1] == [
                .int64(2), .float64(2.5), .string("3"), .bool(false), .timestamp(1_704_153_600_000_000), .null,
            ])
    }

    /// Chunking must never change what is loaded or where rejects are reported.
    @Test(arguments: [16, 37, 64, 1000])
    func resultsDoNotDependOnChunkSize(chunkBytes: Int) async throws {
        var text = "id,name\n"
        for i in 0..<300 {
            switch i % 7 {
            case 0: text += "\(i),\"multi\nline \(i)\"\n"
            case 1: text += "\(i),\"q \"\"x\"\" \(i)\"\r\n"
            case 2: text += "\(i),bad,extra\n"
            case 3: text += "\(i),\"unterminated\n"
            default: text += "\(i),plain\(i)\n"
            }
        }
        let whole = try await csv(text, chunkBytes: 1 << 20)
        let small = try await csv(text, chunkBytes: chunkBytes)
        #expect(small.rows == whole.rows)
        // Each load writes its own temporary file, so compare everything but the path.
        let where_: ([RejectedRecord]) -> [String] = { r in
            r.map { "\($0.line ?? -1) \($0.offset ?? -1) \($0.reason) \($0.raw)" }
        }
        #expect(where_(small.rejects) == where_(whole.rejects))
        let kept: Int = 300 - 300 / 7 * 2 - 2
        #expect(whole.rows.count == kept)
        #expect(whole.rejects.count == 86)
    }
}

@Suite struct RejectBytesTests {
    /// A record rejected because it is not UTF-8 keeps its exact bytes (`raw_base64`), so it can be fixed and
    /// replayed; a UTF-8 reject has none.
    @Test func aNonUTF8RejectKeepsItsBytes() async throws {
        let bad: [UInt8] = Array("2,caf".utf8) + [0xE9, 0xFF] + Array(" noir".utf8)
        let input = Array("id,name\n1,ok\n".utf8) + bad + Array("\n3,x,extra\n".utf8)
        let r = try await PipelineHarness.load(bytes: input, name: "in.csv", format: CSVFormat(), schema: idName)
        #expect(r.rows == [[.int64(1), .string("ok")]])
        #expect(r.rejects.count == 2)
        let nonUTF8 = try #require(r.rejects.first { $0.line == 3 })
        #expect(nonUTF8.reason.contains("not valid UTF-8"), "\(nonUTF8.reason)")
        #expect(nonUTF8.rawBase64 != nil)
        #expect(nonUTF8.rawBytes == bad)
        let utf8 = try #require(r.rejects.first { $0.line == 4 })
        #expect(utf8.rawBase64 == nil && utf8.raw == "3,x,extra")
    }
}

@Suite struct MissingValueTests {
    /// R, pandas and database exports write `NA`, `NULL` or `\N` for a missing number: numeric, boolean and
    /// timestamp columns read them as null, in inference and in decoding; text columns keep them as text.
    @Test func usualMissingTokensAreNullInTypedColumnsAndTextInStringColumns() async throws {
        var text = "dep_delay,temp,ok,at,carrier\n"
        text += "3,1.5,true,2024-01-01T00:00:00Z,UA\n"
        text += "NA,NA,NA,NA,NA\n"
        text += "\\N,NULL,null,N/A,AA\n"
        text += "-2,NaN,false,2024-01-02T00:00:00Z,NULL\n"
        let r = try await csv(text, schema: nil)
        #expect(r.schema?.fields.map(\.type) == [.int64, .float64, .bool, .timestamp, .string])
        #expect(r.rejects.isEmpty, "\(r.rejects)")
        #expect(r.rows.map { $0[0] } == [.int64(3), .null, .null, .int64(-2)])
        #expect(r.rows.map { $0[2] } == [.bool(true), .null, .null, .bool(false)])
        #expect(r.rows.map { $0[4] } == [.string("UA"), .string("NA"), .string("AA"), .string("NULL")])
        // A float column keeps NaN as the number it is.
        if case .float64(let v) = r.rows[3][1] { #expect(v.isNaN) } else { Issue.record("\(r.rows[3][1])") }
    }

    /// A missing token the inference sample never saw is null too, not a reject (the nycflights13 weather
    /// table has its first `NA` wind speed after thousands of rows).
    @Test func aMissingTokenAfterTheSampleIsNullNotAReject() async throws {
        var text = "id,wind_speed\n"
        for i in 0..<3_000 { text += "\(i),\(Double(i) / 10)\n" }
        text += "3000,NA\n"
        let r = try await csv(text, schema: nil)
        #expect(r.rejects.isEmpty, "\(r.rejects)")
        #expect(r.rows.last == [.int64(3000), .null])
    }

    /// With `--null` the user's tokens are the only nulls; a value that fits no type says how to fix it.
    @Test func userNullTokensReplaceTheDefaultsAndARejectNamesTheFix() async throws {
        var o = CSVOptions()
        o.nullTokens = ["-"]
        let r = try await csv(
            "id,v\n1,-\n2,NA\n", schema: Schema([Field("id", .int64), Field("v", .int64)]), options: o)
        #expect(r.rows == [[.int64(1), .null]])
        let reason = try #require(r.rejects.first?.reason)
        #expect(reason.contains("'NA' is not a valid int64"), "\(reason)")
        #expect(reason.contains("--schema v:string") && reason.contains("--null"), "\(reason)")
    }
}

@Suite struct CSVHeaderTests {
    /// pandas and Excel exports start with an unnamed index column; hand-made files repeat a name. Both load,
    /// with names the report lists; `strictHeader` keeps the error.
    @Test func emptyAndRepeatedNamesAreNamedAndListedOrAnErrorWhenStrict() async throws {
        let text = ",Name,Total,Name,Name_2,\n0,ann,3,a,b,x\n1,bo,4,c,d,y\n"
        let r = try await csv(text, schema: nil)
        #expect(r.rejects.isEmpty)
        #expect(r.schema?.fields.map(\.name) == ["column1", "Name", "Total", "Name_3", "Name_2", "column6"])
        #expect(r.rows[1] == [.int64(1), .string("bo"), .int64(4), .string("c"), .string("d"), .string("y")])
        let notes = r.report.notes.map { $0.label + " " + $0.text.split(separator: "/").last! }
        #expect(
            notes == [
                "header in.csv: field 1 has no name: named column1",
                "header in.csv: field 4 repeats 'Name': named Name_3",
                "header in.csv: field 6 has no name: named column6",
            ])
        #expect(r.report.text.contains("in.csv: field 1 has no name: named column1\n"), "\(r.report.text)")
        // A generated name never takes one the header gives another column.
        let taken = try await csv("column2,,x\n1,2,3\n", schema: nil)
        #expect(taken.schema?.fields.map(\.name) == ["column2", "column2_2", "x"])
        var strict = CSVOptions()
        strict.strictHeader = true
        await #expect {
            try await csv(text, schema: nil, options: strict)
        } throws: { e in
            "\(e)".contains("in.csv:1") && "\(e)".contains("header field 1 is empty")
        }
        await #expect {
            try await csv("a,b,a\n1,2,3\n", schema: nil, options: strict)
        } throws: { e in "\(e)".contains("header names column 'a' twice") }
        // A clean header adds no line to the report.
        #expect(try await csv("id,name\n1,a\n").report.notes.isEmpty)
    }
}
