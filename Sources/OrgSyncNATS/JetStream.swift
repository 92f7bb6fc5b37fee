#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A stream's configuration, as JetStream (nats-server 2.9) takes it. Only the fields orgsync
/// sets; the server fills the rest with its defaults.
public struct JetStreamStreamConfig: Sendable, Hashable, Codable {
    public var name: String
    public var subjects: [String]
    /// `file` or `memory`.
    public var storage: String
    public var replicas: Int
    /// Messages kept per subject (-1: no limit); a KV bucket's history.
    public var maxMessagesPerSubject: Int64
    /// How long a `Nats-Msg-Id` is remembered for deduplication, ns.
    public var duplicateWindowNs: Int64?
    public var allowDirect: Bool
    public var denyDelete: Bool
    /// `old` (drop the oldest at a limit) or `new` (refuse the publish).
    public var discard: String
    /// Whether a `Nats-Rollup` header may purge a subject's history (KV purge).
    public var allowRollupHeaders: Bool
    /// How long a message is kept, ns (nil or 0: for ever); the server removes older ones. A KV
    /// bucket's TTL: a key not written again within it has no value any more.
    public var maxAgeNs: Int64?

    enum CodingKeys: String, CodingKey {
        case name, subjects, storage, replicas = "num_replicas", maxMessagesPerSubject = "max_msgs_per_subject"
        case duplicateWindowNs = "duplicate_window", allowDirect = "allow_direct", denyDelete = "deny_delete", discard
        case allowRollupHeaders = "allow_rollup_hdrs", maxAgeNs = "max_age"
    }

    public init(name: String, subjects: [String], storage: String = "file", replicas: Int = 1, maxMessagesPerSubject: Int64 = -1,
                duplicateWindowNs: Int64? = nil, allowDirect: Bool = false, denyDelete: Bool = false, discard: String = "old",
                allowRollupHeaders: Bool = false, maxAgeNs: Int64? = nil) {
        self.maxAgeNs = maxAgeNs
        self.name = name
        self.subjects = subjects
        self.storage = storage
        self.replicas = replicas
        self.maxMessagesPerSubject = maxMessagesPerSubject
        self.duplicateWindowNs = duplicateWindowNs
        self.allowDirect = allowDirect
        self.denyDelete = denyDelete
        self.discard = discard
        self.allowRollupHeaders = allowRollupHeaders
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        subjects = try c.decodeIfPresent([String].self, forKey: .subjects) ?? []
        storage = try c.decodeIfPresent(String.self, forKey: .storage) ?? "file"
        replicas = try c.decodeIfPresent(Int.self, forKey: .replicas) ?? 1
        maxMessagesPerSubject = try c.decodeIfPresent(Int64.self, forKey: .maxMessagesPerSubject) ?? -1
        duplicateWindowNs = try c.decodeIfPresent(Int64.self, forKey: .duplicateWindowNs)
        allowDirect = try c.decodeIfPresent(Bool.self, forKey: .allowDirect) ?? false
        denyDelete = try c.decodeIfPresent(Bool.self, forKey: .denyDelete) ?? false
        discard = try c.decodeIfPresent(String.self, forKey: .discard) ?? "old"
        allowRollupHeaders = try c.decodeIfPresent(Bool.self, forKey: .allowRollupHeaders) ?? false
        maxAgeNs = try c.decodeIfPresent(Int64.self, forKey: .maxAgeNs)
    }
}

/// A stream as the server describes it.
public struct JetStreamStreamInfo: Sendable, Hashable, Decodable {
    public var config: JetStreamStreamConfig
    public var state: State
    /// Where the stream's replicas are; absent from servers that do not say.
    public var cluster: Cluster?

    public struct Cluster: Sendable, Hashable, Decodable {
        /// The server leading the stream's replicas; empty or absent while they have none (an
        /// election, or too few replicas up).
        public var leader: String?
        /// The other replicas as the leader sees them; absent from servers that do not say.
        public var replicas: [Replica]?
    }

