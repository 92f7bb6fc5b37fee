import Logging
import NIOCore
import OrgSyncPluginAPI
import PostgresNIO

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Captures a PostgreSQL database's committed changes through logical decoding with the
/// built-in `pgoutput` plugin, over a normal connection: `pg_logical_slot_peek_binary_changes`
/// reads the slot without consuming it, and `pg_replication_slot_advance` acknowledges what the
/// stream holds durably. (postgres-nio does not speak the replication protocol's CopyBoth; the
/// SQL functions need no second protocol, only a poll — `poll_ms` — instead of a push.)
///
/// One round: peek up to `round_changes_max` changes (whole transactions, in commit order, only
/// committed ones), map them (``ChangeMapper``), skip those at or before the position the
/// stream already holds, append the rest in chunks, then advance the slot to the end of the last
/// transaction read. An idle source writes a heartbeat (`pg_logical_emit_message`) every
/// `heartbeat_ms` so its slot can advance past WAL that other databases' or tables' traffic made.
actor PostgresSource: ChangeSource {
    nonisolated let name: String
    nonisolated let settings: PostgresSourceSettings
    private var logger: Logger
    private var connection: PostgresConnection?
    private var lastLagBytes: UInt64?
    private var lastHeartbeat: ContinuousClock.Instant?
    private var connectionID = 0
    /// Inserts of transactions committed at or before this LSN may meet rows an initial snapshot
    /// already wrote: they are captured as upserts (``ChangeMapper/insertsAsUpsertsThroughLSN``).
    private var insertsAsUpsertsThroughLSN: UInt64?
    /// The initial snapshot ran to its end in this process.
    private var snapshotCompleted = false

    init(name: String, settings: PostgresSourceSettings, logger: Logger = Logger(label: "orgsync.source.postgres")) {
        self.name = name
        self.settings = settings
        self.logger = logger
        self.logger[metadataKey: "source"] = .string(name)
    }

    nonisolated var pollIntervalMs: UInt64 { UInt64(settings.pollMs) }

    nonisolated func position(of entry: Entry) -> SourcePosition? {
        ChangeMapper.position(of: entry, sourceName: name)
    }

    func lagBytes() async -> UInt64? { lastLagBytes }

    // MARK: - Connection

    func open() async throws {
        guard connection == nil else { return }
        connectionID += 1
        let connection = try await PostgresConnector.connect(
            settings: settings.connection, applicationName: "orgsync source \(name)",
            startupParameters: [("statement_timeout", String(settings.connection.queryTimeoutMs))],
            connectTimeoutMs: settings.connection.connectTimeoutMs, id: connectionID, logger: logger)
        do {
            try await prepare(connection)
        } catch {
            try? await connection.close()
            throw error
        }
        self.connection = connection
    }

    func close() async {
        guard let connection else { return }
        self.connection = nil
        try? await connection.close()
    }

    func probe() async throws {
        try await open()
        guard let connection else { throw PostgresSourceError("not connected") }
        do {
            _ = try await Self.text(connection, "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = \(settings.slot)", logger)
        } catch {
            await close()
            throw error
        }
    }

    /// Checks the server and creates what is missing: the publication (when `tables` are
    /// configured) and the slot. Refuses a table whose rows have no key.
    private func prepare(_ connection: PostgresConnection) async throws {
        let walLevel = try await Self.text(connection, "SELECT current_setting('wal_level')", logger)
        guard walLevel == "logical" else {
            throw PostgresSourceError("the server runs with wal_level = \(walLevel ?? "?"); capture needs wal_level = logical (set it in postgresql.conf and restart the server)")
        }
        let publication = settings.publication
        let exists = try await Self.text(connection, "SELECT pubname::text FROM pg_publication WHERE pubname = \(publication)", logger) != nil
        if !exists {
            guard !settings.tables.isEmpty else {
                throw PostgresSourceError("publication \(publication) does not exist: create it (CREATE PUBLICATION \(publication) FOR TABLE ...) or list the tables in the source's `tables` setting")
            }
            let tables = settings.tables.map(\.quoted).joined(separator: ", ")
            let sql = "CREATE PUBLICATION \(TableMapping.quoted(publication)) FOR TABLE \(tables) WITH (publish = 'insert, update, delete')"
            _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
            logger.notice("created publication \(publication) for \(settings.tables.map(\.description).joined(separator: ", "))")
        }
        // Every published table must give its rows a key.
        var published: [PostgresSourceSettings.Table] = []
        for relation in try await Self.publishedRelations(connection, publication: publication, logger: logger) {
            let qualified = PostgresSourceSettings.Table(schema: relation.schema, name: relation.name)
            published.append(qualified)
            if relation.identity == "n" || (relation.identity == "d" && !relation.hasPrimaryKey) {
                throw PostgresSourceError(ChangeMappingError.noKey(qualified.description).description)
            }
        }
        for table in settings.tables where !published.contains(table) {
            throw PostgresSourceError("table \(table) is not in publication \(publication) (ALTER PUBLICATION \(publication) ADD TABLE \(table.quoted))")
        }
        // The slot: made on first start, kept across restarts (it holds the position).
        let slotRows = try await connection.query(
            "SELECT plugin::text, database::text FROM pg_replication_slots WHERE slot_name = \(settings.slot)", logger: logger)
        var slot: (plugin: String?, database: String?)?
        for try await row in slotRows.decode((String?, String?).self) { slot = row }
        if let slot {
            guard slot.plugin == "pgoutput", slot.database == settings.connection.database else {
                throw PostgresSourceError("replication slot \(settings.slot) exists for plugin \(slot.plugin ?? "none") in database \(slot.database ?? "none"), not pgoutput in \(settings.connection.database): choose another `slot`")
            }
        } else {
            _ = try await Self.text(connection, "SELECT lsn::text FROM pg_create_logical_replication_slot(\(settings.slot), 'pgoutput')", logger)
            logger.notice("created replication slot \(settings.slot)")
        }
        if settings.snapshot == .initial, insertsAsUpsertsThroughLSN == nil {
            // Transactions up to the snapshot's LSN may overlap it. The LSN is kept in a file
            // beside the broker's data; without it (lost, unreadable), every transaction committed
            // before now is taken to overlap — an upsert is always safe, it only cannot reject a
            // duplicate insert.
            if let kept = settings.snapshotLSNFile.flatMap(Self.readLSN) {
                insertsAsUpsertsThroughLSN = kept
            } else {
                insertsAsUpsertsThroughLSN = try await Self.text(connection, "SELECT pg_current_wal_lsn()::text", logger).flatMap(ChangeMapper.lsn)
            }
        }
    }

    /// The tables of `publication` in name order: oid, schema, name, replica identity
    /// (`relreplident`: `d`efault, `n`othing, `f`ull, `i`ndex) and whether it has a primary key.
    static func publishedRelations(
        _ connection: PostgresConnection, publication: String, logger: Logger
    ) async throws -> [(oid: Int64, schema: String, name: String, identity: String, hasPrimaryKey: Bool)] {
        let rows = try await connection.query("""
            SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relreplident::text,
                   EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
            FROM pg_publication_tables p
            JOIN pg_namespace n ON n.nspname = p.schemaname
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
            WHERE p.pubname = \(publication)
            ORDER BY n.nspname, c.relname
            """, logger: logger)
        var found: [(oid: Int64, schema: String, name: String, identity: String, hasPrimaryKey: Bool)] = []
        for try await row in rows.decode((Int64, String, String, String, Bool).self) { found.append(row) }
        return found
    }

    // MARK: - Capture

    func capture(after position: SourcePosition?, lastEntry: Entry?, into sink: any CaptureSink) async throws -> CaptureRound {
        guard let connection else { throw PostgresSourceError("not connected") }
        do {
            // The snapshot comes first: before anything of this source is in the stream, or
            // when the stream's last entry of it is a snapshot row (a snapshot cut short).
            if settings.snapshot == .initial, !snapshotCompleted, position.map({ $0.commit == PostgresSnapshot.commit }) ?? true {
                let resume = position.map { PostgresSnapshot.Resume(table: Int($0.change), afterKey: lastEntry?.key) }
                let snapshot = PostgresSnapshot(sourceName: name, publication: settings.publication, chunk: chunk(), logger: logger)
                let (rows, lsn) = try await snapshot.run(connection, resume: resume, into: sink) { lsn in
                    await self.keepSnapshotLSN(lsn)
                }
                snapshotCompleted = true
                insertsAsUpsertsThroughLSN = max(insertsAsUpsertsThroughLSN ?? 0, lsn)
                logger.notice("initial snapshot done: \(rows) rows; streaming from the slot")
                return CaptureRound(appendedChanges: rows, caughtUp: false)
            }
            return try await capture(connection, after: position, into: sink)
        } catch {
            await close()
            throw error
        }
    }

    private func capture(_ connection: PostgresConnection, after position: SourcePosition?, into sink: any CaptureSink) async throws -> CaptureRound {
        let publicationList = TableMapping.quoted(settings.publication)
        let rows = try await connection.query("""
            SELECT data FROM pg_logical_slot_peek_binary_changes(\(settings.slot), NULL, \(settings.roundChangesMax)::int,
                'proto_version', '1', 'publication_names', \(publicationList), 'messages', 'true')
            """, logger: logger)
        var mapper = ChangeMapper(sourceName: name, insertsAsUpsertsThroughLSN: insertsAsUpsertsThroughLSN)
        var chunk = chunk()
        var round = CaptureRound()
        var rowCount = 0
        var acknowledge: UInt64?
        do {
            for try await data in rows.decode(ByteBuffer.self) {
                rowCount += 1
                let message = try PgOutputMessage.parse(Array(data.readableBytesView))
                switch try mapper.map(message) {
                case .none:
                    break
                case .change(let changePosition, let entries):
                    if let position, changePosition <= position {
                        round.skippedChanges += 1
                        continue
                    }
                    let raws = entries.map(\.raw)
                    if !chunk.fits(raws) { try await chunk.flushBehind(into: sink) }
                    chunk.add(raws, through: changePosition)
                    round.appendedChanges += 1
                case .skippedChange:
                    round.skippedChanges += 1
                case .committed(let endLSN, let commitTimeMs):
                    round.transactions += 1
                    acknowledge = max(acknowledge ?? 0, endLSN)
                    if let commitTimeMs { round.newestCommitTimeMs = max(round.newestCommitTimeMs ?? 0, commitTimeMs) }
                case .outsideMessage(let lsn):
                    acknowledge = max(acknowledge ?? 0, lsn)
                case .truncate(let tables):
                    logger.warning("TRUNCATE of \(tables.joined(separator: ", ")) is not captured: truncate the targets yourself")
                }
            }
        } catch {
            // An append still in flight must end before the round does: the supervisor counts
            // what the sink made durable when the round returns, and must not miss it.
            try? await chunk.waitForAppend()
            throw error
        }
        try await chunk.flush(into: sink)
        // Everything read is durable in the stream: the slot may let it go.
        if let acknowledge {
            _ = try await connection.query(
                "SELECT 1 FROM pg_replication_slot_advance(\(settings.slot), \(ChangeMapper.lsnText(acknowledge))::pg_lsn)",
                logger: logger
            ).collect()
        }
        round.caughtUp = rowCount < settings.roundChangesMax
        if rowCount == 0 { try await heartbeatIfDue(connection) }
        lastLagBytes = try await Self.lagBytes(connection, slot: settings.slot, logger: logger)
        return round
    }

    /// Called before the snapshot appends its first row: from now on, inserts up to `lsn` may
    /// meet snapshot rows (also after a restart: the file).
    private func keepSnapshotLSN(_ lsn: UInt64) {
        insertsAsUpsertsThroughLSN = max(insertsAsUpsertsThroughLSN ?? 0, lsn)
        guard let file = settings.snapshotLSNFile else { return }
        let directory = String(file[..<(file.lastIndex(of: "/") ?? file.endIndex)])
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if (try? Data((ChangeMapper.lsnText(insertsAsUpsertsThroughLSN ?? lsn) + "\n").utf8).write(to: URL(fileURLWithPath: file), options: .atomic)) == nil {
            logger.warning("cannot keep the snapshot's LSN in \(file): after a restart, inserts committed before then are captured as upserts")
        }
    }

    /// An LSN kept by ``keepSnapshotLSN(_:)``, or nil.
    static func readLSN(_ file: String) -> UInt64? {
        guard let data = FileManager.default.contents(atPath: file), data.count <= 64 else { return nil }
        return ChangeMapper.lsn(String(decoding: data, as: UTF8.self).filter { !$0.isWhitespace })
    }

    private func chunk() -> CaptureChunk {
        CaptureChunk(entriesMax: settings.appendEntriesMax, bytesMax: settings.appendBytesMax)
    }

    /// Writes a non-transactional message when the source has been idle for `heartbeat_ms`: the
    /// next round reads it and advances the slot to it.
    private func heartbeatIfDue(_ connection: PostgresConnection) async throws {
        let now = ContinuousClock.now
        if let last = lastHeartbeat, now - last < .milliseconds(settings.heartbeatMs) { return }
        lastHeartbeat = now
        _ = try await connection.query("SELECT pg_logical_emit_message(false, 'orgsync_heartbeat', '')", logger: logger).collect()
    }

    private static func lagBytes(_ connection: PostgresConnection, slot: String, logger: Logger) async throws -> UInt64? {
        let rows = try await connection.query(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = \(slot)",
            logger: logger)
        var lag: Int64?
        for try await value in rows.decode(Int64?.self) { lag = value }
        return lag.map { UInt64(max(0, $0)) }
    }

    /// The first column of the last row, as text (nil for no row or NULL).
    private static func text(_ connection: PostgresConnection, _ query: PostgresQuery, _ logger: Logger) async throws -> String? {
        var value: String?
        for try await row in try await connection.query(query, logger: logger).decode(String?.self) { value = row }
        return value
    }
}

