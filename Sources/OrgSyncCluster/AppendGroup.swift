import OrgSyncLog
import Synchronization

/// Appends without an idempotency key that wait for a store's publish turn together and are
/// stored as one JetStream message (group commit): while one message is in flight (the fence
/// allows one per stream and broker), the appends that arrive join the next one, and each is
/// answered with its own offsets inside it. Eight producers of one entry each were held to one
/// entry per round trip; grouped, a round trip stores what arrived during the last one.
///
/// A keyed append is never grouped: its key is the message's `Nats-Msg-Id`, which JetStream
/// deduplicates per message.
final class AppendGroup: Sendable {
    /// The most entries one group holds.
    static let entriesMax = 10_000
    /// The most bytes one group's entries take framed (each with its 4-byte length, as
    /// ``ClusterAppendMessage`` stores them, before compression); the server's `max_payload` may
    /// lower it (see ``JetStreamStreamStore``).
    static let framedBytesMax = 256 * 1024

    /// What `entries` take framed in a message.
    static func framedBytes(_ entries: [[UInt8]]) -> Int { entries.reduce(0) { $0 + 4 + $1.count } }

    private struct Members {
        var entries: [[UInt8]] = []
        var framedBytes = 0
        /// Each member's first entry's index in `entries`, and its entry count.
        var ranges: [(start: Int, count: Int)] = []
        /// Set once the leader has the turn: nobody joins after.
        var sealed = false
    }

    private struct Answer {
        var firstOffset: Result<UInt64, any Error>?
        var waiters: [(member: Int, continuation: CheckedContinuation<AppendResult, any Error>)] = []
    }

    private let members = Mutex(Members())
    private let answer = Mutex(Answer())

    /// A group whose first member (its leader) is `entries`.
    init(leader entries: [[UInt8]], framedBytes: Int) {
        _ = join(entries, framedBytes: framedBytes, framedBytesMax: .max)
    }

    /// Adds `entries` as a member; nil when the group is sealed or they do not fit.
    func join(_ entries: [[UInt8]], framedBytes: Int, framedBytesMax: Int) -> Int? {
        members.withLock { group in
            guard !group.sealed,
                  group.entries.count + entries.count <= Self.entriesMax,
                  group.framedBytes + framedBytes <= framedBytesMax
            else { return nil }
            group.ranges.append((group.entries.count, entries.count))
            group.entries += entries
            group.framedBytes += framedBytes
            return group.ranges.count - 1
        }
    }

    /// Closes the group to new members; returns every member's entries, in order.
    func seal() -> [[UInt8]] {
        members.withLock { group in
            group.sealed = true
            return group.entries
        }
    }

    /// Answers every member: the group was stored from `firstOffset` on, or failed.
    func finish(_ firstOffset: Result<UInt64, any Error>) {
        let waiters = answer.withLock { answer in
            answer.firstOffset = firstOffset
            defer { answer.waiters = [] }
            return answer.waiters
        }
        for waiter in waiters { waiter.continuation.resume(with: result(of: waiter.member, firstOffset)) }
    }

    /// The member's offsets once the group is stored (or the group's error).
    func result(of member: Int) async throws -> AppendResult {
        try await withCheckedThrowingContinuation { continuation in
            let known = answer.withLock { answer -> Result<UInt64, any Error>? in
                if let firstOffset = answer.firstOffset { return firstOffset }
                answer.waiters.append((member, continuation))
                return nil
            }
            if let known { continuation.resume(with: result(of: member, known)) }
        }
    }

    private func result(of member: Int, _ firstOffset: Result<UInt64, any Error>) -> Result<AppendResult, any Error> {
        firstOffset.map { first in
            let range = members.withLock { $0.ranges[member] }
            let start = first + UInt64(range.start)
            return AppendResult(firstOffset: start, lastOffset: start + UInt64(range.count) - 1)
        }
    }
}
