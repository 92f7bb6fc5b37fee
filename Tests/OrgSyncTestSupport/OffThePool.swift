import Foundation

/// Runs blocking work (waiting for a child process, a socket read with a timeout, a file
/// written byte by byte) on a thread of its own, never on the cooperative pool: a test that
/// blocks a pool thread stalls every other test of the process (on 2 cores the pool has two
/// threads), and not on Dispatch's global queues, which on Linux add a thread for blocked work
/// only about once a second. A body that cannot throw gives a call that needs no `try`.
public func offThePool<T: Sendable, Failure: Error>(
    _ body: @escaping @Sendable () throws(Failure) -> T
) async throws(Failure) -> T {
    let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, Failure>, Never>) in
        Thread { continuation.resume(returning: Result { () throws(Failure) -> T in try body() }) }.start()
    }
    return try result.get()
}
