#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Monotonic time in nanoseconds, cheap enough to read once per batch.
public enum MonotonicClock {
    /// Nanoseconds since an arbitrary fixed point.
    @inline(__always)
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// Time accounting for one pipeline stage, kept by the thread(s) running it and merged at the end.
///
/// - `busy`: useful work (parsing, writing).
/// - `overhead`: the stage's own bookkeeping: hand-offs, batch assembly, rejects, encoding.
/// - `starved`: waiting for upstream to deliver.
/// - `blocked`: waiting for downstream to accept.
public struct StageClock: Sendable, Codable {
    /// Nanoseconds of useful work.
    public var busy: UInt64 = 0
    /// Nanoseconds of overhead.
    public var overhead: UInt64 = 0
    /// Nanoseconds waiting on upstream.
    public var starved: UInt64 = 0
    /// Nanoseconds waiting on downstream.
    public var blocked: UInt64 = 0
    /// Records that went through the stage.
    public var records: Int64 = 0
    /// Batches (or chunks) that went through the stage.
    public var batches: Int64 = 0

    /// A zeroed clock.
    public init() {}

    /// Adds another clock's totals (another worker of the same stage).
    public mutating func merge(_ other: StageClock) {
        busy += other.busy
        overhead += other.overhead
        starved += other.starved
        blocked += other.blocked
        records += other.records
        batches += other.batches
    }
}

/// Reads process statistics.
public enum ProcessStats {
    /// Peak resident set size in bytes (VmHWM), or 0 where unknown.
    public static func peakRSS() -> Int64 {
        #if os(Linux)
            guard let f = fopen("/proc/self/status", "r") else { return 0 }
            defer { fclose(f) }
            var line = [CChar](repeating: 0, count: 256)
            while fgets(&line, 256, f) != nil {
                let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if s.hasPrefix("VmHWM:") {
                    let digits = s.filter { $0.isNumber }
                    return (Int64(digits) ?? 0) * 1024
                }
            }
            return 0
        #else
            var usage = rusage()
            getrusage(RUSAGE_SELF, &usage)
            return Int64(usage.ru_maxrss)
        #endif
    }
}
