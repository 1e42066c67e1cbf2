import Foundation
import SluiceCore
import SluiceFiles
import SluiceReport
import SluiceRuntime

/// Runs files through a real ``FileSource`` and ``Pipeline`` into a ``CollectingSink``, for format tests.
public enum PipelineHarness {
    /// What a harness run produced.
    public struct Result: Sendable {
        /// Rows the sink received, in order.
        public var rows: [[Value]]
        /// Rejected records from the rejects file, in order.
        public var rejects: [RejectedRecord]
        /// The run report.
        public var report: RunReport
        /// The schema the sink was opened with.
        public var schema: Schema?
    }

    /// Loads `text` (written to a temporary file named `name`) with `format`.
    /// `chunkBytes` sets the raw chunk size, so tests can check that chunking never changes results.
    public static func load(
        _ text: String, name: String = "input.txt", format: any RecordFormat, schema: Schema? = nil,
        chunkBytes: Int = 1 << 20, maxRows: Int = 65_536, workers: Int = 2, maxErrors: ErrorLimit? = nil
    ) async throws -> Result {
        try await load(
            bytes: Array(text.utf8), name: name, format: format, schema: schema, chunkBytes: chunkBytes,
            maxRows: maxRows, workers: workers, maxErrors: maxErrors)
    }

    /// Loads `bytes` (written to a temporary file named `name`) with `format`.
    public static func load(
        bytes: [UInt8], name: String = "input.txt", format: any RecordFormat, schema: Schema? = nil,
        chunkBytes: Int = 1 << 20, maxRows: Int = 65_536, workers: Int = 2, maxErrors: ErrorLimit? = nil
    ) async throws -> Result {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = try dir.write(name, bytes: bytes)
        return try await load(
            paths: [path], format: format, schema: schema, chunkBytes: chunkBytes, maxRows: maxRows,
            workers: workers, maxErrors: maxErrors, rejectsPath: dir.file("rejects.jsonl"))
    }

    /// Loads files with `format`.
    public static func load(
        paths: [String], format: any RecordFormat, schema: Schema? = nil, chunkBytes: Int = 1 << 20,
        maxRows: Int = 65_536, workers: Int = 2, maxErrors: ErrorLimit? = nil, rejectsPath: String
    ) async throws -> Result {
        let sink = CollectingSink()
        var options = PipelineOptions()
        options.batching = BatchingPolicy(maxRows: maxRows, maxBytes: chunkBytes, maxLatency: .seconds(1))
        options.workers = workers
        options.rejectsPath = rejectsPath
        options.maxErrors = maxErrors
        let pipeline = Pipeline(
            source: FileSource(paths: paths, format: format, schema: schema), sink: sink, options: options)
        let report = try await pipeline.run()
        let rejects = FileManager.default.fileExists(atPath: rejectsPath) ? try RejectsFile.read(rejectsPath) : []
        return Result(rows: sink.rows, rejects: rejects, report: report, schema: sink.schema)
    }
}
