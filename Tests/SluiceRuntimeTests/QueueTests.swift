import Foundation
import SluiceCore
import Synchronization
import Testing

@testable import SluiceRuntime

/// The bounded queue between stages: thread ends block, task ends suspend, and either kind meets the other.
@Suite struct BoundedQueueTests {
    @Test func aThreadFeedsTasksThroughAFullQueueInOrder() async {
        let q = BoundedQueue<Int>(capacity: 2)
        let n = 5_000
        Thread.detachNewThread {
            var waited: UInt64 = 0
            for i in 0..<n { _ = q.push(i, waited: &waited) }
            q.close()
        }
        // Two consumer tasks share the items; together they see each exactly once, each in increasing order.
        let seen = await withTaskGroup(of: [Int].self) { group in
            for _ in 0..<2 {
                group.addTask {
                    var mine: [Int] = []
                    while let i = await q.pop().item { mine.append(i) }
                    return mine
                }
            }
            var all: [[Int]] = []
            for await part in group { all.append(part) }
            return all
        }
        for part in seen { #expect(part == part.sorted()) }
        #expect(seen.flatMap { $0 }.sorted() == Array(0..<n))
    }

    @Test func aTaskFeedsAThreadAndWaitsForRoom() async {
        let q = BoundedQueue<Int>(capacity: 1)
        let got = Locked<[Int]>([])
        let consumer = Thread {
            var waited: UInt64 = 0
            while let i = q.pop(waited: &waited) {
                usleep(200)
                got.withLock { $0.append(i) }
            }
        }
        consumer.start()
        var blocked: UInt64 = 0
        for i in 0..<200 {
            let r = await q.push(i)
            #expect(r.ok)
            blocked += r.waited
        }
        q.close()
        while got.withLock({ $0.count }) < 200 { try? await Task.sleep(for: .milliseconds(1)) }
        #expect(got.withLock { $0 } == Array(0..<200))
        // A slow consumer behind a one-slot queue: the producer waited, and said so.
        #expect(blocked > 0)
    }

    @Test func cancellingWakesSuspendedTasksOnBothEnds() async {
        let empty = BoundedQueue<Int>(capacity: 1)
        let full = BoundedQueue<Int>(capacity: 1)
        var waited: UInt64 = 0
        _ = full.push(0, waited: &waited)
        async let popped = empty.pop()
        async let pushed = full.push(1)
        try? await Task.sleep(for: .milliseconds(50))
        empty.cancel()
        full.cancel()
        let (p, s) = await (popped, pushed)
        #expect(p.item == nil)
        #expect(!s.ok)
    }
}
