#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import OrgSyncBroker
import OrgSyncCore
import OrgSyncLog
import OrgSyncNATS
import OrgSyncPluginAPI
import Synchronization

/// A stream of a cluster: a JetStream stream (file storage, replicated), one message per
/// append (``ClusterAppendMessage``), that every broker of the cluster appends to and reads.
///
/// **Appends are fenced, not forwarded.** Any broker appends to any stream: it publishes the
/// append with the offsets that follow the stream's last message and `Nats-Expected-Last-Sequence`
/// set to that message's sequence, so JetStream stores it only if nothing was stored in between.
/// When another broker got there first the publish fails (10071), this store reads the new tail
/// and tries again. Offsets therefore stay dense and increasing whichever brokers append, with
/// no writer election of our own and no forwarding hop; a broker that is paused or cut off
/// cannot store an append with stale offsets. The price is a retry when two brokers append to
/// one stream at the same instant, and one publish in flight per stream and broker (a second
/// one would be fenced on a sequence only, which another broker's message could also have).
/// Appends without a key that arrive while one is in flight are stored together, as one message
/// (``AppendGroup``): the round trip is shared, not queued for.
///
/// **Idempotency keys** are JetStream's `Nats-Msg-Id`, deduplicated by the stream for the
/// stream's idempotency window on every broker; the stored message carries the entries'
/// fingerprint, so a replay with other entries is refused (``LogError/idempotencyKeyReused(key:)``).
///
/// **Lineage** (the stream id) is kept in the `orgsync_streams` key-value bucket, made once by
/// whichever broker opens the stream first. **Cursors** are in the `orgsync_cursors` bucket.
public final class JetStreamStreamStore: StreamStore {
    public let name: String
    public let jetStream: JetStream
    /// The JetStream stream's name (``jetStreamName(for:)``).
    public let jetStreamName: String
    /// The subject appends are published on.
    public let subject: String
    public let lineage: StreamLineage
    let compressionLevel: Int32?
    let cursors: KeyValueBucket
    let logger: Logger
    /// What the stream keeps (``applyRetention(nowMs:)``).
    public let retention: ClusterRetention
    /// The cluster's other streams: their cursors share the bucket (`<stream>.<link>`), and a
    /// name may begin with this one's and a dot.
    let otherStreams: [String]
    /// The cursors the configuration makes for this stream (links, sources' hints): a key that
    /// could be another stream's is this one's when it names one of these.
    let configuredCursors: Set<String>
    private let chain: AppendChain
    /// The group of unkeyed appends still taking members (``AppendGroup``), if any.
    private let openGroup = Mutex<AppendGroup?>(nil)
    /// ``groupFramedBytesMax()`` as last asked (-1: not yet), so that an append does not wait for
    /// the connection to say; asked again after each group's publish (a reconnect may have
    /// reached a server with another `max_payload`).
    private let knownGroupFramedBytesMax = Atomic<Int>(-1)
    private let closed = Atomic<Bool>(false)
    /// The start offset of the stream's first message and the end offset of its last one, each
    /// with its sequence. A stored message never changes (cluster streams deny deletes and keep
    /// everything), so ``currentInfo()`` — asked for every stream at every metrics tick — costs
    /// one stream-info request while the stream's ends stay where they were, not three.
    private let boundaries = Mutex<Boundaries>(Boundaries())

    private struct Boundaries {
        var start: (sequence: UInt64, offset: UInt64)?
        var end: (sequence: UInt64, offset: UInt64)?
    }

    /// How many times an append is published again after another broker's append took its place.
    public static let contendedAttemptsMax = 64
    /// The highest stream sequence taken from a server (2^63: no stream gets there; a larger
    /// one is a server's mistake, and `+ 1` on it stays in range).
    static let sequenceMax: UInt64 = 1 << 63

