import Synchronization

/// A fast 64-bit hash of a record's raw input bytes, for telling an unchanged record from its bytes alone
/// (see ``StoredSourceHashes``). Not cryptographic: it guards against accidental, not crafted, collisions;
/// two different records of the same key collide with a probability of about 2⁻⁶⁴.
///
/// Each 32 bytes feed two independent lanes of 64 × 64 → 128-bit multiplications folded to 64 bits (the
/// construction of wyhash), so it runs at several GB/s; the length and the seed are mixed into the result.
public enum SourceHash {
    private static let p0: UInt64 = 0xa076_1d64_78bd_642f
    private static let p1: UInt64 = 0xe703_7ed1_a0b4_28db
    private static let p2: UInt64 = 0x8ebc_6af0_9c88_c6e3
    private static let p3: UInt64 = 0x5899_65cc_7537_4cc3

    @inline(__always)
    private static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (hi, lo) = a.multipliedFullWidth(by: b)
        return hi ^ lo
    }

    @inline(__always)
    private static func load(_ p: UnsafeRawPointer, _ at: Int) -> UInt64 {
        UInt64(littleEndian: p.loadUnaligned(fromByteOffset: at, as: UInt64.self))
    }

    /// The hash of `p[0..<count]` under `seed` (which should differ whenever the bytes' meaning does, e.g.
    /// a fingerprint of the mapping that decodes them).
    public static func hash(_ p: UnsafeRawPointer, count: Int, seed: UInt64) -> Int64 {
        var a = seed ^ p0
        var b = seed ^ p1 ^ UInt64(truncatingIfNeeded: count)
        var i = 0
        while i + 32 <= count {
            a = mix(load(p, i) ^ p1, load(p, i + 8) ^ a)
            b = mix(load(p, i + 16) ^ p2, load(p, i + 24) ^ b)
            i += 32
        }
        while i + 8 <= count {
            a = mix(load(p, i) ^ p3, a ^ p2)
            i += 8
        }
        if i < count {
            var tail: UInt64 = 0
            for k in 0..<(count - i) {
                tail |= UInt64(p.load(fromByteOffset: i + k, as: UInt8.self)) << (8 * UInt64(k))
            }
            b = mix(tail ^ p3, b ^ p0)
        }
        return Int64(bitPattern: mix(a ^ p2, b ^ p3 ^ UInt64(truncatingIfNeeded: count)))
    }

    /// A seed from a text (e.g. a mapping's description).
    public static func seed(_ text: String) -> UInt64 {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { b in
            guard let base = b.baseAddress else { return 0 }
            return UInt64(bitPattern: hash(base, count: b.count, seed: 0))
        }
    }
}

/// The source hashes of the records a keyed sink already holds, by integer key, read when the sink opens: a
/// decoder that finds a record's raw bytes hash to the stored value skips decoding it, because the same bytes
/// under the same mapping decode to the same row (`--skip-unchanged`).
///
/// Only one occurrence of a key per run may be skipped, and the last occurrence in the input must win even
/// though decoders run on several chunks at once. Every key has a claim, taken with one atomic operation:
/// skipping claims it with the record's input position; decoding claims it as decoded. A record whose key
/// another occurrence has claimed is decoded; a decoded record is dropped when a later occurrence of its key
/// was skipped (that one, being unchanged, is what the store already holds).
public final class StoredSourceHashes: @unchecked Sendable {
    private let keys: [Int64]
    private let hashes: [Int64]
    private let claims: UnsafeMutablePointer<Atomic<Int64>>
    private static let unclaimed: Int64 = -1
    private static let decoded = Int64.max

    /// Keys (any order, each once) and their stored source hashes.
    public init(keys: [Int64], hashes: [Int64]) {
        precondition(keys.count == hashes.count)
        if zip(keys, keys.dropFirst()).allSatisfy({ $0 < $1 }) {
            self.keys = keys
            self.hashes = hashes
        } else {
            let order = keys.indices.sorted { keys[$0] < keys[$1] }
            self.keys = order.map { keys[$0] }
            self.hashes = order.map { hashes[$0] }
        }
        claims = .allocate(capacity: max(keys.count, 1))
        for i in 0..<keys.count { (claims + i).initialize(to: Atomic(Self.unclaimed)) }
    }

    deinit {
        claims.deinitialize(count: keys.count)
        claims.deallocate()
    }

    /// Stored records.
    public var count: Int { keys.count }

    /// An input position for claims: the file's ordinal in the run and the byte offset in it.
    public static func position(file: Int, offset: Int64) -> Int64 { Int64(file) << 44 | offset }

    private func index(of key: Int64) -> Int? { keys.sortedIndex(of: key) }

    /// Whether the record with `key` at input `position`, whose raw bytes hash to `hash`, can be skipped as
    /// unchanged: its key is stored with that hash and no other occurrence of it has been claimed. Claims the key.
    public func claimUnchanged(key: Int64, hash: Int64, position: Int64) -> Bool {
        guard let i = index(of: key), hashes[i] == hash else { return false }
        return (claims + i).pointee.compareExchange(
            expected: Self.unclaimed, desired: position, ordering: .acquiringAndReleasing
        ).exchanged
    }

    /// Whether the record with `key` at input `position`, decoded in full, should be written: false only when
    /// a later occurrence of the key was skipped as unchanged. Claims the key as decoded.
    public func claimDecoded(key: Int64, position: Int64) -> Bool {
        guard let i = index(of: key) else { return true }
        let c = claims + i
        let r = c.pointee.compareExchange(
            expected: Self.unclaimed, desired: Self.decoded, ordering: .acquiringAndReleasing)
        if r.exchanged || r.original == Self.decoded { return true }
        return position > r.original
    }
}

extension Array where Element == Int64 {
    /// The index of `key` in this ascending array (binary search), or nil.
    public func sortedIndex(of key: Int64) -> Int? {
        var lo = 0
        var hi = count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if self[mid] < key { lo = mid + 1 } else { hi = mid }
        }
        return lo < count && self[lo] == key ? lo : nil
    }
}