    /// A replica that is not the leader. Every field may be absent (an older or another server).
    public struct Replica: Sendable, Hashable, Decodable {
        public var name: String?
        /// Caught up with the leader.
        public var current: Bool?
        /// Not reachable.
        public var offline: Bool?
    }

    public struct State: Sendable, Hashable, Decodable {
        public var messages: UInt64
        public var bytes: UInt64
        public var firstSequence: UInt64
        public var lastSequence: UInt64
        /// Messages per subject, when the request asked with a subjects filter.
        public var subjects: [String: UInt64]?

        enum CodingKeys: String, CodingKey {
            case messages, bytes, firstSequence = "first_seq", lastSequence = "last_seq", subjects
        }
    }
}

/// JetStream's acknowledgement of a stored message.
public struct JetStreamPubAck: Sendable, Hashable, Decodable {
    public var stream: String
    public var sequence: UInt64
    /// The message id was seen within the duplicate window: nothing was stored, `sequence` is
    /// the first copy's.
    public var duplicate: Bool

    enum CodingKeys: String, CodingKey { case stream, sequence = "seq", duplicate }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        stream = try c.decode(String.self, forKey: .stream)
        sequence = try c.decode(UInt64.self, forKey: .sequence)
        duplicate = try c.decodeIfPresent(Bool.self, forKey: .duplicate) ?? false
    }
}

/// A message read back from a stream.
public struct JetStreamStoredMessage: Sendable, Hashable {
    public var subject: String
    public var sequence: UInt64
    public var headers: NATSHeaders?
    public var payload: [UInt8]
}

/// JetStream refused a call: its `err_code` is the stable reason (10071 wrong last sequence,
/// 10059 stream not found, 10037 no message found, 10058 stream name in use ...).
public struct JetStreamAPIError: Error, Sendable, Hashable, CustomStringConvertible, Decodable {
    public var code: Int
    public var errorCode: Int
    public var text: String

    enum CodingKeys: String, CodingKey { case code, errorCode = "err_code", text = "description" }

    public static let wrongLastSequence = 10071
    public static let streamNotFound = 10059
    public static let messageNotFound = 10037

    public var description: String { "JetStream error \(errorCode) (\(code)): \(text)" }
}

/// A stream's description answered by a replica while the replicas had no leader (nats-server
/// lets every replica answer then, each with its own, possibly stale, state): not used.
public struct JetStreamNoLeader: Error, Sendable, Hashable, CustomStringConvertible {
    public var stream: String
    public var description: String { "JetStream stream \(stream) has no leader now (its replicas are electing one or too few are up)" }
}

/// The answer to a JetStream call that was not JSON of the expected shape.
public struct JetStreamResponseError: Error, Sendable, Hashable, CustomStringConvertible {
    public var call: String
    public var problem: String
    public var description: String { "JetStream \(call): \(problem)" }
}

/// JetStream over a ``NATSConnection``: streams, publishing with an acknowledgement, reading a
/// stored message. Every call is a request to `$JS.API.…` with a bound.
public struct JetStream: Sendable {
    public let connection: NATSConnection
    public let timeoutMs: Int

    public init(connection: NATSConnection, timeoutMs: Int = 5_000) {
        self.connection = connection
        self.timeoutMs = timeoutMs
    }

    /// Creates the stream, or returns it when one with the same configuration exists.
    public func createStream(_ config: JetStreamStreamConfig) async throws -> JetStreamStreamInfo {
        try checkName(config.name)
        return try await call("STREAM.CREATE.\(config.name)", body: Array(JSONEncoder().encode(config)))
    }

    /// Changes an existing stream's configuration: the whole of it (what is left out takes the
    /// server's default; JetStream refuses changes it cannot make, such as the storage).
    public func updateStream(_ config: JetStreamStreamConfig) async throws -> JetStreamStreamInfo {
        try checkName(config.name)
        return try await call("STREAM.UPDATE.\(config.name)", body: Array(JSONEncoder().encode(config)))
    }

