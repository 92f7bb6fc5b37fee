#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import OrgSyncBroker
import OrgSyncLog
import OrgSyncNATS

/// A cluster member's way into NATS: its connection and the JetStream streams and buckets that
/// hold the cluster's streams, their ids and their cursors.
public struct ClusterStreams: Sendable {
    public let connection: NATSConnection
    public let jetStream: JetStream
    public let stores: [String: JetStreamStreamStore]

    /// The bucket of stream ids (``StreamLineage`` as JSON, by stream name).
    public static let lineageBucket = "orgsync_streams"
    /// The bucket of link cursors and source hints (`<stream>.<name>`).
    public static let cursorBucket = "orgsync_cursors"

    /// Connects to the cluster's NATS servers (reconnecting without end when the connection is
    /// lost), makes what is missing of the buckets and of every configured stream's JetStream
    /// stream, and opens a store for each.
    ///
    /// - Throws: ``ConfigurationError`` for credentials or TLS files that do not do;
    ///   `NATSError` when no server answers (or refuses the handshake: TLS, credentials);
    ///   `JetStreamAPIError` when JetStream refuses (a stream that exists with another
    ///   configuration, too few servers for the replicas).
    public static func open(
        configuration: BrokerConfiguration, cluster: BrokerConfiguration.Cluster, environment: [String: String], logger: Logger
    ) async throws -> ClusterStreams {
        let options = try cluster.connectionOptions(environment: environment)
        let connection = try await NATSConnection.connect(options)
        do {
            let jetStream = JetStream(connection: connection, timeoutMs: cluster.requestTimeoutMs)
            let lineages = try await bucket(jetStream, lineageBucket, replicas: cluster.replicas)
            let cursors = try await bucket(jetStream, cursorBucket, replicas: cluster.replicas)
            var stores: [String: JetStreamStreamStore] = [:]
            for stream in configuration.streams {
                let log = try configuration.logConfiguration(for: stream)
                try await ensureStream(jetStream, stream.name, replicas: cluster.replicas, duplicateWindowMs: log.idempotencyWindowMs)
                let lineage = try await lineage(of: stream.name, in: lineages)
                stores[stream.name] = JetStreamStreamStore(
                    name: stream.name, jetStream: jetStream, lineage: lineage, compressionLevel: log.compressionLevel,
                    cursors: cursors, logger: logger, queuedAppendsMax: log.queuedAppendsMax,
                    retention: ClusterRetention(
                        bytesMax: log.retentionBytesMax, ageMsMax: log.retentionAgeMsMax, dropsUnconsumed: log.retentionDropsUnconsumed),
                    otherStreams: configuration.streams.map(\.name).filter { $0 != stream.name },
                    configuredCursors: configuration.cursorNames(of: stream.name))
                logger.info("cluster stream open", metadata: [
                    "stream": "\(stream.name)", "jetstream": "\(JetStreamStreamStore.jetStreamName(for: stream.name))", "id": "\(lineage.streamID)",
                ])
            }
            return ClusterStreams(connection: connection, jetStream: jetStream, stores: stores)
        } catch {
            await connection.close()
            throw error
        }
    }

    /// The bucket, made when it does not exist yet.
    static func bucket(_ jetStream: JetStream, _ name: String, replicas: Int) async throws -> KeyValueBucket {
        do {
            return try await KeyValueBucket.bind(jetStream, name: name)
        } catch let error as JetStreamAPIError where error.errorCode == JetStreamAPIError.streamNotFound {
            return try await KeyValueBucket.create(jetStream, name: name, history: 1, replicas: replicas)
        }
    }

    /// Makes the stream's JetStream stream unless it exists: file storage, `replicas`, no limits
    /// (orgsync decides what is kept: ``ClusterRetention``), no deletes inside it, direct gets allowed, and
    /// idempotency keys remembered for the stream's window. Its subjects: the stream's, and the
    /// capture sources' (``JetStreamStreamStore/captureSubjects(for:)``), added to a stream made
    /// before sources had subjects of their own.
    static func ensureStream(_ jetStream: JetStream, _ stream: String, replicas: Int, duplicateWindowMs: Int64) async throws {
        let name = JetStreamStreamStore.jetStreamName(for: stream)
        let subjects = [JetStreamStreamStore.subject(for: stream), JetStreamStreamStore.captureSubjects(for: stream)]
        do {
            var config = try await jetStream.streamInfo(name).config
            let missing = subjects.filter { !config.subjects.contains($0) }
            if !missing.isEmpty {
                config.subjects += missing
                _ = try await jetStream.updateStream(config)
            }
        } catch let error as JetStreamAPIError where error.errorCode == JetStreamAPIError.streamNotFound {
            let (windowNs, overflow) = duplicateWindowMs.multipliedReportingOverflow(by: 1_000_000)
            _ = try await jetStream.createStream(JetStreamStreamConfig(
                name: name, subjects: subjects, storage: "file", replicas: replicas,
                duplicateWindowNs: overflow ? Int64.max : windowNs, allowDirect: true, denyDelete: true, discard: "old"))
        }
    }

    /// The stream's id: the one in the bucket, or a new one put there by this broker first.
    static func lineage(of stream: String, in bucket: KeyValueBucket) async throws -> StreamLineage {
        for _ in 0..<2 {
            if let entry = try await bucket.get(stream) {
                let notALineage = { (why: String) in
                    BrokerError.streamUnavailable(stream: stream, problem: "its id in bucket \(bucket.name) is not a stream lineage: \(why)")
                }
                guard entry.value.count <= StreamLineage.fileBytesMax else {
                    throw notALineage("\(entry.value.count) bytes, more than \(StreamLineage.fileBytesMax)")
                }
                do {
                    return try JSONDecoder().decode(StreamLineage.self, from: Data(entry.value))
                } catch DecodingError.dataCorrupted(let context) {
                    throw notALineage(context.debugDescription)
                } catch {
                    throw notALineage("\(error)")
                }
            }
            do {
                let lineage = StreamLineage.random()
                try await bucket.create(stream, Array(JSONEncoder().encode(lineage)))
                return lineage
            } catch KeyValueError.keyExists(_) {
                continue  // another broker made it first: read theirs
            }
        }
        throw BrokerError.streamUnavailable(stream: stream, problem: "its id in bucket \(bucket.name) came and went")
    }

    public func close() async {
        for store in stores.values { await store.close() }
        await connection.close()
    }
}
