import OrgSyncBroker
import OrgSyncCore
import OrgSyncLog
import OrgSyncNATS
import OrgSyncPluginAPI
import Synchronization

/// A link's view of a cluster stream: a ``JetStreamReader`` from the message holding the link's
/// offset, the appends it delivers decoded into entries and kept until the link has read them.
/// A read at another offset than the next one finds its message again (a binary search over the
/// stream). Waiting for entries is a pull that the server answers as soon as one append arrives.
///
/// One link reads it at a time (its supervisor reads, or waits, never both at once).
public actor JetStreamLinkSource: LinkEntrySource {
    public nonisolated let store: JetStreamStreamStore
    private var reader: JetStreamReader?
    /// Entries delivered and not yet passed, from `bufferStart`.
    private var buffer: [Entry] = []
    private var bufferStart: UInt64 = 0

    /// The most appends one read asks the server for.
    static let readAppendsMax = 64
    /// How long one wait for a new append lasts before it asks again, ms.
    static let waitRoundMs = 1_000

    public init(store: JetStreamStreamStore) { self.store = store }

    public nonisolated var streamName: String { store.name }

    public func lineage() async -> StreamLineage { store.lineage }

    public func read(from offset: Offset, maxCount: Int) async throws -> [Entry] {
        guard maxCount > 0 else { return [] }
        if let entries = buffered(from: offset.rawValue, maxCount: maxCount) { return entries }
        do {
            try await fill(from: offset.rawValue, appendsMax: min(maxCount, Self.readAppendsMax), waitMs: 0)
        } catch BrokerError.streamUnavailable(let stream, let problem) {
            // NATS away or the stream electing a leader: the link waits and reads again.
            throw LinkStoreUnavailable("stream \(stream) is unavailable: \(problem)")
        }
        return buffered(from: offset.rawValue, maxCount: maxCount) ?? []
    }

    public func endOffset() async -> Offset {
        // What the server says; what this source has seen when the server cannot be asked.
        let known = bufferStart + UInt64(buffer.count)
        guard let tail = try? await store.loadTail() else { return Offset(known) }
        return Offset(max(tail.endOffset, known))
    }

    public func checkedEndOffset() async throws -> Offset {
        let known = bufferStart + UInt64(buffer.count)
        do {
            return Offset(max(try await store.loadTail().endOffset, known))
        } catch {
            throw LinkStoreUnavailable("\(error)")
        }
    }

    public func waitForEntries(after offset: Offset) async throws {
        while bufferStart + UInt64(buffer.count) <= offset.rawValue {
            try Task.checkCancellation()
            let end = bufferStart + UInt64(buffer.count)
            // Wait for the append after what is known: the offset itself when nothing is buffered.
            try await fill(from: buffer.isEmpty ? offset.rawValue : end, appendsMax: 1, waitMs: Self.waitRoundMs)
        }
    }

    /// Entries from `offset` already delivered, nil when there are none.
    private func buffered(from offset: UInt64, maxCount: Int) -> [Entry]? {
        guard offset >= bufferStart, offset < bufferStart + UInt64(buffer.count) else { return nil }
        let start = Int(offset - bufferStart)
        buffer.removeFirst(start)
        bufferStart = offset
        let taken = Array(buffer.prefix(maxCount))
        return taken
    }

    /// The sequence to read from for `offset`: the message holding it, or the next one to come
    /// when `offset` is the end. Another broker may append between the two questions (where is
    /// `offset`? where is the end?): a link starting as the stream's first append landed took
    /// offset 0 for "outside the stream [0, 20)" and stopped (`ClusterServeProcessTests`, 3 in
    /// ~10 runs). Then it asks again; only an offset past the end is out of range.
    private func firstSequence(for offset: UInt64) async throws -> UInt64 {
        for _ in 0..<Self.locateAttemptsMax {
            if let sequence = try await store.sequence(holding: offset) { return sequence }
            let tail = try await store.loadTail()
            if offset == tail.endOffset { return tail.lastSequence + 1 }
            guard offset < tail.endOffset else {
                throw LogError.offsetOutOfRange(requested: offset, start: 0, end: tail.endOffset)
            }
        }
        throw BrokerError.streamUnavailable(
            stream: store.name, problem: "offset \(offset) moved between reading where it is and where the stream ends, \(Self.locateAttemptsMax) times")
    }

    /// How many times ``firstSequence(for:)`` asks while appends keep landing in between.
    static let locateAttemptsMax = 8

    /// Reads up to `appendsMax` appends from the one holding `offset` (or the next one to come
    /// when `offset` is the end), waiting up to `waitMs` for the first.
    private func fill(from offset: UInt64, appendsMax: Int, waitMs: Int) async throws {
        let end = bufferStart + UInt64(buffer.count)
        if reader == nil || offset != end {
            // Not where the reader stands: find the append that holds `offset`.
            buffer = []
            reader = JetStreamReader(jetStream: store.jetStream, stream: store.jetStreamName, from: try await firstSequence(for: offset))
            bufferStart = offset  // the holder's first offset once it is read
        }
        guard let reader else { return }
        let messages: [JetStreamStoredMessage]
        do {
            messages = try await reader.next(batch: appendsMax, waitMs: waitMs)
        } catch let error as NATSError {
            throw BrokerError.streamUnavailable(stream: store.name, problem: "NATS: \(error)")
        } catch let error as JetStreamAPIError {
            throw BrokerError.streamUnavailable(stream: store.name, problem: "\(error)")
        }
        for message in messages {
            let append: ClusterAppendMessage
            do {
                append = try ClusterAppendMessage.decode(headers: message.headers, payload: message.payload)
            } catch {
                throw StoredEntryError(stream: store.name, offset: bufferStart + UInt64(buffer.count), problem: "message \(message.sequence): \(error)")
            }
            let expected = bufferStart + UInt64(buffer.count)
            if append.endOffset <= expected { continue }  // wholly before the offset asked for
            if buffer.isEmpty && append.firstOffset <= expected {
                bufferStart = append.firstOffset
            } else if append.firstOffset != expected {
                throw StoredEntryError(
                    stream: store.name, offset: expected,
                    problem: "message \(message.sequence) starts at offset \(append.firstOffset), not \(expected): the stream's offsets have a gap")
            }
            buffer += try append.parsedEntries(stream: store.name)
        }
    }
}

