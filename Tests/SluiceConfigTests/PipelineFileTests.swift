import Foundation
import SluiceConfig
import SluiceCore
import SluiceInterfaces
import Testing

/// Sets an environment variable for the life of the value (each test uses names of its own).
private struct Env: ~Copyable {
    let names: [String]
    init(_ values: [String: String]) {
        names = Array(values.keys)
        for (k, v) in values { setenv(k, v, 1) }
    }
    deinit { for k in names { unsetenv(k) } }
}

@Suite struct PipelineFilePathTests {
    @Test func aPathWrittenInTheFileIsRelativeToItAndOneFromTheEnvironmentToTheWorkingDirectory() throws {
        let yaml = """
            source: { path: "${SLUICE_T1_DUMP:-data/in.csv}", format: csv }
            sink: { url: "${SLUICE_T1_DB:-sqlite:out.db}", table: t }
            errors: { rejects: rejects.jsonl }
            """
        let fromFile = try PipelineFile.parse(yaml, file: "p.yaml", baseDirectory: "/base")
        #expect(fromFile.inputs == ["/base/data/in.csv"])
        #expect(fromFile.store?.url == "sqlite:/base/out.db")
        #expect(fromFile.rejects == "/base/rejects.jsonl")
        let env = Env(["SLUICE_T1_DUMP": "dumps/x.csv", "SLUICE_T1_DB": "sqlite:here.db"])
        let fromEnv = try PipelineFile.parse(yaml, file: "p.yaml", baseDirectory: "/base")
        #expect(fromEnv.inputs == ["dumps/x.csv"])
        #expect(fromEnv.store?.url == "sqlite:here.db")
        _ = consume env
    }

    @Test func everyValueIsExpandedNumbersAndFlagsToo() throws {
        let env = Env(["SLUICE_T2_ROWS": "5000", "SLUICE_T2_TABLE": "events", "SLUICE_T2_SKIP": "true"])
        let yaml = """
            source: { path: in.csv, format: csv }
            sink: { url: "sqlite:x.db", table: "${SLUICE_T2_TABLE}", mode: upsert, key: id, skip_unchanged: "${SLUICE_T2_SKIP}" }
            batching: { max_rows: "${SLUICE_T2_ROWS}", workers: "${SLUICE_T2_WORKERS:-3}" }
            """
        let spec = try PipelineFile.parse(yaml, file: "p.yaml", baseDirectory: "")
        #expect(spec.table == "events")
        #expect(spec.batching.maxRows == 5000 && spec.workers == 3 && spec.skipUnchanged)
        _ = consume env
    }

    @Test func anUnsetVariableWithoutADefaultNamesTheFileLineAndVariable() throws {
        let yaml = "source: { path: in.csv }\nsink: { url: \"sqlite:x.db\", table: \"${SLUICE_T3_UNSET}\" }\n"
        #expect {
            try PipelineFile.parse(yaml, file: "p.yaml", baseDirectory: "")
        } throws: { e in
            let text = "\(e)"
            return text.contains("p.yaml:2") && text.contains("SLUICE_T3_UNSET is not set")
        }
    }

    @Test func aReadHeadTemplateFollowsTheSameRule() throws {
        let yaml = """
            vars: { root: "${SLUICE_T4_ROOT:-blobs}" }
            source: { path: in.csv, format: csv }
            transforms: [ { read_head: { path: "{root}/{blobid}" } } ]
            sink: { url: "sqlite:x.db", table: t }
            """
        func root(_ spec: PipelineSpec) -> String? {
            guard case .readHead(_, _, _, let variables) = spec.transforms.first else { return nil }
            return variables["root"]
        }
        #expect(root(try PipelineFile.parse(yaml, file: "p.yaml", baseDirectory: "/base")) == "/base/blobs")
        let env = Env(["SLUICE_T4_ROOT": "/srv/blobs"])
        #expect(root(try PipelineFile.parse(yaml, file: "p.yaml", baseDirectory: "/base")) == "/srv/blobs")
        _ = consume env
    }
}

@Suite struct RegistryTests {
    @Test func formatsAreFoundByNameAndExtensionAndStoresByScheme() throws {
        #expect(FormatRegistry.forPath("data/events.csv.gz")?.names.first == "csv")
        #expect(FormatRegistry.forPath("x.NDJSON")?.names.first == "jsonl")
        #expect(FormatRegistry.named("tsv") != nil && FormatRegistry.forPath("notes.txt") == nil)
        #expect(PipelineSpec.tableFromName("data/events.csv.gz") == "events")
        #expect(PipelineSpec.tableFromName("my-file.v2.jsonl") == "my_file_v2")
        #expect(try Store.parse("sqlite:a/b.db") == Store(scheme: "sqlite", url: "sqlite:a/b.db", path: "a/b.db"))
        #expect(try Store.parse("postgres://u@localhost/db").scheme == "postgres")
        #expect(try Store.parse("discard:").scheme == "discard")
        #expect(throws: SluiceError.self) { try Store.parse("parquet:lake") }
        #expect(throws: SluiceError.self) { try Store.parse("sqlite:") }
    }

