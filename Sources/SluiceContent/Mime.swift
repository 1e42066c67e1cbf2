import CMagic
import Foundation
import SluiceCore
import SluiceRuntime

/// A libmagic handle, loaded with the system database once.
public final class MagicHandle: @unchecked Sendable {
    let cookie: OpaquePointer

    /// Opens libmagic in MIME-type mode (`image/png`) and loads its default database.
    /// - Throws: ``SluiceError`` (`.config`) when libmagic or its database cannot be loaded.
    public init() throws {
        guard let c = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR) else {
            throw SluiceError(.config, "libmagic: magic_open failed")
        }
        if magic_load(c, nil) != 0 {
            let reason = magic_error(c).map { String(cString: $0) } ?? "unknown error"
            magic_close(c)
            throw SluiceError(.config, "libmagic: cannot load the magic database: \(reason)")
        }
        cookie = c
    }

    deinit { magic_close(cookie) }

    /// The MIME type of `bytes`, or nil with libmagic's error.
    public func mimeType(_ bytes: UnsafeRawBufferPointer) -> (UnsafePointer<CChar>?, String?) {
        if let r = magic_buffer(cookie, bytes.baseAddress, bytes.count) { return (r, nil) }
        return (nil, magic_error(cookie).map { String(cString: $0) } ?? "libmagic failed")
    }

    /// The MIME type of the file at `path` (libmagic reading the file itself).
    public func mimeType(file path: String) -> String? {
        magic_file(cookie, path).map { String(cString: $0) }
    }
}

/// Handles shared by the decode workers: a worker takes one for a batch and gives it back, so there are
/// at most as many handles as workers, each loaded once.
final class MagicPool: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [MagicHandle] = []

    func take() throws -> MagicHandle {
        lock.lock()
        if let h = free.popLast() {
            lock.unlock()
            return h
        }
        lock.unlock()
        return try MagicHandle()
    }

    func give(_ h: MagicHandle) {
        lock.lock()
        free.append(h)
        lock.unlock()
    }
}

/// Detects the MIME type of a bytes column (default `head`, from ``ReadHeadTransform``) with libmagic and
/// adds it as a string column (default `mime_type`). Runs on every decode worker, each with its own handle.
/// A null input gives a null type.
public struct MimeTransform: Transform {
    /// The bytes column to look at.
    public let input: String
    /// The output column.
    public let output: String
    private let pool = MagicPool()

    /// Creates the transform; loads one libmagic handle now so a broken installation fails before the run.
    /// - Throws: ``SluiceError`` (`.config`) when libmagic cannot be loaded.
    public init(input: String = "head", output: String = "mime_type") throws {
        self.input = input
        self.output = output
        pool.give(try MagicHandle())
    }

    /// `mime`.
    public var name: String { "mime" }

    /// The input plus `output: string`.
    public func outputSchema(for schema: Schema) throws -> Schema {
        guard let i = schema.index(of: input) else {
            throw SluiceError(.config, "mime: input column '\(input)' is not a field (\(schema)); add read_head first")
        }
        guard schema.fields[i].type == .bytes || schema.fields[i].type == .string else {
            throw SluiceError(.config, "mime: input column '\(input)' must be bytes or string")
        }
        var s = schema
        s.fields.removeAll { $0.name == output }
        s.fields.append(Field(output, .string))
        return s
    }

    /// Detects every row's type.
    public func apply(_ batch: RecordBatch) throws -> RecordBatch {
        let out = try outputSchema(for: batch.schema)
        let magic = try pool.take()
        defer { pool.give(magic) }
        let col = Column(type: .string, capacity: batch.count, byteCapacity: batch.count * 24)
        let v = batch.columns[batch.schema.index(of: input)!].view
        withExtendedLifetime(batch) {
            for row in 0..<batch.count {
                if v.isNull(row) {
                    col.appendNull()
                    continue
                }
                let (p, n) = v.bytes(row)
                let (r, _) = magic.mimeType(UnsafeRawBufferPointer(start: p, count: n))
                guard let r else {
                    col.appendNull()
                    continue
                }
                col.append(bytes: UnsafeRawBufferPointer(start: r, count: strlen(r)))
            }
        }
        var cols = batch.columns.enumerated().filter { batch.schema.fields[$0.offset].name != output }.map(\.element)
        cols.append(col)
        return RecordBatch(
            schema: out, columns: cols, count: batch.count, origin: batch.origin, rowOrigins: batch.rowOrigins,
            inputBytes: batch.inputBytes)
    }
}
