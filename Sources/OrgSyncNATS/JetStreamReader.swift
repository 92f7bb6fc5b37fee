#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Reads a stream in sequence order, in batches, from a given sequence: through an ephemeral
/// pull consumer that acknowledges nothing (the reader keeps its own position), made again from
/// the next sequence whenever it is gone (server restart, reconnect, inactivity) or a gap shows.
/// What a link reading a replicated stream needs: every message once, in order, from where it
/// stands.
public actor JetStreamReader {
    public nonisolated let jetStream: JetStream
    public nonisolated let stream: String
    /// The sequence the next message read will have at least.
    public private(set) var nextSequence: UInt64
    private var consumer: String?
    private var nextConsumerSequence: UInt64 = 1
    private var fetchCount: UInt64 = 0
    private let inboxPrefix: String

    /// How long an unused consumer lives on the server, ns.
    static let inactiveThresholdNs: Int64 = 30_000_000_000
    /// The most messages one fetch asks for.
    public static let batchMax = 10_000
    /// How long after its `expires` a fetch may still be ended by the server's 408, ms.
    static let endSlackMs = 1_000

    public init(jetStream: JetStream, stream: String, from sequence: UInt64 = 1) {
        self.jetStream = jetStream
        self.stream = stream
        self.nextSequence = max(1, sequence)
        var generator = SystemRandomNumberGenerator()
        inboxPrefix = "_INBOX.r" + String(generator.next() as UInt64, radix: 36) + "."
    }

    /// Up to `batch` messages from ``nextSequence`` on, in order: returns once `batch` have come
    /// or `waitMs` has passed (JetStream's pull semantics), empty when none came; with `waitMs`
    /// 0, at once with what the stream holds now. A consumer
    /// found gone costs one more wait of `waitMs` plus a second.
    public func next(batch: Int, waitMs: Int) async throws -> [JetStreamStoredMessage] {
        let batch = min(max(batch, 1), Self.batchMax)
        for attempt in 0..<2 {
            if consumer == nil { try await createConsumer() }
            guard let consumer else { break }
            switch try await fetch(consumer: consumer, batch: batch, waitMs: waitMs) {
            case .messages(let messages):
                return messages
            case .consumerGone where attempt == 0:
                self.consumer = nil  // made again from the next sequence
            case .consumerGone:
                self.consumer = nil
                return []
            }
        }
        return []
    }

    private enum FetchOutcome {
        case messages([JetStreamStoredMessage])
        case consumerGone
    }

    private func fetch(consumer: String, batch: Int, waitMs: Int) async throws -> FetchOutcome {
        let connection = jetStream.connection
        fetchCount += 1
        let inbox = inboxPrefix + String(fetchCount)
        let subscription = try await connection.subscribe(inbox)
        // The fetch ends on its own (408 at `expires`). A consumer that is gone does not say so:
        // the server's API takes the request and nothing answers. This bound ends such a fetch.
        let guardTask = Task {
            try? await Task.sleep(for: .milliseconds(max(waitMs, 0) + Self.endSlackMs))
            await connection.unsubscribe(subscription)
        }
        defer { guardTask.cancel() }
        // No wait: the server sends what it has and ends the fetch at once (404 or 408).
        let body = waitMs <= 0
            ? #"{"batch":\#(batch),"no_wait":true}"#
            : #"{"batch":\#(batch),"expires":\#(Int64(waitMs) * 1_000_000)}"#
        try await connection.publish("$JS.API.CONSUMER.MSG.NEXT.\(stream).\(consumer)", payload: Array(body.utf8), replyTo: inbox)
        var messages: [JetStreamStoredMessage] = []
        var ended = false
        for try await message in subscription {
            if let status = message.status {
                if status == 503 { await connection.unsubscribe(subscription); return .consumerGone }
                ended = true
                break  // 404/408/409: this fetch is over
            }
            // A sequence no stream reaches (2^63) is not one a server means: skipped like any
            // message without metadata, so `+ 1` below stays in range.
            guard let metadata = Self.ackMetadata(message.replyTo), metadata.streamSequence < 1 << 63 else { continue }
            if metadata.consumerSequence != nextConsumerSequence {
                // A gap: something was not delivered. Read again from where we stand.
                await connection.unsubscribe(subscription)
                self.consumer = nil
                return .messages(messages)
            }
            nextConsumerSequence += 1
            guard metadata.streamSequence >= nextSequence else { continue }
            nextSequence = metadata.streamSequence + 1
            messages.append(JetStreamStoredMessage(
                subject: message.subject, sequence: metadata.streamSequence, headers: message.headers, payload: message.payload))
            if messages.count == batch {
                ended = true
                break
            }
        }
        await connection.unsubscribe(subscription)
        // Neither full nor ended by the server: its consumer is gone (or the connection was lost).
        if !ended { return messages.isEmpty ? .consumerGone : .messages(messages) }
        return .messages(messages)
    }

    private func createConsumer() async throws {
        struct Config: Encodable {
            var deliver_policy = "by_start_sequence"
            var opt_start_seq: UInt64
            var ack_policy = "none"
            var replay_policy = "instant"
            var inactive_threshold: Int64
            var mem_storage = true
        }
        struct Request: Encodable {
            var stream_name: String
            var config: Config
        }
        struct Created: Decodable { var name: String }
        try jetStream.checkName(stream)
        let request = Request(stream_name: stream, config: Config(opt_start_seq: nextSequence, inactive_threshold: Self.inactiveThresholdNs))
        let reply = try await jetStream.connection.request(
            "$JS.API.CONSUMER.CREATE.\(stream)", payload: Array(JSONEncoder().encode(request)), timeoutMs: jetStream.timeoutMs)
        let created: Created = try JetStream.decode(reply.payload, call: "create a consumer on \(stream)")
        consumer = created.name
        nextConsumerSequence = 1
    }

    /// The stream and consumer sequences in a delivered message's `$JS.ACK.<stream>.<consumer>.
    /// <delivered>.<stream seq>.<consumer seq>.<time>.<pending>` reply (or the 12-token form of
    /// newer servers); nil when it is not one.
    static func ackMetadata(_ reply: String?) -> (streamSequence: UInt64, consumerSequence: UInt64)? {
        guard let reply else { return nil }
        let tokens = reply.split(separator: ".", omittingEmptySubsequences: false)
        guard tokens.count >= 9, tokens[0] == "$JS", tokens[1] == "ACK" else { return nil }
        let offset = tokens.count == 9 ? 0 : (tokens.count >= 11 ? 2 : -1)
        guard offset >= 0, let stream = UInt64(tokens[5 + offset]), let consumer = UInt64(tokens[6 + offset]) else { return nil }
        return (stream, consumer)
    }
}
