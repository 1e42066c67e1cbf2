import SluiceCore
import SluiceRuntime
import Testing

@Suite struct WriteAttemptStateMachineTests {
    let policy = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(100), maxDelay: .seconds(1))

    @Test func aCleanWriteIsOneStep() {
        var m = WriteAttemptStateMachine(rows: 10, policy: policy)
        guard case .write(let r) = m.start() else { Issue.record("expected a write"); return }
        #expect(r == 0..<10)
        guard case .done(let o) = m.succeeded(written: 10, refused: [], childRows: 4) else {
            Issue.record("expected done")
            return
        }
        #expect(o.written == 10 && o.rejected.isEmpty && o.childRows == 4)
    }

    @Test func transientFailuresAreRetriedWithBackOffUntilTheAttemptsRunOut() {
        var m = WriteAttemptStateMachine(rows: 5, policy: policy)
        _ = m.start()
        let busy = SluiceError.sink(.retry, "database is locked")
        guard case .sleep(let d1) = m.failed(busy, unit: 1) else { Issue.record("expected a sleep"); return }
        #expect(d1 == .milliseconds(100))
        guard case .write(let again) = m.resume(), again == 0..<5 else { Issue.record("expected a rewrite"); return }
        guard case .sleep(let d2) = m.failed(busy, unit: 1) else { Issue.record("expected a sleep"); return }
        #expect(d2 == .milliseconds(200))
        guard case .fail(let e) = m.failed(busy, unit: 1) else { Issue.record("expected the batch to fail"); return }
        #expect(e.message == "database is locked")
    }

    @Test func refusedDataIsBisectedToTheOffendingRowsWhileTheRestIsWritten() {
        // Rows 2 and 5 of 8 are refused; the store refuses any write that contains one.
        let bad: Set<Int> = [2, 5]
        var m = WriteAttemptStateMachine(rows: 8, policy: policy)
        var action = m.start()
        var writes: [Range<Int>] = []
        var stored = 0
        loop: while true {
            switch action {
            case .write(let r):
                writes.append(r)
                if r.contains(where: bad.contains) {
                    action = m.failed(SluiceError.sink(.bisect, "CHECK violated", detail: "row \(r)"), unit: 0)
                } else {
                    stored += r.count
                    action = m.succeeded(written: r.count, refused: [], childRows: 0)
                }
            case .done(let o):
                #expect(o.written == 6 && stored == 6)
                #expect(o.rejected.map(\.row) == [2, 5])
                #expect(o.rejected.allSatisfy { $0.reason.hasPrefix("CHECK violated — row") })
                break loop
            default:
                Issue.record("unexpected \(action)")
                break loop
            }
        }
        #expect(writes.first == 0..<8 && writes.count < 16)
    }

    @Test func rowsTheSinkRefusesItselfAreRejectedByBatchRow() {
        var m = WriteAttemptStateMachine(rows: 6, policy: policy)
        _ = m.start()
        _ = m.failed(SluiceError.sink(.bisect, "bad"), unit: 0)  // → 0..<3
        guard case .write(let second) = m.succeeded(written: 2, refused: [(row: 1, reason: "too long")], childRows: 0)
        else { Issue.record("expected the second half"); return }
        #expect(second == 3..<6)
        guard case .done(let o) = m.succeeded(written: 3, refused: [], childRows: 0) else {
            Issue.record("expected done")
            return
        }
        #expect(o.written == 5 && o.rejected == [.init(row: 1, reason: "too long")])
    }

    @Test func aFatalFailureEndsTheBatch() {
        var m = WriteAttemptStateMachine(rows: 3, policy: policy)
        _ = m.start()
        guard case .fail = m.failed(SluiceError.sink(.fatal, "no such table"), unit: 0) else {
            Issue.record("expected fail")
            return
        }
    }

    @Test func retryDecisionsHonourRetryAfterWithinItsLimit() {
        #expect(policy.decide(afterAttempt: 1, unit: 1) == .retry(after: .milliseconds(100)))
        #expect(policy.decide(afterAttempt: 3, unit: 1) == .attemptsExhausted)
        #expect(
            policy.decide(afterAttempt: 1, unit: 0, retryAfter: .seconds(2), maxRetryAfter: .seconds(5))
                == .retry(after: .seconds(2)))
        #expect(
            policy.decide(afterAttempt: 1, unit: 0, retryAfter: .seconds(9), maxRetryAfter: .seconds(5))
                == .waitTooLong(.seconds(9)))
    }
}

@Suite struct KeyOrderStateMachineTests {
    @Test func aBatchWaitsOnlyForEarlierUnfinishedBatchesSharingAKey() {
        var m = KeyOrderStateMachine()
        m.register(0, keyHashes: [1, 2])
        m.register(1, keyHashes: [3])
        m.register(2, keyHashes: [2, 4])
        m.register(3, keyHashes: [4])
        #expect(m.mayRun(0) && m.mayRun(1))
        #expect(!m.mayRun(2), "shares key 2 with batch 0")
        #expect(!m.mayRun(3), "shares key 4 with batch 2")
        let first = m.release(0)
        #expect(first)
        #expect(m.mayRun(2) && !m.mayRun(3))
        // A failed batch is released like a committed one: nothing waits on it for ever.
        let failed = m.release(2)
        #expect(failed)
        #expect(m.mayRun(3))
        let again = m.release(2)
        #expect(!again, "released once")
        #expect(m.mayRun(99), "an unregistered batch never waits")
    }

    @Test func keyHashesTellKeysApartAcrossColumnsAndNulls() throws {
        let schema = try Schema.parse("a:int64,b:string")
        let b = RecordBatchBuilder(schema: schema)
        for (a, s) in [(1, "x"), (1, "y"), (2, "x"), (1, "x")] {
            b.columns[0].append(int64: Int64(a))
            b.columns[1].append(string: s)
            b.finishRow()
        }
        b.columns[0].appendNull()
        b.columns[1].append(string: "x")
        b.finishRow()
        let batch = b.build()
        #expect(KeyOrderStateMachine.keyHashes(batch, columns: ["a", "b"]).count == 4)
        #expect(KeyOrderStateMachine.keyHashes(batch, columns: ["a"]).count == 3)
    }
}