/// Link cursors of a cluster stream in the `orgsync_cursors` key-value bucket, under
/// `<stream>.<link>`: every broker sees the same cursor.
public struct KeyValueCursorStore: LinkCursorStore {
    public let bucket: KeyValueBucket
    public let stream: String

    public init(bucket: KeyValueBucket, stream: String) {
        self.bucket = bucket
        self.stream = stream
    }

    func key(_ link: String) -> String { stream + "." + link }

    public func load(link: String) async throws -> Offset? {
        let found: KeyValueEntry?
        do {
            found = try await bucket.get(key(link))
        } catch {
            throw LinkStoreUnavailable("reading the cursor of link \(link): \(error)")
        }
        guard let entry = found else { return nil }
        guard let text = String(validating: entry.value, as: UTF8.self), let offset = UInt64(text) else {
            throw BrokerError.streamUnavailable(stream: stream, problem: "the cursor of link \(link) in bucket \(bucket.name) is not an offset")
        }
        return Offset(offset)
    }

    public func store(link: String, offset: Offset) async throws {
        try await bucket.put(key(link), Array(String(offset.rawValue).utf8))
    }
}

/// A capture source's view of a cluster stream: its appends on a subject of its own, each fenced
/// on the source's last one (``JetStreamStreamStore/appendFenced(_:source:fence:)``), so two
/// members that run the source at once (around a move of its lease) never both store a change;
/// its hint a cursor (``StreamLogCaptureStream/hintName(source:)``) in the cursor bucket.
///
/// The fence is armed by ``lastAppend(source:)`` (the supervisor reads its position through it)
/// and moved by each append. Unarmed — before that read, or after an append that failed, whose
/// entries may be stored — an append is refused as fenced: the position must be read again
/// first, or a change could be appended twice.
public final class JetStreamCaptureStream: CaptureStream {
    public let store: JetStreamStreamStore
    public let source: String
    private let reader: JetStreamLinkSource
    private let cursors: KeyValueCursorStore
    /// The source's last append in the stream as this member knows it (nil: not read yet).
    private let fence = Mutex<CaptureFence?>(nil)