    init(name: String, jetStream: JetStream, lineage: StreamLineage, compressionLevel: Int32?, cursors: KeyValueBucket,
         logger: Logger, queuedAppendsMax: Int, retention: ClusterRetention = ClusterRetention(), otherStreams: [String] = [],
         configuredCursors: Set<String> = []) {
        self.name = name
        self.jetStream = jetStream
        self.jetStreamName = Self.jetStreamName(for: name)
        self.subject = Self.subject(for: name)
        self.lineage = lineage
        self.compressionLevel = compressionLevel
        self.cursors = cursors
        self.logger = logger
        self.chain = AppendChain(waitersMax: queuedAppendsMax)
        self.retention = retention
        self.otherStreams = otherStreams
        self.configuredCursors = configuredCursors
    }

    /// `ORGSYNC_` and the stream's name with `.` (which JetStream names may not hold) as `_`.
    public static func jetStreamName(for stream: String) -> String {
        "ORGSYNC_" + String(stream.map { $0 == "." ? "_" : $0 })
    }

    public static func subject(for stream: String) -> String { "orgsync.streams." + stream }

    /// The subject a capture source's appends are published on: one of its own, so that the
    /// stream names the source's last append (``appendFenced(_:source:fence:)``). The source's
    /// name is one token: bytes other than letters, digits and `-` are written `_XX` (hex).
    public static func captureSubject(for stream: String, source: String) -> String {
        var token = ""
        for byte in source.utf8 {
            if (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == UInt8(ascii: "-") {
                token.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                token += (byte < 16 ? "_0" : "_") + String(byte, radix: 16, uppercase: true)
            }
        }
        return captureSubjectPrefix(for: stream) + token
    }

    /// Every capture source's subject of the stream, as the JetStream stream takes them.
    public static func captureSubjects(for stream: String) -> String { captureSubjectPrefix(for: stream) + "*" }

    static func captureSubjectPrefix(for stream: String) -> String { "orgsync.capture." + jetStreamName(for: stream) + "." }

    // MARK: - Appending

    public func append(_ entries: [[UInt8]], idempotencyKey: String?) async throws -> AppendOutcome {
        guard !entries.isEmpty else { throw LogError.emptyAppend }
        if let key = idempotencyKey, !IdempotencyKey.isValid(key) { throw LogError.invalidIdempotencyKey(key) }
        guard !closed.load(ordering: .relaxed) else { throw LogError.closed }
        if idempotencyKey == nil {
            let framedBytes = AppendGroup.framedBytes(entries)
            var bytesMax = knownGroupFramedBytesMax.load(ordering: .relaxed)
            if bytesMax < 0 {
                bytesMax = await groupFramedBytesMax()
                knownGroupFramedBytesMax.store(bytesMax, ordering: .relaxed)
            }
            if entries.count <= AppendGroup.entriesMax, framedBytes <= bytesMax {
                return .appended(try await appendGrouped(entries, framedBytes: framedBytes, framedBytesMax: bytesMax))
            }
        }
        let fingerprint = idempotencyKey.map { _ in EntriesFingerprint(entries: entries) }
        return try await inTurn { try await appendInTurn(entries, on: subject, key: idempotencyKey, fingerprint: fingerprint) }.outcome
    }

    /// Runs `body` with this store's publish turn (one append in flight per stream and broker).
    private func inTurn<Result>(_ body: () async throws -> Result) async throws -> Result {
        try await chain.acquire(stream: name)
        do {
            let result = try await body()
            await chain.release()
            return result
        } catch {
            await chain.release()
            throw error
        }
    }

    /// The most framed bytes a group of appends holds: ``AppendGroup/framedBytesMax``, or half
    /// the server's `max_payload` when that is less (a group must fit in one message with its
    /// headers; an append too large for a group is sent alone, and refused alone if it does not
    /// fit either).
    private func groupFramedBytesMax() async -> Int {
        let payloadMax = await jetStream.connection.serverInfo?.maxPayloadBytes ?? 0
        return min(AppendGroup.framedBytesMax, payloadMax / 2)
    }

    /// An append without a key: joins the group waiting for the publish turn, or starts one —
    /// which then takes the turn, is sealed, published as one message, and answers every member
    /// with its offsets in it (or the group's error: a member is stored with the others or not at
    /// all). The publish runs in a task of its own, so that no one member's cancellation (a
    /// client gone) fails the others.
    private func appendGrouped(_ entries: [[UInt8]], framedBytes: Int, framedBytesMax: Int) async throws -> AppendResult {
        let (group, member) = openGroup.withLock { open -> (AppendGroup, Int?) in
            if let group = open, let member = group.join(entries, framedBytes: framedBytes, framedBytesMax: framedBytesMax) {
                return (group, member)
            }
            let group = AppendGroup(leader: entries, framedBytes: framedBytes)
            open = group
            return (group, nil)
        }
        guard let member else {
            Task { await self.publish(group) }
            return try await group.result(of: 0)
        }
        return try await group.result(of: member)
    }

    private func publish(_ group: AppendGroup) async {
        do {
            let stored = try await inTurn { try await appendInTurn(seal(group), on: subject, key: nil, fingerprint: nil) }
            group.finish(.success(stored.outcome.result.firstOffset))
        } catch {
            _ = seal(group)  // already, unless the turn itself was refused
            group.finish(.failure(error))
        }
        knownGroupFramedBytesMax.store(await groupFramedBytesMax(), ordering: .relaxed)
    }

    /// Closes `group` to new members (the next append starts a group of its own); its entries.
    private func seal(_ group: AppendGroup) -> [[UInt8]] {
        openGroup.withLock { open in
            if open === group { open = nil }
            return group.seal()
        }
    }

    // MARK: - A capture source's appends

    /// Appends a capture source's entries on its own subject, only if the source's last append
    /// in the stream is still `fence.lastSequence` (0: none): two members running one source
    /// (around a move of its lease) cannot both store a change.
    ///
    /// The check rides on the stream-wide fence every append has: the publish carries
    /// `Nats-Expected-Last-Sequence` (the stream's last message, known as of
    /// `fence.verifiedThrough`), which JetStream checks as part of storing it (it orders a
    /// replicated stream's writes). When the stream moved on since the fence was last verified,
    /// the source subject's last message is asked of the stream's leader first: still
    /// `fence.lastSequence`, and the publish — stored only if nothing came after the tail read
    /// before that question — cannot follow another writer's append for the source. (JetStream's
    /// own `Nats-Expected-Last-Subject-Sequence` is not used: nats-server 2.9 checks it before
    /// replicating, not when storing, so concurrent publishes could both pass it.)
    ///
    /// - Returns: the offsets, and the fence for the source's next append.
    /// - Throws: ``CaptureFenced`` when another writer appended for the source; the store's
    ///   errors otherwise (``BrokerError/streamUnavailable(stream:problem:)``: stored or not
    ///   unknown after a NATS failure).
    public func appendFenced(_ entries: [[UInt8]], source: String, fence: CaptureFence) async throws -> (AppendResult, CaptureFence) {
        guard !entries.isEmpty else { throw LogError.emptyAppend }
        guard !closed.load(ordering: .relaxed) else { throw LogError.closed }
        let captureSubject = Self.captureSubject(for: name, source: source)
        var fence = fence
        let stored = try await inTurn {
            try await appendInTurn(entries, on: captureSubject, key: nil, fingerprint: nil) { tail in
                // The stream moved since the fence was verified: is the source's last append still it?
                guard fence.verifiedThrough != tail.lastSequence else { return }
                let last = try await self.lastMessage(on: captureSubject)?.sequence ?? 0
                guard last == fence.lastSequence else {
                    throw CaptureFenced(stream: self.name, source: source, problem: "its last append is message \(last), not \(fence.lastSequence)")
                }
                fence.verifiedThrough = tail.lastSequence
            }
        }
        return (stored.outcome.result, CaptureFence(lastSequence: stored.sequence, verifiedThrough: stored.sequence))
    }

    /// The last message on `subject`, from the stream's leader (a replica may be behind).
    func lastMessage(on subject: String) async throws -> JetStreamStoredMessage? {
        do {
            return try await jetStream.lastMessageFromLeader(stream: jetStreamName, subject: subject)
        } catch where !(error is CancellationError) {
            throw BrokerError.streamUnavailable(stream: name, problem: "reading the last message on \(subject): \(error)")
        }
    }

    /// One append, with this store's publish turn held: publish on `subject` after the known tail;
    /// on a fence failure read the tail and publish again. `beforePublish` is given each tail an
    /// attempt publishes after (a capture source's fence is checked there). Returns the outcome
    /// and the sequence of the message that holds it.
    private func appendInTurn(
        _ entries: [[UInt8]], on subject: String, key: String?, fingerprint: EntriesFingerprint?,
        beforePublish: (AppendTail) async throws -> Void = { _ in }
    ) async throws -> (outcome: AppendOutcome, sequence: UInt64) {
        for _ in 0..<Self.contendedAttemptsMax {
            let tail = try await chain.knownTail { try await self.loadTail() }
            try await beforePublish(tail)
            let message = ClusterAppendMessage(
                firstOffset: tail.endOffset, timestampMs: Int64(Date().timeIntervalSince1970 * 1000), entries: entries,
                fingerprint: fingerprint)
            let (headers, payload) = try message.encoded(compressionLevel: compressionLevel)
            let ack: JetStreamPubAck
            do {
                ack = try await jetStream.publish(
                    subject, payload: payload, messageID: key, expectedLastSequence: tail.lastSequence, headers: headers)
            } catch let error as JetStreamAPIError where error.errorCode == JetStreamAPIError.wrongLastSequence {
                await chain.forgetTail()  // another broker appended: read the tail again
                continue
            } catch NATSError.payloadTooLarge(let bytes, let maxBytes) {
                // Refused before it was sent: nothing is stored.
                throw BrokerError.appendTooLarge(stream: name, bytes: bytes, maxBytes: maxBytes)
            } catch let error as NATSError {
                await chain.forgetTail()  // stored or not: unknown
                throw BrokerError.streamUnavailable(stream: name, problem: Self.unknownOutcome(error, keyed: key != nil))
            } catch let error as JetStreamAPIError {
                throw BrokerError.streamUnavailable(stream: name, problem: "JetStream refused the append: \(error)")
            }
            guard ack.stream == jetStreamName else {
                await chain.forgetTail()
                throw BrokerError.streamUnavailable(stream: name, problem: "JetStream acknowledged into stream \(ack.stream), not \(jetStreamName)")
            }
            if ack.duplicate, let key, let fingerprint {
                // Not stored: the key's first append is at `ack.sequence`. Its answer is ours.
                return (.replayed(try await replay(key: key, fingerprint: fingerprint, sequence: ack.sequence)), ack.sequence)
            }
            guard ack.sequence == tail.lastSequence + 1 else {
                await chain.forgetTail()
                throw BrokerError.streamUnavailable(
                    stream: name, problem: "JetStream stored the append at sequence \(ack.sequence), expected \(tail.lastSequence + 1)")
            }
            await chain.advance(to: AppendTail(lastSequence: ack.sequence, endOffset: message.endOffset))
            return (.appended(AppendResult(firstOffset: message.firstOffset, lastOffset: message.endOffset - 1)), ack.sequence)
        }
        throw BrokerError.streamUnavailable(
            stream: name, problem: "\(Self.contendedAttemptsMax) appends of other brokers came first; try again")
    }

    static func unknownOutcome(_ error: NATSError, keyed: Bool) -> String {
        "NATS failed during the append (\(error)); it may or may not be stored"
            + (keyed ? ": retry with the same Idempotency-Key" : ": an Idempotency-Key makes such a retry safe")
    }

    /// The answer of the key's first append, stored at `sequence`.
    private func replay(key: String, fingerprint: EntriesFingerprint, sequence: UInt64) async throws -> AppendResult {
        guard sequence > 0 else { throw LogError.idempotencyKeyInFlight(key: key) }
        // JetStream remembers a key for the idempotency window; retention may have removed its message.
        if sequence < (try await streamInfo().state.firstSequence) { throw LogError.idempotencyKeyAppendRemoved(key: key) }
        let stored = try await storedAppend(at: sequence, decodingEntries: false)
        guard stored.fingerprint == fingerprint else { throw LogError.idempotencyKeyReused(key: key) }
        return AppendResult(firstOffset: stored.first, lastOffset: stored.first + UInt64(stored.count) - 1)
    }

    /// The stream's last message and the offset after it, read from the server.
    func loadTail() async throws -> AppendTail {
        let info = try await streamInfo()
        guard info.state.lastSequence > 0 else { return AppendTail(lastSequence: 0, endOffset: 0) }
        guard info.state.lastSequence < Self.sequenceMax else {
            throw BrokerError.streamUnavailable(stream: name, problem: "JetStream reports last sequence \(info.state.lastSequence), past any stream's")
        }
        guard info.state.messages > 0 else {
            throw BrokerError.streamUnavailable(
                stream: name, problem: "JetStream stream \(jetStreamName) was emptied outside orgsync (last sequence \(info.state.lastSequence), no messages): its next offset is unknown")
        }
        let last = try await storedAppend(at: info.state.lastSequence, decodingEntries: false)
        return AppendTail(lastSequence: info.state.lastSequence, endOffset: last.first + UInt64(last.count))
    }

    // MARK: - Reading

    /// A stored append's offsets (and fingerprint), from the message at `sequence`.
    func storedAppend(at sequence: UInt64, decodingEntries: Bool) async throws -> (first: UInt64, count: Int, fingerprint: EntriesFingerprint?) {
        let message = try await storedMessage(at: sequence)
        do {
            if decodingEntries {
                let decoded = try ClusterAppendMessage.decode(headers: message.headers, payload: message.payload)
                return (decoded.firstOffset, decoded.entries.count, decoded.fingerprint)
            }
            let (first, count) = try ClusterAppendMessage.offsets(of: message.headers)
            let fingerprint = message.headers?[ClusterAppendMessage.Header.fingerprint].flatMap(ClusterAppendMessage.fingerprint)
            return (first, count, fingerprint)
        } catch {
            throw BrokerError.streamUnavailable(stream: name, problem: "message \(sequence) of \(jetStreamName): \(error)")
        }
    }

    /// The message at `sequence`, as the server has it.
    ///
    /// - Throws: ``BrokerError/streamUnavailable(stream:problem:)`` when it cannot be read (NATS
    ///   away, JetStream refusing, an answer that is not one): 503, not 500 (the harness's cluster
    ///   scenario saw ten 500s while a nats-server restarted).
    func storedMessage(at sequence: UInt64) async throws -> JetStreamStoredMessage {
        do {
            return try await jetStream.message(stream: jetStreamName, sequence: sequence)
        } catch where !(error is CancellationError) {
            throw BrokerError.streamUnavailable(stream: name, problem: "reading message \(sequence) of \(jetStreamName): \(error)")
        }
    }

    /// The sequence of the message holding `offset`: a binary search over the stream's
    /// messages (offsets increase with sequences). Nil when `offset` is at or past the end.
    ///
    /// - Throws: ``LogError/offsetOutOfRange(requested:start:end:)`` for an offset before the
    ///   stream's first message.
    func sequence(holding offset: UInt64) async throws -> UInt64? {
        let state = try await streamInfo().state
        guard state.messages > 0, state.firstSequence <= state.lastSequence else { return nil }
        guard state.lastSequence < Self.sequenceMax else {
            throw BrokerError.streamUnavailable(stream: name, problem: "JetStream reports last sequence \(state.lastSequence), past any stream's")
        }
        var low = state.firstSequence
        var high = state.lastSequence
        let first = try await storedAppend(at: low, decodingEntries: false)
        guard offset >= first.first else {
            let last = try await storedAppend(at: high, decodingEntries: false)
            throw LogError.offsetOutOfRange(requested: offset, start: first.first, end: last.first + UInt64(last.count))
        }
        while low < high {
            let middle = low + (high - low + 1) / 2
            if try await storedAppend(at: middle, decodingEntries: false).first <= offset { low = middle } else { high = middle - 1 }
        }
        let holder = try await storedAppend(at: low, decodingEntries: false)
        return offset < holder.first + UInt64(holder.count) ? low : nil
    }

    func streamInfo() async throws -> JetStreamStreamInfo {
        do {
            return try await jetStream.streamInfo(jetStreamName)
        } catch let error as NATSError {
            throw BrokerError.streamUnavailable(stream: name, problem: "NATS: \(error)")
        } catch let error as JetStreamAPIError {
            throw BrokerError.streamUnavailable(stream: name, problem: "\(error)")
        } catch let error as JetStreamNoLeader {
            // The harness's cluster scenario: a replica whose store was deleted answered an
            // empty stream while the others elected a leader, and a link took its cursor for
            // "beyond the end".
            throw BrokerError.streamUnavailable(stream: name, problem: "\(error)")
        }
    }

    public func currentInfo() async throws -> StreamInfo {
        let state = try await streamInfo().state
        guard state.lastSequence > 0 else {
            return StreamInfo(name: name, startOffset: 0, endOffset: 0, segmentCount: 0, storedBytes: 0, rawBytes: 0)
        }
        guard state.messages > 0, state.lastSequence < Self.sequenceMax, state.firstSequence <= state.lastSequence else {
            _ = try await loadTail()  // throws what is wrong with the stream's state
            throw BrokerError.streamUnavailable(stream: name, problem: "JetStream reports an inconsistent state for \(jetStreamName)")
        }
        let known = boundaries.withLock { $0 }
        let start: UInt64
        if let cached = known.start, cached.sequence == state.firstSequence {
            start = cached.offset
        } else {
            start = try await storedAppend(at: state.firstSequence, decodingEntries: false).first
            boundaries.withLock { $0.start = (state.firstSequence, start) }
        }
        let end: UInt64
        if let cached = known.end, cached.sequence == state.lastSequence {
            end = cached.offset
        } else {
            let last = try await storedAppend(at: state.lastSequence, decodingEntries: false)
            end = last.first + UInt64(last.count)
            boundaries.withLock { $0.end = (state.lastSequence, end) }
        }
        return StreamInfo(
            name: name, startOffset: start, endOffset: end, segmentCount: 0,
            storedBytes: Int64(clamping: state.bytes), rawBytes: Int64(clamping: state.bytes))
    }

    public func linkSource() -> any LinkEntrySource { JetStreamLinkSource(store: self) }

    public func linkCursorStore() -> any LinkCursorStore { KeyValueCursorStore(bucket: cursors, stream: name) }

    public func captureStream(source: String) -> any CaptureStream { JetStreamCaptureStream(store: self, source: source) }

    public func close() async {
        closed.store(true, ordering: .relaxed)
        await chain.drain()
    }
}

/// What a capture source's next append is fenced on (``JetStreamStreamStore/appendFenced(_:source:fence:)``):
/// the sequence of its last message on its subject (0: none), and the stream's last sequence at
/// which that was last known true.
public struct CaptureFence: Sendable, Hashable {
    public var lastSequence: UInt64
    public var verifiedThrough: UInt64

