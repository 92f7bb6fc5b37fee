#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import Synchronization

/// What the stdout reader thread hands to the task waiting for an answer.
final class PluginInbox: Sendable {
    enum Event: Sendable, Equatable {
        case line([UInt8])
        /// A line went past the limit; nothing more is read.
        case overlong
        /// Stdout closed: the plugin exited or was killed.
        case end
        /// More unread lines than ``PluginInbox/queuedLinesMax``: the plugin writes lines nobody
        /// asked for. Nothing more is delivered.
        case flood
    }

    /// Lines queued before the broker reads them; a plugin answers one request at a time, so
    /// anything near this is a plugin printing on its own.
    static let queuedLinesMax = 64

    private struct State {
        var queued: [Event] = []
        var waiter: (id: UInt64, continuation: CheckedContinuation<Event?, Never>)?
        var nextWaiterID: UInt64 = 0
        /// A waiter whose timer fired before it was installed.
        var expiredWaiterID: UInt64?
        var ended = false
    }

    private let state = Mutex(State())

    func deliver(_ event: Event) {
        let waiter = state.withLock { state -> CheckedContinuation<Event?, Never>? in
            if state.ended { return nil }
            switch event {
            case .end, .overlong, .flood: state.ended = true
            case .line: break
            }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            if state.queued.count >= Self.queuedLinesMax {
                state.queued = [.flood]
                state.ended = true
                return nil
            }
            state.queued.append(event)
            return nil
        }
        waiter?.resume(returning: event)
    }

    /// The next event, or nil if none came within `timeoutMs`. One waiter at a time: a second
    /// concurrent waiter gets nil at once.
    func next(timeoutMs: Int) async -> Event? {
        let id = state.withLock { state -> UInt64 in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(timeoutMs))
            self.timeOut(waiter: id)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            let event = state.withLock { state -> Event?? in
                if !state.queued.isEmpty { return .some(state.queued.removeFirst()) }
                if state.ended { return .some(.end) }
                if state.expiredWaiterID == id || state.waiter != nil { return .some(nil) }
                state.waiter = (id, continuation)
                return .none
            }
            if let event { continuation.resume(returning: event) }
        }
    }

    private func timeOut(waiter id: UInt64) {
        let continuation = state.withLock { state -> CheckedContinuation<Event?, Never>? in
            guard let waiter = state.waiter, waiter.id == id else {
                state.expiredWaiterID = id
                return nil
            }
            state.waiter = nil
            return waiter.continuation
        }
        continuation?.resume(returning: nil)
    }
}
