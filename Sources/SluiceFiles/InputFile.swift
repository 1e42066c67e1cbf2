import CZlib
import Foundation
import SluiceCore
import SluiceInterfaces

#if canImport(Glibc)
    import Glibc
#endif

/// Reads a file (or standard input for `-`) as a byte stream, inflating gzip transparently when the first
/// bytes are the gzip magic (`1f 8b`); concatenated gzip members are read in turn.
public final class InputFile {
    /// The path (`-` for standard input).
    public let path: String
    /// Whether the content is gzip-compressed.
    public private(set) var isGzip = false
    /// Whether the input is a pipe or terminal (reads may return little and block).
    public let isStream: Bool
    /// Bytes read from the file so far (compressed bytes for gzip).
    public private(set) var rawBytesRead: Int64 = 0
    /// The file's size, when it is a regular file.
    public let size: Int64?

    private let fd: Int32
    private var stream = z_stream()
    private var inBuffer: UnsafeMutablePointer<UInt8>
    private let inCapacity = 256 << 10
    private var inEnd = false
    private var finished = false

    /// Opens `path`.
    /// - Throws: ``SluiceError`` with code `.io` when the file cannot be opened or is a directory.
    public init(path: String) throws {
        self.path = path
        if path == "-" {
            fd = 0
        } else {
            fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                throw SluiceError(
                    .io, "cannot open: \(String(cString: strerror(errno)))", position: SourcePosition(file: path))
            }
        }
        var st = stat()
        fstat(fd, &st)
        if (st.st_mode & S_IFMT) == S_IFDIR {
            if fd > 2 { Glibc.close(fd) }
            throw SluiceError(.io, "is a directory", position: SourcePosition(file: path))
        }
        let regular = (st.st_mode & S_IFMT) == S_IFREG
        isStream = !regular
        size = regular ? Int64(st.st_size) : nil
        inBuffer = .allocate(capacity: inCapacity)
        #if os(Linux)
            if regular { posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_SEQUENTIAL)) }
        #endif
        // Sniff the gzip magic.
        let n = try fill(at: 0)
        stream.next_in = inBuffer
        stream.avail_in = UInt32(n)
        if n >= 2 && inBuffer[0] == 0x1F && inBuffer[1] == 0x8B {
            isGzip = true
            guard sluice_inflate_init2(&stream, 15 + 16) == Z_OK else {
                throw SluiceError(.io, "cannot initialise zlib", position: SourcePosition(file: path))
            }
        }
    }

    deinit {
        if isGzip { inflateEnd(&stream) }
        inBuffer.deallocate()
        if fd > 2 { Glibc.close(fd) }
    }

    /// Reads raw bytes into the input buffer after `at` bytes; returns how many are now valid in total.
    private func fill(at: Int) throws -> Int {
        var total = at
        while total < inCapacity {
            let r = Glibc.read(fd, inBuffer + total, inCapacity - total)
            if r < 0 {
                if errno == EINTR { continue }
                throw SluiceError(
                    .io, "read failed: \(String(cString: strerror(errno)))", position: SourcePosition(file: path))
            }
            if r == 0 {
                inEnd = true
                break
            }
            total += r
            rawBytesRead += Int64(r)
            if isStream { break }
        }
        return total
    }

    /// Waits up to `timeoutMillis` for a stream to have data; true when a read would not block.
    public func waitReadable(timeoutMillis: Int32) -> Bool {
        if !isStream || stream.avail_in > 0 { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, timeoutMillis) > 0
    }

    /// Reads up to `count` decoded bytes into `buffer`; returns 0 at the end of the input.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if finished || count == 0 { return 0 }
        if !isGzip {
            // Serve what the sniffing read left first.
            if stream.avail_in > 0 {
                let n = min(Int(stream.avail_in), count)
                buffer.copyMemory(from: stream.next_in, byteCount: n)
                stream.next_in += n
                stream.avail_in -= UInt32(n)
                return n
            }
            while true {
                let r = Glibc.read(fd, buffer, count)
                if r < 0 {
                    if errno == EINTR { continue }
                    throw SluiceError(
                        .io, "read failed: \(String(cString: strerror(errno)))", position: SourcePosition(file: path))
                }
                if r == 0 { finished = true }
                rawBytesRead += Int64(r)
                return r
            }
        }
        stream.next_out = buffer.assumingMemoryBound(to: UInt8.self)
        stream.avail_out = UInt32(min(count, Int(UInt32.max)))
        while stream.avail_out > 0 {
            if stream.avail_in == 0 {
                if inEnd { break }
                let n = try fill(at: 0)
                stream.next_in = inBuffer
                stream.avail_in = UInt32(n)
                if n == 0 { break }
            }
            let rc = inflate(&stream, Z_NO_FLUSH)
            if rc == Z_STREAM_END {
                // Another gzip member may follow.
                if stream.avail_in == 0 && !inEnd {
                    let n = try fill(at: 0)
                    stream.next_in = inBuffer
                    stream.avail_in = UInt32(n)
                }
                if stream.avail_in == 0 {
                    finished = true
                    break
                }
                inflateReset(&stream)
                continue
            }
            if rc == Z_BUF_ERROR && stream.avail_in == 0 { continue }
            if rc != Z_OK {
                let msg = stream.msg.map { String(cString: $0) } ?? "code \(rc)"
                throw SluiceError(
                    .format, "corrupt gzip data: \(msg)",
                    position: SourcePosition(file: path, offset: Int64(stream.total_in)))
            }
            if isStream { break }
        }
        let produced = count - Int(stream.avail_out)
        if produced == 0 && stream.avail_in == 0 && inEnd && !finished {
            throw SluiceError(
                .format, "truncated gzip data", position: SourcePosition(file: path, offset: rawBytesRead))
        }
        return produced
    }
}

extension InputFile {
    /// The first `maxBytes` decoded bytes of `path`, and whether that is the whole file.
    public static func head(of path: String, maxBytes: Int) throws -> (bytes: [UInt8], complete: Bool) {
        let input = try InputFile(path: path)
        var bytes = [UInt8](repeating: 0, count: maxBytes)
        var filled = 0
        try bytes.withUnsafeMutableBytes { buf in
            while filled < maxBytes {
                let n = try input.read(into: buf.baseAddress! + filled, count: maxBytes - filled)
                if n == 0 { break }
                filled += n
            }
        }
        bytes.removeLast(maxBytes - filled)
        return (bytes, filled < maxBytes)
    }
}
