import Foundation
import SluiceBlobStore
import SluiceCore
import SluiceTesting
import Testing

@Suite struct BlobStoreTests {
    @Test func writesOnceUnderTwoHexLevelsAndSkipsWhatExists() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        for durability in BlobStore.Durability.allCases {
            let store = try BlobStore(root: dir.file("b-\(durability)"), durability: durability)
            let body: [UInt8] = Array("hello blob".utf8)
            let hex = sha256Hex(body)
            #expect(!store.contains(sha256: hex))
            #expect(try store.write(body, sha256: hex))
            #expect(try !store.write(body, sha256: hex), "the second write is skipped")
            let path = store.path(sha256: hex)
            #expect(path == dir.file("b-\(durability)/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))/\(hex)"))
            #expect(FileManager.default.contents(atPath: path).map(Array.init) == body)
            #expect(store.contains(sha256: hex, size: Int64(body.count)))
            #expect(!store.contains(sha256: hex, size: 3), "a blob of another size does not count")
            try store.sync()
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.file("b-\(durability)/.tmp"))
            #expect(leftovers.isEmpty)
        }
    }

    @Test func temporaryFilesOfDeadProcessesAreRemovedAtOpen() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        _ = try BlobStore(root: dir.file("b"))
        // A pid that cannot be running (above pid_max), and this process's own.
        _ = try dir.write("b/.tmp/4194999-1-abcd", "partial")
        _ = try dir.write("b/.tmp/\(getpid())-1-abcd", "mine")
        _ = try BlobStore(root: dir.file("b"))
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.file("b/.tmp"))
        #expect(left == ["\(getpid())-1-abcd"])
    }

    @Test func anUnwritableRootIsAClearError() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        _ = try dir.write("file", "not a directory")
        #expect(throws: SluiceError.self) { try BlobStore(root: dir.file("file/blobs")) }
    }
}
