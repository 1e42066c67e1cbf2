import Foundation
import SluiceCore

#if canImport(Glibc)
    import Glibc
#endif

/// A rejected record with its place in the input.
public struct RejectedRecord: Sendable, Codable, Equatable {
    /// The input file.
    public var file: String
    /// The 1-based line where the record starts.
    public var line: Int?
    /// The byte offset where the record starts (in the decompressed input).
    public var offset: Int64?
    /// The pipeline stage that refused it (`parse` or `sink`).
    public var stage: String
    /// Why.
    public var reason: String
    /// The raw input (for parse rejects) or the decoded row as a JSON array (for sink rejects). Input bytes that
    /// are not valid UTF-8 appear here with U+FFFD in place of the bad bytes; ``rawBase64`` then keeps them.
    public var raw: String
    /// The exact input bytes, base64-encoded, when they are not valid UTF-8 (so that the record can be fixed
    /// and replayed); nil otherwise.
    public var rawBase64: String?

    private enum CodingKeys: String, CodingKey {
        case file, line, offset, stage, reason, raw
        case rawBase64 = "raw_base64"
    }

    /// Creates a record.
    public init(
        file: String, line: Int?, offset: Int64?, stage: String, reason: String, raw: String, rawBase64: String? = nil
    ) {
        self.file = file
        self.line = line
        self.offset = offset
        self.stage = stage
        self.reason = reason
        self.raw = raw
        self.rawBase64 = rawBase64
    }

    /// Creates a record of the input bytes `bytes`: `raw` is their text, and when they are not valid UTF-8,
    /// `raw_base64` keeps them exactly.
    public init(file: String, line: Int?, offset: Int64?, stage: String, reason: String, bytes: [UInt8]) {
        if let text = String(validating: bytes, as: UTF8.self) {
            self.init(file: file, line: line, offset: offset, stage: stage, reason: reason, raw: text)
        } else {
            self.init(
                file: file, line: line, offset: offset, stage: stage, reason: reason,
                raw: String(decoding: bytes, as: UTF8.self), rawBase64: Data(bytes).base64EncodedString())
        }
    }

    /// The record's input bytes as they were: ``rawBase64`` decoded when present, else ``raw``'s UTF-8.
    public var rawBytes: [UInt8] {
        if let b = rawBase64, let d = Data(base64Encoded: b) { return Array(d) }
        return Array(raw.utf8)
    }
}

/// Writes rejected records as JSON Lines (`file`, `line`, `offset`, `stage`, `reason`, `raw`, and
/// `raw_base64` when the raw bytes are not valid UTF-8).
/// The file is created at the first reject, so a clean run leaves none.
final class RejectsWriter {
    let path: String
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []
    /// Bytes of whole lines in the file: after a failed write the file is cut back to them, so it stays valid
    /// JSON Lines (a full disk never leaves half a line).
    private var written: Int64 = 0
    private(set) var count: Int64 = 0

    init(path: String) { self.path = path }

    func write(_ r: RejectedRecord) throws {
        buffer.append(contentsOf: Array("{\"file\":".utf8))
        JSONText.appendQuoted(r.file, to: &buffer)
        buffer.append(contentsOf: Array(",\"line\":\(r.line.map(String.init) ?? "null")".utf8))
        buffer.append(contentsOf: Array(",\"offset\":\(r.offset.map(String.init) ?? "null")".utf8))
        buffer.append(contentsOf: Array(",\"stage\":".utf8))
        JSONText.appendQuoted(r.stage, to: &buffer)
        buffer.append(contentsOf: Array(",\"reason\":".utf8))
        JSONText.appendQuoted(r.reason, to: &buffer)
        buffer.append(contentsOf: Array(",\"raw\":".utf8))
        JSONText.appendQuoted(r.raw, to: &buffer)
        if let b = r.rawBase64 {
            buffer.append(contentsOf: Array(",\"raw_base64\":".utf8))
            JSONText.appendQuoted(b, to: &buffer)
        }
        buffer.append(contentsOf: Array("}\n".utf8))
        count += 1
        if buffer.count >= 1 << 16 { try flush() }
    }

    /// Appends the buffered lines; on a failure the file keeps only its whole lines, and the error names the
    /// file and the system's reason (`No space left on device`).
    func flush() throws {
        guard !buffer.isEmpty else { return }
        if fd < 0 {
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                throw SluiceError(
                    .io, "cannot create the rejects file: \(String(cString: strerror(errno)))",
                    position: SourcePosition(file: path))
            }
        }
        var done = 0
        while done < buffer.count {
            let n = buffer.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let reason = String(cString: strerror(n < 0 ? errno : ENOSPC))
                _ = ftruncate(fd, off_t(written))
                _ = lseek(fd, off_t(written), SEEK_SET)
                buffer.removeAll(keepingCapacity: true)
                throw SluiceError(
                    .io, "cannot write the rejects file: \(reason) (its \(written) bytes of whole lines are kept)",
                    position: SourcePosition(file: path))
            }
            done += n
        }
        written += Int64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }

    func close() throws {
        defer {
            if fd >= 0 { _ = Glibc.close(fd) }
            fd = -1
        }
        try flush()
    }
}

/// Reading a rejects file back.
public enum RejectsFile {
    /// The records of a rejects file, in order.
    public static func read(_ path: String) throws -> [RejectedRecord] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try data.split(separator: UInt8(ascii: "\n")).map {
            try JSONDecoder().decode(RejectedRecord.self, from: Data($0))
        }
    }
}
