import Dispatch

/// Runs blocking file work — writes and fsyncs — on a serial dispatch queue of its own, off
/// Swift's cooperative pool. That pool has one thread per core: a link that blocked one of them
/// in fsync(2) would hold up every other task meanwhile (HTTP handlers, the other links), and a
/// few links committing at once could hold them all. A serial queue gets a thread of its own
/// when its work blocks, and keeps its work in order.
public struct BlockingFileQueue: Sendable {
    private let queue: DispatchQueue

    public init(label: String) {
        queue = DispatchQueue(label: label)
    }

    /// Runs `body` on the queue and returns its result. Not cancellable: file work, once
    /// started, finishes (a half-done cursor store is what the cursor files' slots guard against,
    /// not something to cause on purpose).
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try body() }) }
        }
    }
}
