import CSluiceSupport
import Foundation
import SluiceCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A content-addressed store of bodies on disk: each blob lives at `root/ab/cd/<sha256>` (the first two
/// byte pairs of its SHA-256 in hex name two directory levels), so a blob is written once however many
/// records carry it.
///
/// Writes are atomic: a body goes to an unnamed file (Linux `O_TMPFILE`) or a temporary file under
/// `root/.tmp`, and gets its final name only when complete, so a killed run never leaves a partial blob under
/// a final name. Leftover temporary files of processes that no longer run are removed when a store is opened.
///
/// ```swift
/// let store = try BlobStore(root: "thumbs", durability: .batch)
/// let written = try store.write(body, sha256: hex)   // false: the blob was already there
/// try store.sync()                                    // before the manifest rows naming it commit
/// ```
public final class BlobStore: Sendable {
    /// When written blobs are forced to stable storage.
    public enum Durability: String, Sendable, CaseIterable {
        /// Never: the page cache holds them (they survive a killed process, not a power loss).
        case none
        /// Once per manifest batch, before its rows commit (``sync()``, one `syncfs` call): no blob named by a
        /// committed row is lost to a power failure. The default.
        case batch
        /// Each blob and its directory before it counts as written: the slowest.
        case each
    }

    /// The root directory.
    public let root: String
    /// The durability policy.
    public let durability: Durability
    private let tmpDir: String
    private let counter = Atomic<Int>(0)
    /// Whether unnamed files (`O_TMPFILE`) work here; cleared on the first refusal.
    private let unnamedFiles = Atomic<Bool>(true)

    /// Opens (creating if needed) a store at `root`, removing temporary files left by dead processes.
    /// - Throws: ``SluiceError`` (`.io`) when the root cannot be created or is not a directory.
    public init(root: String, durability: Durability = .batch) throws {
        guard !root.isEmpty else { throw SluiceError(.config, "the blob store needs a root directory") }
        self.root = root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root
        self.durability = durability
        tmpDir = self.root + "/.tmp"
        do {
            try FileManager.default.createDirectory(atPath: tmpDir, withIntermediateDirectories: true)
        } catch {
            throw SluiceError(.io, "cannot create the blob store at '\(root)': \(error.localizedDescription)")
        }
        removeStaleTemporaries()
    }

    /// The path of the blob with SHA-256 `sha256` (64 lowercase hex digits).
    public func path(sha256: String) -> String {
        let u = Array(sha256.utf8)
        guard u.count >= 4 else { return root + "/" + sha256 }
        return root + "/" + String(decoding: u[0..<2], as: UTF8.self) + "/" + String(decoding: u[2..<4], as: UTF8.self)
            + "/" + sha256
    }

    /// Whether the blob is stored, and (when `size` is given) has that many bytes.
    public func contains(sha256: String, size: Int64? = nil) -> Bool {
        var st = stat()
        guard stat(path(sha256: sha256), &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return false }
        if let size { return Int64(st.st_size) == size }
        return true
    }

    /// Writes `bytes` as the blob `sha256` unless it is already stored. Returns true when this call wrote it.
    ///
    /// On Linux the body goes to an unnamed file in the blob's directory (`O_TMPFILE`) that is linked under
    /// its name once complete — a process killed before that leaves nothing behind. Elsewhere, or where the
    /// file system lacks it, a temporary file under `root/.tmp` is renamed into place. The caller computed
    /// `sha256` from `bytes`; the store does not hash again.
    /// - Throws: ``SluiceError`` (`.io`) naming the path and the system error.
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer, sha256: String) throws -> Bool {
        let final = path(sha256: sha256)
        if access(final, F_OK) == 0 { return false }
        let dir = (final as NSString).deletingLastPathComponent
        if unnamedFiles.load(ordering: .relaxed) {
            var fd = sluice_open_tmpfile(dir)
            if fd < 0 && errno == ENOENT {
                try makeDirectories(dir)
                fd = sluice_open_tmpfile(dir)
            }
            if fd >= 0 {
                defer { close(fd) }
                try writeAll(fd, bytes, what: final)
                if sluice_link_fd(fd, final) != 0 {
                    if errno == EEXIST { return false }
                    throw Self.error("link", final)
                }
                try syncDirectory(dir)
                return true
            }
            guard errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL else { throw Self.error("create in", dir) }
            unnamedFiles.store(false, ordering: .relaxed)
        }
        let tmp = "\(tmpDir)/\(getpid())-\(counter.add(1, ordering: .relaxed).newValue)-\(sha256.prefix(16))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Self.error("create", tmp) }
        do { try writeAll(fd, bytes, what: tmp) } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        close(fd)
        if rename(tmp, final) != 0 {
            guard errno == ENOENT else {
                let e = Self.error("rename into", final)
                unlink(tmp)
                throw e
            }
            do { try makeDirectories(dir) } catch {
                unlink(tmp)
                throw error
            }
            if rename(tmp, final) != 0 {
                let e = Self.error("rename into", final)
                unlink(tmp)
                throw e
            }
        }
        try syncDirectory(dir)
        return true
    }

    /// Writes every byte to `fd` (and fsyncs it under ``Durability/each``).
    private func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, what: String) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw Self.error("write", what)
            }
            done += n
        }
        if durability == .each && fsync(fd) != 0 { throw Self.error("fsync", what) }
    }

    /// Creates `root/ab` and `root/ab/cd` as needed.
    private func makeDirectories(_ dir: String) throws {
        let parent = (dir as NSString).deletingLastPathComponent
        if mkdir(parent, 0o755) != 0 && errno != EEXIST || mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw Self.error("create directory", dir)
        }
    }

    /// Under ``Durability/each``: fsyncs the directory that now names a blob.
    private func syncDirectory(_ dir: String) throws {
        guard durability == .each else { return }
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { return }
        defer { close(dfd) }
        if fsync(dfd) != 0 { throw Self.error("fsync", dir) }
    }

    /// Writes `bytes` (see ``write(_:sha256:)-(UnsafeRawBufferPointer,_)``).
    @discardableResult
    public func write(_ bytes: [UInt8], sha256: String) throws -> Bool {
        try bytes.withUnsafeBytes { try write($0, sha256: sha256) }
    }

    /// With ``Durability/batch``: forces every blob written so far to stable storage (one `syncfs` of the
    /// store's file system). Does nothing under the other policies.
    public func sync() throws {
        guard durability == .batch else { return }
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error("open", root) }
        defer { close(fd) }
        if sluice_syncfs(fd) != 0 { throw Self.error("syncfs", root) }
    }

    /// Removes temporary files whose writer process is gone (a killed run's unfinished blobs).
    public func removeStaleTemporaries() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: tmpDir) else { return }
        for name in names {
            guard let pid = Int32(name.split(separator: "-").first ?? "") else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH { unlink(tmpDir + "/" + name) }
        }
    }

    private static func error(_ op: String, _ path: String) -> SluiceError {
        SluiceError(.io, "blob store: cannot \(op) '\(path)': \(String(cString: strerror(errno)))")
    }

}
