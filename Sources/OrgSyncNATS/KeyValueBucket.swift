/// One value of a key-value bucket, at a revision (the stream sequence that wrote it).
public struct KeyValueEntry: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]
    public var revision: UInt64

    public init(key: String, value: [UInt8], revision: UInt64) {
        self.key = key
        self.value = value
        self.revision = revision
    }
}

/// Why a key-value write was refused.
public enum KeyValueError: Error, Sendable, Hashable, CustomStringConvertible {
    /// `create` of a key that has a value.
    case keyExists(String)
    /// `update` (or a guarded delete) of a key whose latest revision is not the one given.
    case wrongRevision(key: String, expected: UInt64)
    case invalidKey(String)
    case invalidBucket(String)
    /// ``KeyValueBucket/keys()`` of a bucket with more keys than it lists.
    case tooManyKeys(bucket: String, count: Int)

    public var description: String {
        switch self {
        case .keyExists(let key): "key \(key) exists"
        case .wrongRevision(let key, let expected): "key \(key) is not at revision \(expected) any more"
        case .invalidKey(let key): "invalid key \"\(key.prefix(80))\" (letters, digits, - / _ = . not at either end)"
        case .invalidBucket(let bucket): "invalid bucket name \"\(bucket.prefix(80))\" (letters, digits, - _)"
        case .tooManyKeys(let bucket, let count): "bucket \(bucket) holds \(count) keys, more than \(KeyValueBucket.keysMax) listed at most"
        }
    }
}

/// A JetStream key-value bucket as nats-server 2.9 and its clients lay it out: the stream
/// `KV_<bucket>` over `$KV.<bucket>.>`, one message a write, the latest per key its value; a
/// delete is a message with `KV-Operation: DEL`. Writes can be made conditional on a key's
/// revision, which is what leases and fencing are built on.
public struct KeyValueBucket: Sendable {
    public let jetStream: JetStream
    public let name: String

    public var streamName: String { "KV_" + name }
    var subjectPrefix: String { "$KV.\(name)." }

    static let operationHeader = "KV-Operation"
    static let historyMax = 64

    private init(jetStream: JetStream, name: String) {
        self.jetStream = jetStream
        self.name = name
    }

    /// Creates the bucket (or returns it when it exists with the same settings). `history`:
    /// values kept per key (1...64). `ttlMs`: a key not written again within it loses its value
    /// (the server's clock decides; nil: values stay).
    public static func create(
        _ jetStream: JetStream, name: String, history: Int = 1, replicas: Int = 1, ttlMs: Int? = nil
    ) async throws -> KeyValueBucket {
        guard isValidBucketName(name) else { throw KeyValueError.invalidBucket(name) }
        let bucket = KeyValueBucket(jetStream: jetStream, name: name)
        let ttlNs: Int64? = ttlMs.map { ms in
            let (ns, overflow) = Int64(clamping: ms).multipliedReportingOverflow(by: 1_000_000)
            return overflow ? .max : ns
        }
        // The duplicate window may not exceed the TTL.
        let windowNs = min(120_000_000_000, ttlNs ?? .max)
        _ = try await jetStream.createStream(JetStreamStreamConfig(
            name: bucket.streamName, subjects: ["$KV.\(name).>"], replicas: replicas,
            maxMessagesPerSubject: Int64(min(max(history, 1), historyMax)), duplicateWindowNs: windowNs, allowDirect: true,
            denyDelete: true, discard: "new", allowRollupHeaders: true, maxAgeNs: ttlNs))
        return bucket
    }

    /// Keys listed at most by ``keys()``.
    public static let keysMax = 10_000

    /// The keys that have a value now (deleted and expired ones left out), sorted.
    ///
    /// - Throws: ``KeyValueError/tooManyKeys(bucket:count:)`` past ``keysMax``.
    public func keys() async throws -> [String] {
        let info = try await jetStream.streamInfo(streamName, subjectsFilter: subjectPrefix + ">")
        let subjects = info.state.subjects ?? [:]
        guard subjects.count <= Self.keysMax else { throw KeyValueError.tooManyKeys(bucket: name, count: subjects.count) }
        var keys: [String] = []
        for subject in subjects.keys.sorted() where subject.hasPrefix(subjectPrefix) {
            let key = String(subject.dropFirst(subjectPrefix.count))
            guard Self.isValidKey(key) else { continue }  // not written through this API
            if try await get(key) != nil { keys.append(key) }
        }
        return keys
    }

