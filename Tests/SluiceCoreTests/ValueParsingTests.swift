import SluiceCore
import Testing

func parse<T>(_ s: String, _ f: (UnsafePointer<UInt8>, Int) -> T?) -> T? {
    var s = s
    return s.withUTF8 { f($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
}

@Suite struct ValueParsingTests {
    @Test func integers() {
        #expect(parse("0", ValueParsing.parseInt64) == 0)
        #expect(parse("-42", ValueParsing.parseInt64) == -42)
        #expect(parse("+7", ValueParsing.parseInt64) == 7)
        #expect(parse("9223372036854775807", ValueParsing.parseInt64) == Int64.max)
        #expect(parse("-9223372036854775808", ValueParsing.parseInt64) == Int64.min)
        for bad in ["", "-", "1.0", "12a", " 1", "9223372036854775808", "99999999999999999999"] {
            #expect(parse(bad, ValueParsing.parseInt64) == nil, "\(bad)")
        }
    }

    @Test func doublesMatchStrtodIncludingHardCases() {
        let cases = [
            "1.5", "-0.25", "1e10", "2.5E-3", "123456789012345678", "0.1", "3.14159265358979323846",
            "1.7976931348623157e308", "4.9e-324", "-80367.50", "1e-400", "0", "-0", "inf", "nan",
        ]
        for c in cases {
            let expected = Double(c)
            let got = parse(c, ValueParsing.parseDouble)
            if let e = expected, e.isNaN { #expect(got?.isNaN == true) } else { #expect(got == expected, "\(c)") }
        }
        for bad in ["", "1.2.3", "e5", "1e", "abc", "1,5"] {
            #expect(parse(bad, ValueParsing.parseDouble) == nil, "\(bad)")
        }
    }

    @Test func booleans() {
        for t in ["true", "TRUE", "t", "1", "yes", "y"] { #expect(parse(t, ValueParsing.parseBool) == true) }
        for f in ["false", "F", "0", "no", "n"] { #expect(parse(f, ValueParsing.parseBool) == false) }
        #expect(parse("maybe", ValueParsing.parseBool) == nil)
        // Found by FuzzValues: control characters 0x10 and 0x11 were read as 0 and 1.
        for c in ["\u{10}", "\u{11}", "\u{14}", "\u{19}"] { #expect(parse(c, ValueParsing.parseBool) == nil) }
    }

    @Test func utf8Validation() {
        let good: [[UInt8]] = [Array("plain ascii text!".utf8), Array("café 😀 中文".utf8)]
        let bad: [[UInt8]] = [
            [0xC3, 0x28], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF], [0xE2, 0x82],
        ]
        for g in good { #expect(ValueParsing.isValidUTF8(g, g.count)) }
        for b in bad { #expect(!ValueParsing.isValidUTF8(b, b.count), "\(b)") }
    }

    @Test func timestampsRoundTrip() {
        #expect(parse("1970-01-01T00:00:00Z", Timestamp.parse) == 0)
        #expect(parse("2024-05-01T12:00:00.5Z", Timestamp.parse) == 1_714_564_800_500_000)
        #expect(parse("2024-05-01 14:00:00+02:00", Timestamp.parse) == 1_714_564_800_000_000)
        #expect(parse("2024-05-01T07:00:00-0500", Timestamp.parse) == 1_714_564_800_000_000)
        #expect(parse("2024-05-01", Timestamp.parse) == 1_714_521_600_000_000)
        #expect(parse("1714564800", Timestamp.parse) == 1_714_564_800_000_000)
        #expect(parse("1714564800123", Timestamp.parse) == 1_714_564_800_123_000)
        #expect(parse("1714564800.25", Timestamp.parse) == 1_714_564_800_250_000)
        #expect(parse("1969-12-31T23:59:59.999999Z", Timestamp.parse) == -1)
        for bad in ["2024-02-30", "2024-13-01", "2024-05-01T25:00", "2024-05-01T12:00:00Q", "yesterday"] {
            #expect(parse(bad, Timestamp.parse) == nil, "\(bad)")
        }
        for micros: Int64 in [0, -1, 1_714_564_800_500_001, 253_402_300_799_999_999, -62_135_596_800_000_000] {
            let text = Timestamp.format(micros: micros)
            #expect(text.count == Timestamp.formattedLength)
            #expect(parse(text, Timestamp.parse) == micros, "\(text)")
        }
        #expect(Timestamp.format(micros: 1_714_564_800_500_000) == "2024-05-01T12:00:00.500000Z")
    }

    @Test func jsonSyntax() {
        for good in ["{}", "[]", "{\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\"}", " 12.5e3 ", "true", "\"x\""] {
            #expect(parse(good, JSONSyntax.validate) != nil, "\(good)")
        }
        for bad in ["{", "{\"a\"}", "[1,]", "01", "\"\\x\"", "{\"a\":1}x", "nul", "\"\u{01}\""] {
            #expect(parse(bad, JSONSyntax.validate) == nil, "\(bad)")
        }
    }
}

@Suite struct SchemaTests {
    @Test func parsesSpecsWithAliasesAndNotNull() throws {
        let s = try Schema.parse("id:int64!, name:text, ts:timestamp,v:double,ok:bool,raw:bytes,doc:json")
        #expect(s.fields.map(\.type) == [.int64, .string, .timestamp, .float64, .bool, .bytes, .json])
        #expect(s.fields[0].nullable == false && s.fields[1].nullable)
        #expect(try Schema.parse(s.description) == s)
    }

    @Test func rejectsBadSpecs() {
        for bad in ["id", "id:uuid", "id:int64,id:string", ":int64", "a:int64,,b:string"] {
            #expect(throws: SluiceError.self, "\(bad)") { try Schema.parse(bad) }
        }
    }

    @Test func epochTimestampsNeedATimeNameAndPlausibleValues() {
        var inf = SchemaInference(names: ["created_at", "ts", "count", "updated_at", "event_time"])
        func see(_ v: String, _ name: String) {
            var s = v
            s.withUTF8 { p in inf.observe(text: UnsafeRawBufferPointer(p), for: name) }
        }
        see("1714564800", "created_at"); see("1714564801", "created_at")
        see("1714564800123", "ts")
        see("1714564800", "count")
        see("1714564800", "updated_at"); see("12", "updated_at")
        inf.observe(integer: 1_714_564_800_000_000, for: "event_time")
        #expect(inf.schema.fields.map(\.type) == [.timestamp, .timestamp, .int64, .int64, .timestamp])
    }

    @Test func inferenceWidens() {
        var inf = SchemaInference(names: ["a", "b", "c", "d"])
        func see(_ v: String?, _ name: String) {
            var s = v ?? ""
            s.withUTF8 { p in inf.observe(text: v == nil ? nil : UnsafeRawBufferPointer(p), for: name) }
        }
        see("1", "a"); see("2.5", "a")
        see("1", "b"); see("true", "b")
        see("2024-01-01T00:00:00Z", "c"); see(nil, "c")
        see(nil, "d")
        #expect(inf.schema.fields.map(\.type) == [.float64, .string, .timestamp, .string])
    }
}

@Suite struct ColumnTests {
    @Test func appendsReadsNullsAndRollback() {
        let b = RecordBatchBuilder(schema: Schema([Field("i", .int64), Field("s", .string)]), rowCapacity: 2)
        for k in 0..<100 {
            b.columns[0].append(int64: Int64(k))
            if k % 3 == 0 { b.columns[1].appendNull() } else { b.columns[1].append(string: "v\(k)") }
            b.finishRow()
        }
        b.columns[0].append(int64: 999)
        b.columns[1].appendNull()
        b.rollbackRow()
        let batch = b.build()
        #expect(batch.count == 100)
        #expect(batch.columns[1].nullCount == 34)
        #expect(batch.row(0) == [.int64(0), .null])
        #expect(batch.row(98) == [.int64(98), .string("v98")])
        let slice = batch.slice(97..<100)
        #expect(slice.count == 3 && slice.row(2) == [.int64(99), .null])
        #expect(b.count == 0)
    }
}

@Suite struct ColumnValueAppendTests {
    @Test func aValueOfTheWrongTypeIsAnErrorNotANull() throws {
        let c = Column(type: .int64)
        try c.append(.int64(5))
        try c.append(.null)
        #expect(throws: SluiceError.self) { try c.append(.string("x")) }
        #expect(throws: SluiceError.self) { try c.append(.float64(1.5)) }
        #expect(c.count == 2 && c.value(at: 0) == .int64(5) && c.isNull(1))
        let f = Column(type: .float64)
        try f.append(.int64(2))
        #expect(f.value(at: 0) == .float64(2))
        let j = Column(type: .json)
        try j.append(.string("[1]"))
        #expect(throws: SluiceError.self) { try Column(type: .bool).append(.bytes([1])) }
    }
}

@Suite struct SluiceErrorTests {
    @Test func theDescriptionKeepsRowDataOutAndTheErrorKnowsWhereItWasThrown() {
        let e = SluiceError.sink(
            .bisect, "duplicate key value violates unique constraint \"t_pkey\"", sqlState: "23505",
            detail: "Key (id)=(5) already exists.")
        #expect(e.description == "duplicate key value violates unique constraint \"t_pkey\" (SQLSTATE 23505)")
        #expect(!e.description.contains("(5)"))
        #expect(e.debugDescription.contains("Key (id)=(5) already exists."))
        #expect(e.debugDescription.contains("SluiceCoreTests/ValueParsingTests.swift:"))
        #expect(e.rejectReason.hasSuffix("— Key (id)=(5) already exists."))
        #expect(e.kind == .bisect && e.code == .sink && e.file == "SluiceCoreTests/ValueParsingTests.swift")
        let plain = SluiceError(.io, "no such file", position: SourcePosition(file: "a.csv", line: 3))
        #expect(plain.description == "a.csv:3: no such file" && plain.kind == .fatal)
    }
}
