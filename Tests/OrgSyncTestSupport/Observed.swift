import Synchronization

/// A value that tasks can wait on: `wait(until:)` returns as soon as the predicate holds,
/// without polling, and throws `CancellationError` if the waiting task is cancelled (so a
/// bound from ``withTimeout(ms:_:_:)`` ends it).
public final class Observed<Value: Sendable>: Sendable {
    private struct Waiter {
        var id: Int
        var predicate: @Sendable (Value) -> Bool
        var continuation: CheckedContinuation<Value, any Error>
    }

    private struct State {
        var value: Value
        var waiters: [Waiter] = []
        var nextID = 0
        var cancelledIDs: Set<Int> = []
    }

    private let state: Mutex<State>

    public init(_ value: Value) { self.state = Mutex(State(value: value)) }

    public var value: Value { state.withLock { $0.value } }

    /// Changes the value and wakes the waiters whose predicate now holds.
    @discardableResult
    public func update<Result>(_ body: (inout Value) -> Result) -> Result {
        let (result, ready) = state.withLock { state -> (Result, [(CheckedContinuation<Value, any Error>, Value)]) in
            let result = body(&state.value)
            if state.waiters.isEmpty { return (result, []) }  // the common case: nobody waits
            var ready: [(CheckedContinuation<Value, any Error>, Value)] = []
            state.waiters.removeAll { waiter in
                guard waiter.predicate(state.value) else { return false }
                ready.append((waiter.continuation, state.value))
                return true
            }
            return (result, ready)
        }
        for (continuation, value) in ready { continuation.resume(returning: value) }
        return result
    }

    /// Returns the value once `predicate` holds for it.
    @discardableResult
    public func wait(until predicate: @escaping @Sendable (Value) -> Bool) async throws -> Value {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let immediate: Result<Value, any Error>? = state.withLock { state in
                    if state.cancelledIDs.remove(id) != nil { return .failure(CancellationError()) }
                    if predicate(state.value) { return .success(state.value) }
                    state.waiters.append(Waiter(id: id, predicate: predicate, continuation: continuation))
                    return nil
                }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                if let index = state.waiters.firstIndex(where: { $0.id == id }) { return state.waiters.remove(at: index) }
                state.cancelledIDs.insert(id)
                return nil
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }
}

/// A wait that took longer than its bound.
public struct TimeoutError: Error, CustomStringConvertible {
    public var what: String
    public var boundMs: UInt64
    public var description: String { "timed out after \(boundMs) ms waiting for \(what)" }
}

/// Runs `body`, failing with ``TimeoutError`` if it has not finished within `ms` of real time.
/// For tests: every wait on an event has a bound, and none is a sleep. The default bound guards
/// against a hang, it measures nothing: 30 s, because in the main test run (some ninety suites
/// in one process on two cooperative threads) a task that is ready can wait over 10 s for a
/// thread (a TLS link test's wait for its suspension missed a 10 s bound that way).
@discardableResult
public func withTimeout<T: Sendable>(
    ms: UInt64 = 30_000, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int64(ms)))
            throw TimeoutError(what: what, boundMs: ms)
        }
        defer { group.cancelAll() }
        guard let result = try await group.next() else { throw TimeoutError(what: what, boundMs: ms) }
        return result
    }
}
