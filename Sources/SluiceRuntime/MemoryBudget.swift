import Foundation

/// The memory a run may use, in bytes: the machine's limit (cgroup v2 `memory.max`, cgroup v1
/// `memory.limit_in_bytes`, else physical RAM) times a fraction.
public struct MemoryBudget: Sendable, Hashable {
    /// The machine limit the budget was taken from, in bytes.
    public var machineBytes: Int64
    /// Where `machineBytes` came from (`cgroup v2`, `cgroup v1`, `physical RAM`, `configured`).
    public var source: String
    /// The fraction of `machineBytes` the run may use. Default: 0.25.
    public var fraction: Double

    /// The budget in bytes.
    public var bytes: Int64 { Int64(Double(machineBytes) * fraction) }

    /// Creates a budget from explicit numbers.
    public init(machineBytes: Int64, fraction: Double = 0.25, source: String = "configured") {
        self.machineBytes = machineBytes
        self.fraction = fraction
        self.source = source
    }

    /// Detects the machine limit. `root` lets tests point at a fake filesystem.
    public static func detect(fraction: Double = 0.25, root: String = "") -> MemoryBudget {
        let physical = Int64(ProcessInfo.processInfo.physicalMemory)
        if let v2 = readLimit(root + "/sys/fs/cgroup/memory.max"), v2 < physical {
            return MemoryBudget(machineBytes: v2, fraction: fraction, source: "cgroup v2")
        }
        if let v1 = readLimit(root + "/sys/fs/cgroup/memory/memory.limit_in_bytes"), v1 < physical {
            return MemoryBudget(machineBytes: v1, fraction: fraction, source: "cgroup v1")
        }
        if !root.isEmpty, let fake = readLimit(root + "/physical") {
            return MemoryBudget(machineBytes: fake, fraction: fraction, source: "physical RAM")
        }
        return MemoryBudget(machineBytes: physical, fraction: fraction, source: "physical RAM")
    }

    /// Reads a cgroup limit file: a number of bytes, or `max` (no limit → nil).
    static func readLimit(_ path: String) -> Int64? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard t != "max", let v = Int64(t), v > 0 else { return nil }
        return v
    }
}

/// Batch, chunk and queue sizes derived from a memory budget and a batching policy.
public struct BatchSizing: Sendable, Hashable {
    /// Raw input bytes per chunk handed to a decoder.
    public var chunkBytes: Int
    /// Maximum rows per batch.
    public var maxRows: Int
    /// Chunks queued between the reader and the decoders.
    public var queueDepth: Int
    /// Decoded chunks allowed ahead of the writer.
    public var reorderWindow: Int

    /// Sizes for `workers` decoders so that everything in flight stays within the budget.
    ///
    /// In flight at most: `queueDepth` raw chunks, `workers` decoding, `reorderWindow` decoded, one writing;
    /// a decoded chunk takes about 3× its raw size (raw bytes plus columns). The policy's `maxBytes`
    /// caps the chunk size; a small budget shrinks it (never below 64 KiB, or `maxBytes` if smaller) and the queues (never below 1).
    public static func from(budget: MemoryBudget, policy: BatchingPolicy, workers: Int) -> BatchSizing {
        let budgetBytes = max(budget.bytes, 1 << 20)
        var queueDepth = 2
        var window = workers + 2
        var inFlight = Int64(queueDepth + workers + window + 1)
        var chunk = min(Int64(policy.maxBytes), budgetBytes / (inFlight * 3))
        if chunk < 1 << 20 {
            queueDepth = 1
            window = workers + 1
            inFlight = Int64(queueDepth + workers + window + 1)
            chunk = budgetBytes / (inFlight * 3)
        }
        chunk = max(chunk, min(64 << 10, Int64(policy.maxBytes)))
        return BatchSizing(
            chunkBytes: Int(chunk), maxRows: policy.maxRows, queueDepth: queueDepth, reorderWindow: window)
    }
}