    public init(store: JetStreamStreamStore, source: String) {
        self.store = store
        self.source = source
        reader = JetStreamLinkSource(store: store)
        cursors = KeyValueCursorStore(bucket: store.cursors, stream: store.name)
    }

    public var streamName: String { store.name }

    /// - Throws: ``CaptureFenced``; `LinkStoreUnavailable` when NATS failed (the append may be
    /// stored: the position read again tells).
    public func append(_ entries: [[UInt8]]) async throws -> AppendResult {
        guard let known = fence.withLock({ $0 }) else {
            throw CaptureFenced(stream: store.name, source: source, problem: "its last append is not known here since an append failed")
        }
        do {
            let (result, next) = try await store.appendFenced(entries, source: source, fence: known)
            fence.withLock { $0 = next }
            return result
        } catch {
            fence.withLock { $0 = nil }
            throw Self.waitable(error)
        }
    }

    /// NATS away or a stream electing its leader: the source waits and reads its position
    /// again (`LinkStoreUnavailable`), rather than stop.
    static func waitable(_ error: any Error) -> any Error {
        if case BrokerError.streamUnavailable(let stream, let problem) = error {
            return LinkStoreUnavailable("stream \(stream) is unavailable: \(problem)")
        }
        return error
    }

    /// The entries of the last message on the source's subject; it arms the fence.
    public func lastAppend(source: String) async throws -> [Entry]? {
        let found: JetStreamStoredMessage?
        do {
            found = try await lastMessage()
        } catch {
            throw Self.waitable(error)
        }
        guard let message = found else {
            fence.withLock { $0 = CaptureFence(lastSequence: 0, verifiedThrough: 0) }
            return nil
        }
        let append: ClusterAppendMessage
        do {
            append = try ClusterAppendMessage.decode(headers: message.headers, payload: message.payload)
        } catch {
            throw StoredEntryError(stream: store.name, offset: 0, problem: "message \(message.sequence) (source \(self.source)'s last append): \(error)")
        }
        let entries = try append.parsedEntries(stream: store.name)
        fence.withLock { $0 = CaptureFence(lastSequence: message.sequence, verifiedThrough: 0) }
        return entries
    }

    private func lastMessage() async throws -> JetStreamStoredMessage? {
        try await store.lastMessage(on: JetStreamStreamStore.captureSubject(for: store.name, source: source))
    }

    public func bounds() async throws -> (start: Offset, end: Offset) {
        do {
            let info = try await store.currentInfo()
            return (Offset(info.startOffset), Offset(info.endOffset))
        } catch {
            throw Self.waitable(error)
        }
    }

    public func read(from offset: Offset, maxCount: Int) async throws -> [Entry] {
        try await reader.read(from: offset, maxCount: maxCount)
    }

    public func loadHint(source: String) async throws -> Offset? {
        try await cursors.load(link: StreamLogCaptureStream.hintName(source: source))
    }

    public func storeHint(source: String, offset: Offset) async throws {
        do {
            try await cursors.store(link: StreamLogCaptureStream.hintName(source: source), offset: offset)
        } catch where !(error is CancellationError) {
            throw LinkStoreUnavailable("storing the position hint of source \(source): \(error)")
        }
    }
}

extension ClusterAppendMessage {
    /// The append's entries, each parsed at its offset; one that is not an entry throws
    /// `StoredEntryError` naming its offset in `stream`.
    func parsedEntries(stream: String) throws -> [Entry] {
        var parsed: [Entry] = []
        parsed.reserveCapacity(entries.count)
        for (index, payload) in entries.enumerated() {
            let offset = firstOffset + UInt64(index)
            do {
                parsed.append(try Entry.parse(payload, offset: Offset(offset)))
            } catch {
                throw StoredEntryError(stream: stream, offset: offset, problem: "\(error)")
            }
        }
        return parsed
    }
}