    /// The stream's description, from its leader.
    ///
    /// - Throws: ``JetStreamNoLeader`` when the answer came from a replica while the replicas
    ///   have no leader: then each of them answers with its own state, which may be behind (one
    ///   whose store was lost answers an empty stream).
    public func streamInfo(_ name: String) async throws -> JetStreamStreamInfo {
        try checkName(name)
        return try Self.fromLeader(try await call("STREAM.INFO.\(name)", body: []), stream: name)
    }

    /// The stream's description with the subjects that hold messages and matching `filter`
    /// (`state.subjects`), from its leader (as ``streamInfo(_:)``).
    public func streamInfo(_ name: String, subjectsFilter filter: String) async throws -> JetStreamStreamInfo {
        try checkName(name)
        return try Self.fromLeader(
            try await call("STREAM.INFO.\(name)", body: Array(JSONEncoder().encode(["subjects_filter": filter]))), stream: name)
    }

    static func fromLeader(_ info: JetStreamStreamInfo, stream: String) throws -> JetStreamStreamInfo {
        if let cluster = info.cluster, (cluster.leader ?? "").isEmpty { throw JetStreamNoLeader(stream: stream) }
        return info
    }

    public func deleteStream(_ name: String) async throws {
        try checkName(name)
        let _: Success = try await call("STREAM.DELETE.\(name)", body: [])
    }

    /// Publishes and waits for the stream's acknowledgement. `messageID` makes a retry safe
    /// (a repeat within the duplicate window is acknowledged, not stored); the expectations fail
    /// the publish with error 10071 when the stream (or the subject) has moved on.
    public func publish(
        _ subject: String, payload: [UInt8], messageID: String? = nil, expectedLastSequence: UInt64? = nil,
        expectedLastSubjectSequence: UInt64? = nil, headers extra: [NATSHeaders.Field] = []
    ) async throws -> JetStreamPubAck {
        var fields = extra
        if let messageID { fields.append(.init("Nats-Msg-Id", messageID)) }
        if let expectedLastSequence { fields.append(.init("Nats-Expected-Last-Sequence", String(expectedLastSequence))) }
        if let expectedLastSubjectSequence { fields.append(.init("Nats-Expected-Last-Subject-Sequence", String(expectedLastSubjectSequence))) }
        let reply = try await connection.request(
            subject, payload: payload, headers: fields.isEmpty ? nil : NATSHeaders(fields), timeoutMs: timeoutMs)
        return try Self.decode(reply.payload, call: "publish to \(subject)")
    }

    /// Removes every message of `stream` before `sequence` (`STREAM.PURGE` with `seq`); how many
    /// went. Purging to a sequence already passed removes nothing.
    public func purge(stream: String, before sequence: UInt64) async throws -> UInt64 {
        try checkName(stream)
        let response: Purged = try await call("STREAM.PURGE.\(stream)", body: Array(JSONEncoder().encode(["seq": sequence])))
        return response.purged
    }

    private struct Purged: Decodable { var purged: UInt64 }

    /// The message stored at `sequence` in `stream`.
    public func message(stream: String, sequence: UInt64) async throws -> JetStreamStoredMessage {
        try checkName(stream)
        let response: MessageResponse = try await call(
            "STREAM.MSG.GET.\(stream)", body: Array(JSONEncoder().encode(["seq": sequence])))
        return try Self.stored(response, call: "message \(sequence) of \(stream)")
    }

    /// The last message on `subject` in `stream` as the stream's leader has it (a direct get may
    /// be answered by a replica that is behind); nil when there is none.
    public func lastMessageFromLeader(stream: String, subject: String) async throws -> JetStreamStoredMessage? {
        try checkName(stream)
        do {
            let response: MessageResponse = try await call(
                "STREAM.MSG.GET.\(stream)", body: Array(JSONEncoder().encode(["last_by_subj": subject])))
            return try Self.stored(response, call: "last message on \(subject) of \(stream)")
        } catch let error as JetStreamAPIError where error.errorCode == JetStreamAPIError.messageNotFound {
            return nil
        }
    }