/// The entries of a round waiting to be appended: one append per chunk, bounded in entries and
/// bytes (the stream's limits per append), and never splitting one change's entries.
struct CaptureChunk {
    let entriesMax: Int
    let bytesMax: Int
    private(set) var entries: [[UInt8]] = []
    private(set) var bytes = 0
    private(set) var through: SourcePosition?

    init(entriesMax: Int, bytesMax: Int) {
        self.entriesMax = entriesMax
        self.bytesMax = bytesMax
    }

    /// Whether `more` (one change's entries) can join without passing a limit; an empty chunk
    /// takes anything.
    func fits(_ more: [[UInt8]]) -> Bool {
        entries.isEmpty || (entries.count + more.count <= entriesMax && bytes + more.reduce(0) { $0 + $1.count } <= bytesMax)
    }

    mutating func add(_ more: [[UInt8]], through position: SourcePosition) {
        entries.append(contentsOf: more)
        bytes += more.reduce(0) { $0 + $1.count }
        through = position
    }

    /// Appends what the chunk holds (after the append started by the last ``flushBehind(into:)``
    /// finished) and waits for it.
    mutating func flush(into sink: any CaptureSink) async throws {
        try await flushBehind(into: sink)
        try await waitForAppend()
    }

    /// Starts appending what the chunk holds and returns at once, so the next chunk fills while
    /// this one is written and synced; one append at a time, in order (it first waits for the
    /// previous one).
    mutating func flushBehind(into sink: any CaptureSink) async throws {
        try await waitForAppend()
        guard let through, !entries.isEmpty else { return }
        let taken = entries
        inFlight = Task { try await sink.append(taken, through: through) }
        entries.removeAll(keepingCapacity: true)
        bytes = 0
        self.through = nil
    }

    /// Waits for the append in flight; rethrows its error.
    mutating func waitForAppend() async throws {
        guard let task = inFlight else { return }
        inFlight = nil
        try await task.value
    }

    /// The append started by ``flushBehind(into:)``, if it has not been waited for.
    private var inFlight: Task<Void, any Error>?
}

/// A problem of the source database, in an operator's words.
struct PostgresSourceError: Error, Sendable, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
