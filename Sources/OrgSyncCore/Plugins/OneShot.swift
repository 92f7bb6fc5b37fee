#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import Synchronization

/// A value set once, awaited with a bound by any number of tasks.
final class OneShot<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var waiters: [UInt64: CheckedContinuation<Value?, Never>] = [:]
        var nextID: UInt64 = 0
        /// Waiters whose timer fired before they were installed.
        var expired: Set<UInt64> = []
    }

    private let state = Mutex(State())

    var value: Value? { state.withLock { $0.value } }

    func fulfil(_ value: Value) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value?, Never>] in
            guard state.value == nil else { return [] }
            state.value = value
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    /// The value, waiting at most `timeoutMs` for it; nil on timeout.
    func wait(timeoutMs: Int) async -> Value? {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(timeoutMs))
            let waiter = self.state.withLock { state -> CheckedContinuation<Value?, Never>? in
                guard let waiter = state.waiters.removeValue(forKey: id) else {
                    if state.value == nil { state.expired.insert(id) }
                    return nil
                }
                return waiter
            }
            waiter?.resume(returning: nil)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            // .some(x): resume now with x (the value, or nil for an expired wait); .none: wait.
            let now = state.withLock { state -> Value?? in
                if let value = state.value { return .some(value) }
                if state.expired.remove(id) != nil { return .some(nil) }
                state.waiters[id] = continuation
                return .none
            }
            if let now { continuation.resume(returning: now) }
        }
    }
}