    private static func stored(_ response: MessageResponse, call: String) throws -> JetStreamStoredMessage {
        let stored = response.message
        guard let payload = Self.base64(stored.data ?? ""), let headerBytes = Self.base64(stored.hdrs ?? "") else {
            throw JetStreamResponseError(call: call, problem: "data or headers are not base64")
        }
        return JetStreamStoredMessage(
            subject: stored.subject, sequence: stored.seq,
            headers: headerBytes.isEmpty ? nil : try NATSHeaders.parse(headerBytes[...]), payload: payload)
    }

    /// The last message on `subject` in `stream`, read by direct get (the stream needs
    /// `allow_direct`); nil when there is none.
    public func lastMessage(stream: String, subject: String) async throws -> JetStreamStoredMessage? {
        try checkName(stream)
        let reply = try await connection.request("$JS.API.DIRECT.GET.\(stream).\(subject)", timeoutMs: timeoutMs)
        if reply.status == 404 { return nil }
        if let status = reply.status {
            throw JetStreamResponseError(call: "direct get of \(subject)", problem: "status \(status) \(reply.headers?.statusDescription ?? "")")
        }
        guard let headers = reply.headers, let sequence = headers["Nats-Sequence"].flatMap(UInt64.init),
              let storedSubject = headers["Nats-Subject"]
        else {
            throw JetStreamResponseError(call: "direct get of \(subject)", problem: "the answer lacks Nats-Sequence or Nats-Subject")
        }
        return JetStreamStoredMessage(subject: storedSubject, sequence: sequence, headers: headers, payload: reply.payload)
    }

    // MARK: - Calls

    private struct Success: Decodable { var success: Bool }

    private struct MessageResponse: Decodable {
        var message: Stored
        struct Stored: Decodable {
            var subject: String
            var seq: UInt64
            var hdrs: String?
            var data: String?
        }
    }

    private func call<Response: Decodable>(_ api: String, body: [UInt8]) async throws -> Response {
        let reply = try await connection.request("$JS.API." + api, payload: body, timeoutMs: timeoutMs)
        return try Self.decode(reply.payload, call: api)
    }

    /// A JetStream answer, read in one pass: its `error` when it has one (a failed publish also
    /// carries `stream` and `seq`, so the error goes first), else the response itself.
    private struct Envelope<Response: Decodable>: Decodable {
        var result: Result<Response, JetStreamAPIError>

        enum CodingKeys: String, CodingKey { case error }

        init(from decoder: any Decoder) throws {
            if let error = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(JetStreamAPIError.self, forKey: .error) {
                result = .failure(error)
            } else {
                result = .success(try Response(from: decoder))
            }
        }
    }

    static func decode<Response: Decodable>(_ payload: [UInt8], call: String) throws -> Response {
        let envelope: Envelope<Response>
        do {
            envelope = try JSONDecoder().decode(Envelope<Response>.self, from: Data(payload))
        } catch {
            throw JetStreamResponseError(call: call, problem: "the answer is not what JetStream sends (\(payload.count) bytes)")
        }
        return try envelope.result.get()
    }

    static func base64(_ text: String) -> [UInt8]? {
        text.isEmpty ? [] : Data(base64Encoded: text).map(Array.init)
    }

    /// Stream names: non-empty, at most 255 bytes, none of `. * >`, whitespace or path separators.
    func checkName(_ name: String) throws {
        guard !name.isEmpty, name.utf8.count <= 255,
              !name.utf8.contains(where: { $0 <= 32 || $0 == 127 || ".*>/\\".utf8.contains($0) })
        else { throw NATSError.invalidSubject(name) }
    }
}