    @Test func modesAreParsedOnceWithTheirKeys() throws {
        #expect(try WriteMode.parse("upsert", key: ["id"]) == .upsert(key: ["id"]))
        #expect(
            try WriteMode.parse("update", key: ["k"], set: ["m"], filter: "t.m IS NULL")
                == .update(key: ["k"], set: ["m"], filter: "t.m IS NULL"))
        #expect(throws: SluiceError.self) { try WriteMode.parse("upsert", key: []) }
        #expect(throws: SluiceError.self) { try WriteMode.parse("merge", key: ["id"]) }
    }

    @Test func aPipelineFileSchemaMappingBecomesTypedFields() throws {
        let yaml = """
            source: { path: in.csv, format: csv, schema: { id: "int64!", name: string }, delimiter: tab }
            sink: { url: "sqlite:x.db", table: t, mode: upsert, key: id }
            errors: { max_errors: 1% }
            """
        let spec = try PipelineFile.parse(yaml, file: "p.yaml", baseDirectory: "")
        #expect(spec.schema == Schema([Field("id", .int64, nullable: false), Field("name", .string)]))
        #expect(spec.delimiter == 9 && spec.maxErrors == .percent(1) && spec.mode == .upsert(key: ["id"]))
    }

    @Test func trimIsSetOnTheSourceAChildTableOrAField() throws {
        let yaml = """
            source:
              path: d.xml
              record: /releases/release
              trim: true
              fields: {id: {path: "@id", type: int64}, title: {path: title, trim: false}, notes: notes}
              children:
                track: {path: tracks/track, trim: false, fields: {title: title, note: {path: note, trim: true}}}
            sink: {url: "sqlite:x.db", table: release, mode: upsert, key: id}
            """
        let spec = try PipelineFile.parse(yaml, file: "p.yaml", baseDirectory: "")
        let m = try #require(spec.xml?.mapping(sinkKey: ["id"]))
        #expect(m.trim && m.fields.map(\.trim) == [nil, false, nil])
        #expect(m.children[0].trim == false && m.children[0].fields.map(\.trim) == [nil, true])
        let bad = yaml.replacingOccurrences(of: "trim: true\n", with: "trim: maybe\n")
        #expect {
            try PipelineFile.parse(bad, file: "p.yaml", baseDirectory: "")
        } throws: { e in "\(e)".contains("p.yaml:4") && "\(e)".contains("source.trim") }
    }

    @Test func repeatedIsParsedAndAnUnknownValueNamesTheChoices() throws {
        let yaml = """
            source:
              path: d.xml
              record: /releases/release
              fields: {id: {path: "@id", type: int64}, label: {path: labels/label/@name, repeated: list}}
            sink: {url: "sqlite:x.db", table: release, mode: upsert, key: id}
            """
        let spec = try PipelineFile.parse(yaml, file: "p.yaml", baseDirectory: "")
        let m = try #require(spec.xml?.mapping(sinkKey: ["id"]))
        #expect(m.fields.map(\.repeated) == [.reject, .list])
        #expect(try m.schema().fields[1].type == .json)
        #expect {
            try PipelineFile.parse(
                yaml.replacingOccurrences(of: "repeated: list", with: "repeated: all"), file: "p.yaml",
                baseDirectory: "")
        } throws: { e in "\(e)".contains("p.yaml:4") && "\(e)".contains("must be reject, first or list") }
    }
    /// Found by FuzzPipelineYAML: a file of a few thousand nested `- ` / `? ` (or `[`) overflowed the stack in
    /// the YAML parser, which recurses once per level. It is refused first, naming the line.
    @Test func aFileThatNestsTooDeeplyIsRefusedBeforeTheParserRecursesIntoIt() throws {
        let block = "source:\n  path: x.csv\n" + "k: " + String(repeating: "- ? ", count: 3000) + "x\n"
        #expect {
            try PipelineFile.parse(block, file: "deep.yaml", baseDirectory: "")
        } throws: { e in "\(e)".contains("deep.yaml:3") && "\(e)".contains("nests deeper than 100 levels") }
        let flow = "source: " + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + "\n"
        #expect {
            try PipelineFile.parse(flow, file: "flow.yaml", baseDirectory: "")
        } throws: { e in "\(e)".contains("flow.yaml:1") && "\(e)".contains("nests deeper") }
        // Brackets and dashes inside quotes or comments are not nesting.
        let quoted =
            "source:\n  path: \"" + String(repeating: "[- ", count: 200) + "\"  # " + String(repeating: "{", count: 200)
            + "\n"
        #expect {
            try PipelineFile.parse(quoted, file: "q.yaml", baseDirectory: "")
        } throws: { e in !"\(e)".contains("nests deeper") }
    }
}
