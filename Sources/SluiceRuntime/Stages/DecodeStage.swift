import SluiceCore
import SluiceReport

/// A decoded chunk on its way to the dispatcher.
struct Decoded: @unchecked Sendable {
    var batches: [RecordBatch]
    var rejects: [RecordReject]
    var file: String
    var fileIndex: Int
    var fileOffset: Int64
    var startLine: Int?
    var lines: Int
    var records: Int64
    var error: (any Error)?
    /// Keys of records skipped as unchanged (not in `batches`).
    var unchanged: [Int64] = []
}

/// The decoders: `workers` threads that pop chunks, parse them into batches, run the CPU transforms and put
/// the result into the reorder buffer under the chunk's sequence number.
///
/// Booking: parsing is the decode row's busy time and each transform's work is its own row's busy time (the
/// same threads, never booked twice); waiting for a chunk is starved, waiting for the reorder window is
/// blocked, the hand-offs are overhead.
final class DecodeStage: Sendable {
    let meter: StageMeter
    /// One meter per transform, in order.
    let transformMeters: [StageMeter]
    private let transforms: [any Transform]
    private let schema: Schema
    private let sizing: BatchSizing
    private let input: BoundedQueue<(Int, SourceItem)>
    private let output: ReorderBuffer<Decoded>
    private let threads = JoinOnce()
    private let workers: Int

    init(
        workers: Int, schema: Schema, transforms: [any Transform], sizing: BatchSizing,
        input: BoundedQueue<(Int, SourceItem)>, output: ReorderBuffer<Decoded>
    ) {
        self.workers = workers
        self.schema = schema
        self.transforms = transforms
        self.sizing = sizing
        self.input = input
        self.output = output
        meter = StageMeter(name: "decode", threads: workers)
        transformMeters = transforms.map { StageMeter(name: "transform \($0.name)", threads: workers) }
    }

    /// Starts the threads.
    func start() {
        for w in 0..<workers { threads.start(name: "sluice-dec\(w)") { [self] in run() } }
    }

    /// Waits for every thread to end.
    func join() { threads.join() }

    private func run() {
        var timer = ThreadTimer()
        var transformTimers = [ThreadTimer](repeating: ThreadTimer(), count: transforms.count)
        let builder = RecordBatchBuilder(schema: schema, rowCapacity: min(sizing.maxRows, 16_384), trackOrigins: true)
        while true {
            var starved: UInt64 = 0
            guard let (seq, item) = input.pop(waited: &starved) else { break }
            timer.mark(waited: starved, as: .starved)
            var out = Self.decode(consume item, builder: builder, sizing: sizing)
            timer.mark(.busy)
            timer.clock.records += out.records
            timer.clock.batches += 1
            if out.error == nil && !transforms.isEmpty {
                do {
                    for (k, t) in transforms.enumerated() {
                        out.batches = try out.batches.map { try t.apply($0) }
                        transformTimers[k].clock.busy += timer.handOver()
                        transformTimers[k].clock.records += Int64(out.batches.reduce(0) { $0 + $1.count })
                    }
                } catch {
                    timer.mark(.busy)
                    out.error = error
                }
            }
            var waited: UInt64 = 0
            let ok = output.put(seq, out, waited: &waited)
            timer.mark(waited: waited, as: .blocked)
            meter.publish(&timer)
            for k in 0..<transformTimers.count { transformMeters[k].publish(&transformTimers[k]) }
            if !ok { break }
        }
        output.producerFinished()
        timer.mark(.overhead)
        meter.publish(&timer)
    }

    /// Decodes one item into batches of at most `maxRows` rows.
    static func decode(_ item: SourceItem, builder: RecordBatchBuilder, sizing: BatchSizing) -> Decoded {
        switch item {
        case .batch(let b):
            return Decoded(
                batches: [b], rejects: [], file: b.origin.file, fileIndex: 0, fileOffset: b.origin.firstOffset,
                startLine: nil, lines: 0, records: Int64(b.count), error: nil)
        case .chunk(let chunk):
            var batches: [RecordBatch] = []
            var rejects: [RecordReject] = []
            var pos = 0
            var line = 0
            let bytes = chunk.bytes
            let b =
                builder.schema == chunk.decoder.schema
                ? builder
                : RecordBatchBuilder(
                    schema: chunk.decoder.schema, rowCapacity: min(sizing.maxRows, 16_384), trackOrigins: true)
            b.chunkPosition = StoredSourceHashes.position(file: chunk.fileIndex, offset: chunk.fileOffset)
            while pos < chunk.count {
                let startPos = pos
                let startLine = line
                let progress = chunk.decoder.decode(
                    bytes, from: pos, line: line, into: b, maxRows: sizing.maxRows, maxBytes: sizing.chunkBytes * 2,
                    rejects: &rejects)
                pos = progress.end
                line = progress.line
                if b.count > 0 {
                    // Row origins are relative to the chunk; make the batch's origin the chunk's.
                    batches.append(
                        b.build(
                            origin: BatchOrigin(file: chunk.file, firstLine: 0, firstOffset: chunk.fileOffset),
                            inputBytes: pos - startPos))
                }
                if pos == startPos && line == startLine { break }
            }
            let rows = batches.reduce(0) { $0 + $1.count }
            let unchanged = b.unchangedKeys
            let superseded = b.supersededRecords
            if !unchanged.isEmpty { b.unchangedKeys = [] }
            b.supersededRecords = 0
            return Decoded(
                batches: batches, rejects: rejects, file: chunk.file, fileIndex: chunk.fileIndex,
                fileOffset: chunk.fileOffset, startLine: chunk.startLine, lines: line,
                records: Int64(rows + rejects.count + unchanged.count + superseded), error: nil, unchanged: unchanged)
        }
    }
}