    /// An existing bucket; throws JetStream's stream-not-found error when there is none.
    public static func bind(_ jetStream: JetStream, name: String) async throws -> KeyValueBucket {
        guard isValidBucketName(name) else { throw KeyValueError.invalidBucket(name) }
        let bucket = KeyValueBucket(jetStream: jetStream, name: name)
        _ = try await jetStream.streamInfo(bucket.streamName)
        return bucket
    }

    /// The key's value, or nil when it has none (never written, or deleted).
    public func get(_ key: String) async throws -> KeyValueEntry? {
        guard let latest = try await latest(key), !latest.deleted else { return nil }
        return latest.entry
    }

    /// Writes a value whatever the key held; returns its revision.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8]) async throws -> UInt64 {
        try check(key)
        return try await jetStream.publish(subjectPrefix + key, payload: value).sequence
    }

    /// Writes a value only when the key has none (never written, or deleted).
    @discardableResult
    public func create(_ key: String, _ value: [UInt8]) async throws -> UInt64 {
        do {
            return try await update(key, value, revision: 0)
        } catch KeyValueError.wrongRevision {
            // A deleted key has a revision (its delete marker's): create over exactly that one.
            guard let latest = try await latest(key), latest.deleted else { throw KeyValueError.keyExists(key) }
            do {
                return try await update(key, value, revision: latest.entry.revision)
            } catch KeyValueError.wrongRevision {
                throw KeyValueError.keyExists(key)
            }
        }
    }

    /// Writes a value only when the key's latest revision is `revision` (0: none yet).
    @discardableResult
    public func update(_ key: String, _ value: [UInt8], revision: UInt64) async throws -> UInt64 {
        try check(key)
        do {
            return try await jetStream.publish(subjectPrefix + key, payload: value, expectedLastSubjectSequence: revision).sequence
        } catch let error as JetStreamAPIError where error.errorCode == JetStreamAPIError.wrongLastSequence {
            throw KeyValueError.wrongRevision(key: key, expected: revision)
        }
    }

    /// Deletes the key's value (a delete marker; history stays); with `revision`, only when the
    /// key is still at it.
    @discardableResult
    public func delete(_ key: String, revision: UInt64? = nil) async throws -> UInt64 {
        try check(key)
        do {
            return try await jetStream.publish(
                subjectPrefix + key, payload: [], expectedLastSubjectSequence: revision,
                headers: [.init(Self.operationHeader, "DEL")]).sequence
        } catch let error as JetStreamAPIError where error.errorCode == JetStreamAPIError.wrongLastSequence {
            throw KeyValueError.wrongRevision(key: key, expected: revision ?? 0)
        }
    }

    /// The key's latest message: its value or its delete marker.
    private func latest(_ key: String) async throws -> (entry: KeyValueEntry, deleted: Bool)? {
        try check(key)
        // From the leader: a lease read from a replica that is behind looked lost to its holder,
        // which then took it again under a new epoch, over and over (the harness's cluster
        // scenario); a cursor read there is older than the one stored.
        guard let message = try await jetStream.lastMessageFromLeader(stream: streamName, subject: subjectPrefix + key) else { return nil }
        guard message.subject == subjectPrefix + key else {
            throw JetStreamResponseError(call: "get \(key)", problem: "the answer is for another subject")
        }
        let operation = message.headers?[Self.operationHeader]
        return (KeyValueEntry(key: key, value: message.payload, revision: message.sequence), operation == "DEL" || operation == "PURGE")
    }

    private func check(_ key: String) throws {
        guard Self.isValidKey(key) else { throw KeyValueError.invalidKey(key) }
    }

    /// Keys: letters, digits, `-`, `/`, `_`, `=`, `.`, not starting or ending with `.`, not `_kv…`.
    public static func isValidKey(_ key: String) -> Bool {
        guard !key.isEmpty, key.utf8.count <= 1024, !key.hasPrefix("."), !key.hasSuffix("."), !key.hasPrefix("_kv") else { return false }
        guard key.utf8.allSatisfy({ isAlphanumeric($0) || "-/_=.".utf8.contains($0) }) else { return false }
        return NATSWire.isValidPublishSubject(key)
    }

    public static func isValidBucketName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 240 && name.utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte)
    }
}
