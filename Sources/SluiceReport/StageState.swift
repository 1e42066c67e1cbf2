/// What a thread of a stage is doing at an instant. Every nanosecond of a stage thread's life is booked to
/// exactly one of these, so a stage row never holds more time than its threads lived.
public enum StageState: Sendable, CaseIterable, CustomStringConvertible {
    /// Useful work (parsing, writing, committing).
    case busy
    /// The stage's own bookkeeping: hand-offs, batch assembly, rejects, retry back-off.
    case overhead
    /// Waiting for upstream to deliver.
    case starved
    /// Waiting for downstream to accept.
    case blocked

    /// `busy`, `overhead`, `starved`, `blocked` (the metric label).
    public var description: String {
        switch self {
        case .busy: return "busy"
        case .overhead: return "overhead"
        case .starved: return "starved"
        case .blocked: return "blocked"
        }
    }
}

extension StageClock {
    /// Adds `nanos` to the time in `state`.
    @inline(__always)
    public mutating func add(_ state: StageState, _ nanos: UInt64) {
        switch state {
        case .busy: busy &+= nanos
        case .overhead: overhead &+= nanos
        case .starved: starved &+= nanos
        case .blocked: blocked &+= nanos
        }
    }

    /// Nanoseconds in `state`.
    public subscript(state: StageState) -> UInt64 {
        switch state {
        case .busy: return busy
        case .overhead: return overhead
        case .starved: return starved
        case .blocked: return blocked
        }
    }

    /// Nanoseconds booked in all four states together.
    public var booked: UInt64 { busy &+ overhead &+ starved &+ blocked }
}

/// Books one thread's time to its stage, instant by instant: each call books the time since the previous one
/// to a single state, so busy + overhead + starved + blocked is exactly the time since ``init()``.
public struct ThreadTimer: Sendable {
    /// Time booked so far and not yet handed to a stage's shared clock.
    public var clock = StageClock()
    private var last: UInt64

    /// Starts booking at this instant.
    public init() { last = MonotonicClock.now() }

    /// Books the time since the last mark as `state`; returns the current instant.
    @inline(__always) @discardableResult
    public mutating func mark(_ state: StageState) -> UInt64 {
        let now = MonotonicClock.now()
        clock.add(state, now &- last)
        last = now
        return now
    }

    /// Books the time since the last mark: `waited` nanoseconds of it (measured inside a queue or a source) as
    /// `state`, the rest as `rest`.
    @inline(__always)
    public mutating func mark(waited: UInt64, as state: StageState, rest: StageState = .overhead) {
        let now = MonotonicClock.now()
        let dt = now &- last
        let w = min(waited, dt)
        clock.add(state, w)
        clock.add(rest, dt - w)
        last = now
    }

    /// The time since the last mark, which the caller books elsewhere (another stage sharing this thread, such
    /// as a transform run by the decoders); this timer does not book it.
    @inline(__always)
    public mutating func handOver() -> UInt64 {
        let now = MonotonicClock.now()
        let dt = now &- last
        last = now
        return dt
    }

    /// Returns the booked time and starts a new tally (the timer keeps running).
    @inline(__always)
    public mutating func take() -> StageClock {
        let c = clock
        clock = StageClock()
        return c
    }
}