    public init(lastSequence: UInt64, verifiedThrough: UInt64) {
        self.lastSequence = lastSequence
        self.verifiedThrough = verifiedThrough
    }
}

/// The last message of a stream and the offset after it.
struct AppendTail: Sendable, Hashable {
    var lastSequence: UInt64
    var endOffset: UInt64
}

/// One store's publish turn (one append in flight per stream and broker, in arrival order) and
/// the tail it knows.
actor AppendChain {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var tail: AppendTail?
    private let waitersMax: Int

    init(waitersMax: Int) { self.waitersMax = waitersMax }

    /// Waits for this store's turn to publish.
    ///
    /// - Throws: ``BrokerError/streamUnavailable(stream:problem:)`` when `waitersMax` appends
    ///   already wait.
    func acquire(stream: String) async throws {
        guard busy else {
            busy = true
            return
        }
        guard waiters.count < waitersMax else {
            throw BrokerError.streamUnavailable(stream: stream, problem: "\(waitersMax) appends are already waiting for JetStream")
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
    }

    /// Returns once no append is in flight (the last one answered).
    func drain() async {
        guard busy else { return }
        await withCheckedContinuation { waiters.append($0) }
        release()
    }

    func knownTail(load: @Sendable () async throws -> AppendTail) async throws -> AppendTail {
        if let tail { return tail }
        let loaded = try await load()
        tail = loaded
        return loaded
    }

    func advance(to tail: AppendTail) { self.tail = tail }

    func forgetTail() { tail = nil }
}
