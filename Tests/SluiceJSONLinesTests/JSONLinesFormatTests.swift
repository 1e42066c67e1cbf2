import SluiceCore
import SluiceJSONLines
import SluiceRuntime
import SluiceTesting
import Testing

func jsonl(_ text: String, schema: Schema?, chunkBytes: Int = 1 << 20) async throws -> PipelineHarness.Result {
    try await PipelineHarness.load(
        text, name: "in.jsonl", format: JSONLinesFormat(), schema: schema, chunkBytes: chunkBytes)
}

@Suite struct JSONLinesFormatTests {
    let schema = Schema([Field("id", .int64), Field("name", .string), Field("meta", .json), Field("v", .float64)])

    @Test func objectsMapByKeyInAnyOrderMissingKeysAreNull() async throws {
        let r = try await jsonl(
            """
            {"id": 1, "name": "a", "meta": {"k": [1, 2]}, "v": 1.5}
            {"v": 2, "id": 2}
              {"name":"c","id":3,"ignored":{"deep":[true,null]}}

            """, schema: schema)
        #expect(r.rejects.isEmpty)
        #expect(
            r.rows == [
                [.int64(1), .string("a"), .json("{\"k\": [1, 2]}"), .float64(1.5)],
                [.int64(2), .null, .null, .float64(2)],
                [.int64(3), .string("c"), .null, .null],
            ])
    }

    @Test func unicodeEscapesAndSurrogatePairs() async throws {
        let r = try await jsonl(
            #"""
            {"id":1,"name":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n\t"}
            {"id":2,"name":"lone \ud83d here"}
            {"id":3,"name":"raw é 😀"}
            """#, schema: schema)
        #expect(r.rows.map { $0[1] } == [.string("café 😀 \"q\" \\ / \n\t"), .string("raw é 😀")])
        #expect(r.rejects.count == 1)
        #expect(r.rejects[0].line == 2)
        #expect(r.rejects[0].reason.contains("lone surrogate"))
    }

    @Test func bigIntegersRejectedForInt64KeptForStringAndJSON() async throws {
        let s = Schema([Field("id", .int64), Field("big", .string), Field("j", .json), Field("f", .float64)])
        let r = try await jsonl(
            """
            {"id":1,"big":123456789012345678901234567890,"j":123456789012345678901234567890,"f":123456789012345678901234567890}
            {"id":123456789012345678901234567890}
            {"id":-9223372036854775808}

            """, schema: s)
        #expect(
            r.rows == [
                [
                    .int64(1), .string("123456789012345678901234567890"), .json("123456789012345678901234567890"),
                    .float64(1.2345678901234568e29),
                ],
                [.int64(Int64.min), .null, .null, .null],
            ])
        #expect(r.rejects.map(\.line) == [2])
        #expect(r.rejects[0].reason.contains("is not a valid int64"))
    }

    @Test func duplicateKeysRejectTheRecord() async throws {
        let r = try await jsonl("{\"id\":1,\"id\":2}\n{\"id\":3,\"x\":1,\"x\":2}\n", schema: schema)
        #expect(r.rows.map { $0[0] } == [.int64(3)])
        #expect(r.rejects.first?.reason == "duplicate key 'id'")
    }

    @Test func nonObjectsAndMalformedLinesAreRejectedWithLineNumbers() async throws {
        let r = try await jsonl(
            """
            {"id":1}
            [1,2]
            "text"
            {"id":2,}
            {"id":3} trailing
            {"id":4
            {"id":5}
            """, schema: schema)
        #expect(r.rows.map { $0[0] } == [.int64(1), .int64(5)])
        #expect(r.rejects.map(\.line) == [2, 3, 4, 5, 6])
        #expect(r.rejects[0].reason == "not a JSON object")
        #expect(r.rejects[2].reason.hasPrefix("malformed JSON"))
        #expect(r.rejects[4].raw == "{\"id\":4")
    }

    @Test func typeMismatchesAreRejects() async throws {
        let s = Schema([Field("id", .int64), Field("ok", .bool), Field("t", .timestamp)])
        let r = try await jsonl(
            """
            {"id":1,"ok":true,"t":"2024-05-01T00:00:00+02:00"}
            {"id":"2","ok":false,"t":1714521600}
            {"id":1.5}
            {"ok":"yes"}
            {"t":"yesterday"}

            """, schema: s)
        #expect(
            r.rows == [
                [.int64(1), .bool(true), .timestamp(1_714_514_400_000_000)],
                [.int64(2), .bool(false), .timestamp(1_714_521_600_000_000)],
            ])
        #expect(r.rejects.map(\.line) == [3, 4, 5])
    }

    @Test func inferenceFromKeysAndValues() async throws {
        let r = try await jsonl(
            """
            {"id":1,"name":"a","ts":"2024-01-01T00:00:00Z","n":1,"o":{"a":1},"flag":true}
            {"id":2,"name":"b","ts":"2024-01-02T00:00:00Z","n":2.5,"o":[1],"flag":false,"late":null}

            """, schema: nil)
        #expect(r.schema?.fields.map(\.name) == ["id", "name", "ts", "n", "o", "flag", "late"])
        #expect(r.schema?.fields.map(\.type) == [.int64, .string, .timestamp, .float64, .json, .bool, .string])
        #expect(r.rows.count == 2)
    }

    @Test(arguments: [8, 50, 4096])
    func chunkingDoesNotChangeResults(chunkBytes: Int) async throws {
        var text = ""
        for i in 0..<200 { text += i % 9 == 4 ? "{broken \(i)\n" : "{\"id\":\(i),\"name\":\"n\(i)\"}\r\n" }
        let a = try await jsonl(text, schema: schema, chunkBytes: 1 << 20)
        let b = try await jsonl(text, schema: schema, chunkBytes: chunkBytes)
        #expect(a.rows == b.rows)
        #expect(a.rejects.map(\.line) == b.rejects.map(\.line))
        #expect(a.rejects.map(\.offset) == b.rejects.map(\.offset))
        #expect(a.rows.count == 200 - 22)
    }
}
