import Logging
import NIOCore
import OrgSyncPluginAPI
import PostgresNIO
import Synchronization

/// Applies entries to tables of a PostgreSQL database (mapping in ``TableMapping``), one batch
/// per transaction together with the link's row in `orgsync_offsets`:
///
/// ```sql
/// CREATE TABLE orgsync_offsets (link TEXT PRIMARY KEY, applied_offset BIGINT,
///     updated_at TIMESTAMPTZ NOT NULL, stream_id TEXT, epoch BIGINT, owner_epoch BIGINT)
/// ```
///
/// A batch locks the link's offsets row first (creating it empty when absent, so that two
/// brokers' first batches also wait for each other) and decides with ``StoredPositionVerdict``:
/// it refuses a position stored by a later owner (`fenced`: the broker lost the link), skips
/// entries at or below a stored position of the same stream identity (so re-sending a committed
/// batch changes nothing), refuses a position of another stream or a later epoch
/// (`positionConflict`: the link diverges), applies the rest in order and stores the batch's
/// last offset with its identity and owner epoch before COMMIT. A table from before identities
/// or owner epochs gains the columns when the adapter opens (one ALTER TABLE). Every value is a bind parameter; only checked, quoted
/// identifiers are part of the SQL text.
///
/// One connection per link; the broker never overlaps calls, the actor makes that a guarantee.
public actor PostgresAdapter: OrgAdapter {
    public nonisolated let linkName: String
    public nonisolated let settings: PostgresAdapterSettings
    private let logger: Logger
    private var connection: PostgresConnection?
    private var connectionCount = 0
    /// Table shapes as committed in the target. A batch works on a copy and adopts it on COMMIT,
    /// so DDL rolled back with a batch never stays in the cache.
    private var shapes: [String: TableShape] = [:]
    /// The second connection the liveness check asks `SELECT 1` on (kept between calls: a new
    /// connection's authentication costs far more than a query, and a loaded machine must not
    /// make a live server look dead).
    private let livenessConnection = LivenessConnection()
    /// How rows are sent; `.entryByEntry` is what a failed set statement falls back to, kept
    /// selectable so that tests and the apply benchmark can hold the two paths side by side.
    nonisolated let grouping: StatementGrouping
    /// With `batch_writes: per_entry`, a layer of at most this many rows goes as single
    /// statements (``layerRowsSentSinglyMax``; tests set 1 to send every layer they can as a set).
    nonisolated let layerRowsSentSinglyMax: Int
    /// Statements sent since open, by path (for tests and the apply benchmark).
    private(set) var statementCounts = StatementCounts()
    /// The set statements prepared on ``connection``; emptied with it.
    private var preparedSets = PreparedStatementCache<PreparedQuery>()

    enum StatementGrouping: Sendable {
        /// Set statements (``SetStatement``), as `batch_writes` says.
        case sets
        /// One statement per entry.
        case entryByEntry
    }

    struct StatementCounts: Sendable, Hashable {
        /// Set statements sent (a set of one row goes as a single statement).
        var sets = 0
        /// Rows sent as single statements.
        var singles = 0
        /// Batches sent again entry by entry after a set statement failed.
        var fallbacks = 0
        /// Set statements that ran as a prepared statement (of ``sets``), and those prepared.
        var preparedRuns = 0
        var prepared = 0
    }

    public init(linkName: String, settings: PostgresAdapterSettings) {
        self.init(linkName: linkName, settings: settings, grouping: .sets)
    }

    init(
        linkName: String, settings: PostgresAdapterSettings, grouping: StatementGrouping,
        layerRowsSentSinglyMax: Int = PostgresAdapter.layerRowsSentSinglyMax
    ) {
        self.linkName = linkName
        self.settings = settings
        self.grouping = grouping
        self.layerRowsSentSinglyMax = layerRowsSentSinglyMax
        var logger = Logger(label: "orgsync.adapter.postgres")
        logger[metadataKey: "link"] = "\(linkName)"
        self.logger = logger
    }

    private var offsetsTable: String { TableMapping.quoted(settings.schema) + ".\"orgsync_offsets\"" }
    private var endpoint: String { "postgres \(settings.host):\(settings.port)/\(settings.database)" }

    // MARK: OrgAdapter

    public func open() async throws {
        await dropConnection()
        let connection = try await connect()
        do {
            try await withDeadline(connection) {
                // Look before creating: CREATE … IF NOT EXISTS checks the CREATE privilege first,
                // and a role that may only write rows must still be able to open.
                let rows = try await connection.query(
                    PostgresQuery(
                        unsafeSQL: """
                            SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
                                   EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'orgsync_offsets')
                            """, binds: Self.binds(self.settings.schema)), logger: self.logger)
                var schemaExists = false
                var tableExists = false
                for try await (schema, table) in rows.decode((Bool, Bool).self) { (schemaExists, tableExists) = (schema, table) }
                if !schemaExists {
                    try await connection.query(
                        PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(TableMapping.quoted(self.settings.schema))"),
                        logger: self.logger)
                }
                if !tableExists {
                    try await connection.query(
                        PostgresQuery(
                            unsafeSQL: """
                                CREATE TABLE IF NOT EXISTS \(self.offsetsTable) (
                                    link TEXT PRIMARY KEY, applied_offset BIGINT, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                                    stream_id TEXT, epoch BIGINT, owner_epoch BIGINT)
                                """), logger: self.logger)
                } else {
                    try await self.upgradeOffsetsTable(connection)
                }
            }
        } catch {
            await dropConnection()
            throw PostgresErrorClassifier.classify(error, phase: .session, context: "\(endpoint): preparing orgsync_offsets")
        }
    }

    public func apply(_ batch: EntryBatch) async throws {
        guard let lastOffset = batch.lastOffset else { return }
        let connection = try await connectedOrConnect()
        let progress = ApplyProgress(shapes: shapes)
        do {
            try await withDeadline(connection) {
                try await self.applyTracked(batch, lastOffset: lastOffset, on: connection, progress: progress)
            }
            shapes = progress.snapshot.shapes
        } catch {
            let failure = PostgresErrorClassifier.classify(error, phase: progress.snapshot.phase, context: endpoint)
            if case .rejected = failure.kind {
                await rollback(connection)
            } else {
                // Anything but a rejected entry may leave the session in doubt: start afresh.
                shapes = [:]
                await dropConnection()
            }
            throw failure
        }
    }

    public func probe() async throws {
        let connection = try await connectedOrConnect()
        do {
            try await withDeadline(connection) {
                let rows = try await connection.query("SELECT 1", logger: self.logger)
                for try await _ in rows {}
            }
        } catch {
            await dropConnection()
            throw PostgresErrorClassifier.classify(error, phase: .session, context: "\(endpoint): probe")
        }
    }

    public func appliedPosition() async throws -> AppliedPosition? {
        let connection = try await connectedOrConnect()
        do {
            return try await withDeadline(connection) { try await self.readAppliedPosition(connection) }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42P01" {
            return nil  // no offsets table yet: nothing applied
        } catch {
            await dropConnection()
            throw PostgresErrorClassifier.classify(error, phase: .session, context: "\(endpoint): reading applied offset")
        }
    }

    public func setAppliedPosition(_ position: AppliedPosition?) async throws {
        let connection = try await connectedOrConnect()
        do {
            try await withDeadline(connection) {
                try await connection.query("BEGIN", logger: self.logger)
                if let position {
                    try await self.writePosition(position, on: connection)
                } else {
                    try await connection.query(
                        PostgresQuery(unsafeSQL: "DELETE FROM \(self.offsetsTable) WHERE link = $1", binds: Self.binds(self.linkName)),
                        logger: self.logger)
                }
                try await connection.query("COMMIT", logger: self.logger)
            }
        } catch {
            await dropConnection()
            throw PostgresErrorClassifier.classify(error, phase: .session, context: "\(endpoint): rewriting the applied position")
        }
    }

    public func close() async {
        await dropConnection()
        livenessConnection.drop()
    }

    /// A table from before stream identities gains `stream_id` and `epoch`, one from before owner
    /// epochs `owner_epoch` (one statement, so atomic); a table that has them all is not touched
    /// (a role that may only write rows opens).
    private func upgradeOffsetsTable(_ connection: PostgresConnection) async throws {
        let rows = try await connection.query(
            PostgresQuery(
                unsafeSQL: """
                    SELECT count(*) FROM information_schema.columns
                    WHERE table_schema = $1 AND table_name = 'orgsync_offsets' AND column_name IN ('stream_id', 'epoch', 'owner_epoch')
                    """, binds: Self.binds(settings.schema)), logger: logger)
        var present = 0
        for try await count in rows.decode(Int64.self) { present = Int(count) }
        guard present < 3 else { return }
        try await connection.query(
            PostgresQuery(unsafeSQL: """
                ALTER TABLE \(offsetsTable) ADD COLUMN IF NOT EXISTS stream_id TEXT, ADD COLUMN IF NOT EXISTS epoch BIGINT,
                    ADD COLUMN IF NOT EXISTS owner_epoch BIGINT
                """),
            logger: logger)
        logger.notice("orgsync_offsets upgraded: stream_id, epoch and owner_epoch columns present")
    }

    // MARK: Batch

    /// Runs the batch, leaving its phase and table shapes in `progress` whatever happens (the
    /// deadline may abandon it, so nothing can be passed back by `inout`).
    private func applyTracked(
        _ batch: EntryBatch, lastOffset: Offset, on connection: PostgresConnection, progress: ApplyProgress
    ) async throws {
        var phase = PostgresErrorClassifier.Phase.session
        var working = progress.snapshot.shapes
        defer { progress.record(phase: phase, shapes: working) }
        try await applyInTransaction(batch, lastOffset: lastOffset, on: connection, phase: &phase, shapes: &working)
    }

    /// The batch in one transaction, set-based (``BatchPlan``, ``SetStatement``). When a set
    /// statement fails on a row (a key that exists, a value the server refuses), the batch is
    /// rolled back and sent again entry by entry, whose failing statement names the one entry.
    private func applyInTransaction(
        _ batch: EntryBatch, lastOffset: Offset, on connection: PostgresConnection,
        phase: inout PostgresErrorClassifier.Phase, shapes: inout [String: TableShape]
    ) async throws {
        let committedShapes = shapes
        do {
            try await applyOnce(
                batch, lastOffset: lastOffset, on: connection, setBased: grouping == .sets, phase: &phase, shapes: &shapes)
        } catch let failure as SetStatementFailure {
            statementCounts.fallbacks += 1
            logger.debug(
                "a set statement failed, applying entry by entry to name the entry",
                metadata: ["offset": "\(failure.firstOffset)", "sqlstate": "\(failure.sqlState ?? "-")"])
            phase = .session
            try await connection.query("ROLLBACK", logger: logger)
            shapes = committedShapes
            try await applyOnce(batch, lastOffset: lastOffset, on: connection, setBased: false, phase: &phase, shapes: &shapes)
        }
    }

    /// SQLSTATE unique_violation, what the single INSERT of an existing record fails with.
    static let uniqueViolation = "23505"
    /// A layer of at most this many rows goes as single statements: parsing and planning a set
    /// statement costs the server about as much as this many plain ones (measured: ~1.5 ms
    /// against ~0.15 ms with its round trip), and the workload's hot records make long tails of
    /// small layers. 4 and 8 measured alike (95 % and 92 % of the best ceiling in their runs).
    static let layerRowsSentSinglyMax = 8
    /// Session settings of the connection batches are applied on. Every statement it sends finds
    /// its rows by key, and the key has an index; but for tables up to a few ten thousand rows
    /// the server's default cost model (random reads four times a sequential one: disks, not a
    /// table in memory) planned the UPDATE and DELETE of a set statement as a sequential scan of
    /// the whole table with a hash join, so a batch took longer the larger the tables grew:
    /// catching up 200 000 workload entries fell from 9 125 to 4 875 entries/s as the tables
    /// filled, 7 243/s overall, against 12 335/s and no slowdown with this setting (same run).
    /// `off` only makes a scan the last resort: a table without an index on its key is still
    /// read, as before.
    ///
    /// The set statements run prepared (``PreparedStatementCache``), planned once for every run
    /// (`plan_cache_mode = force_generic_plan`: the server's default planned most runs afresh,
    /// 1.5 ms of each bind against 0.12 ms with the generic plan). A plan kept for good must not
    /// depend on how large the tables were when it was made: made while they were small, it
    /// joined the batch's records to a table by hashing after reading the table's whole index —
    /// fine for 200 rows, and the same plan read 1 100 and more as the table grew (`auto_explain`,
    /// 2026-11-29). Without hash and merge joins every join is a nested loop that finds each
    /// record by its key through the index, whatever the size. The joins left between two CTEs
    /// (the rows an upsert updated against the rows it was given) compare at most a batch's
    /// records of one table with each other.
    static let batchSessionParameters: [(String, String)] = [
        ("enable_seqscan", "off"), ("enable_hashjoin", "off"), ("enable_mergejoin", "off"),
        ("plan_cache_mode", "force_generic_plan"),
    ]

    /// How much of a key (and org) a rejection's message quotes, in characters.
    static let keyInMessageCharactersMax = 200

    /// A set statement whose first entry is `firstOffset` failed with a data error.
    private struct SetStatementFailure: Error {
        var firstOffset: Offset
        var sqlState: String?
    }

    private func applyOnce(
        _ batch: EntryBatch, lastOffset: Offset, on connection: PostgresConnection, setBased: Bool,
        phase: inout PostgresErrorClassifier.Phase, shapes: inout [String: TableShape]
    ) async throws {
        try await connection.query("BEGIN", logger: logger)
        let stored = try await lockAppliedPosition(connection)
        let skipThrough: Offset?
        switch StoredPositionVerdict.decide(stored: stored, batch: batch) {
        case .conflict(let reason): throw AdapterError.positionConflict(reason)
        case .fenced(let reason): throw AdapterError.fenced(reason)
        case .apply(let through): skipThrough = through
        }
        if let skipThrough, skipThrough >= lastOffset {
            try await connection.query("COMMIT", logger: logger)
            return
        }
        let pending = batch.entries.filter { entry in skipThrough.map { entry.offset > $0 } ?? true }
        for (table, offset) in BatchPlan.unknownTables(pending, prefix: settings.tablePrefix, known: shapes) {
            phase = .schema(offset)
            if let shape = try await loadShape(table, on: connection) { shapes[table] = shape }
        }
        let plan = try BatchPlan.make(pending, shapes: shapes, prefix: settings.tablePrefix, own: settings.ownColumns)
        for change in plan.schemaChanges {
            phase = .schema(change.offset)
            try await makeSchemaChange(change, on: connection)
        }
        shapes = plan.shapes
        let target = statementTarget
        // One row is one statement either way, and the single one names its entry.
        if setBased, plan.rows.count > 1 {
            try await sendSets(plan, target: target, on: connection, phase: &phase)
        } else {
            for row in plan.rows { try await sendSingle(row, target: target, on: connection, phase: &phase) }
        }
        phase = .session
        guard Int64(exactly: lastOffset.rawValue) != nil else {
            throw AdapterError.rejected(offset: lastOffset, "offset does not fit a BIGINT")
        }
        if let next = StoredPositionVerdict.positionAfter(batch, stored: stored), next != stored {
            try await writePosition(next, on: connection)
        }
        try await connection.query("COMMIT", logger: logger)
    }

    /// The batch as set statements (``SetStatement/batch(_:shapes:target:)``): with
    /// `batch_writes: per_record` one for the batch's net writes; with `per_entry` one per layer
    /// (``BatchPlan/layers(primaryKey:)``), so every entry writes its own row.
    private func sendSets(
        _ plan: BatchPlan, target: SetStatement.Target, on connection: PostgresConnection, phase: inout PostgresErrorClassifier.Phase
    ) async throws {
        switch settings.batchWrites {
        case .perRecord:
            try await sendSet(of: plan.folded(primaryKey: settings.primaryKey), plan, target: target, on: connection, phase: &phase)
        case .perEntry:
            for layer in plan.layers(primaryKey: settings.primaryKey) {
                if layer.count <= layerRowsSentSinglyMax {
                    for row in layer { try await sendSingle(row, target: target, on: connection, phase: &phase) }
                    continue
                }
                try await sendSet(
                    of: BatchPlan.fold(layer, primaryKey: settings.primaryKey), plan, target: target, on: connection, phase: &phase)
            }
        }
    }

    /// `records` as set statements; the first insert of a record that exists is rejected.
    private func sendSet(
        of records: [FoldedRecord], _ plan: BatchPlan, target: SetStatement.Target, on connection: PostgresConnection,
        phase: inout PostgresErrorClassifier.Phase
    ) async throws {
        let statements = SetStatement.batch(records, shapes: plan.shapes, target: target)
        guard let first = records.map(\.lastOffset).min() else { return }
        if let main = statements.main {
            let reported = try await sendSet(main, firstOffset: first, reportsRows: true, on: connection, phase: &phase)
            if let existing = statements.firstExisting(reported), let row = plan.rows.first(where: { $0.offset == existing }) {
                throw AdapterError.rejected(
                    offset: existing,
                    "\(endpoint): duplicate key: an insert of a record that exists (table \(row.table), key \(row.key.prefix(Self.keyInMessageCharactersMax))\(settings.primaryKey == .orgKey ? ", org \(row.org.prefix(Self.keyInMessageCharactersMax))" : ""))",
                    targetCode: Self.uniqueViolation)
            }
        }
        // A folded row may stand for several entries: a data error in it cannot name the entry,
        // so it sends the batch entry by entry too.
        for row in statements.alone {
            try await sendAlone(row, target: target, firstOffset: first, on: connection, phase: &phase)
        }
        if let replacements = statements.replacements {
            _ = try await sendSet(replacements, firstOffset: first, on: connection, phase: &phase)
        }
        for row in statements.replacementsAlone {
            try await sendAlone(row, target: target, firstOffset: first, on: connection, phase: &phase)
        }
    }

    /// Sends a set statement and returns the rows it reports; a data error in it becomes a
    /// ``SetStatementFailure`` (the batch is then sent entry by entry to name the entry).
    private func sendSet(
        _ query: SetStatement.Query, firstOffset: Offset, reportsRows: Bool = false, on connection: PostgresConnection,
        phase: inout PostgresErrorClassifier.Phase
    ) async throws -> [(Int64, Int64)] {
        try await asSetStatement(firstOffset: firstOffset, phase: &phase) {
            try await run(query, reportsRows: reportsRows, on: connection)
        }
    }

    /// A row that goes alone after a set statement, as the single statement, with the set's
    /// failure rule (it may stand for several entries).
    private func sendAlone(
        _ row: PlannedRow, target: SetStatement.Target, firstOffset: Offset, on connection: PostgresConnection,
        phase: inout PostgresErrorClassifier.Phase
    ) async throws {
        _ = try await asSetStatement(firstOffset: firstOffset, phase: &phase) {
            try await runUnnamed(SetStatement.single(row, target: target), reportsRows: false, on: connection)
        }
    }

    /// Runs `send` as the set statement whose first entry is `firstOffset`: a data error
    /// becomes a ``SetStatementFailure``.
    private func asSetStatement(
        firstOffset: Offset, phase: inout PostgresErrorClassifier.Phase, _ send: () async throws -> [(Int64, Int64)]
    ) async throws -> [(Int64, Int64)] {
        phase = .entry(firstOffset)
        statementCounts.sets += 1
        do {
            return try await send()
        } catch {
            let failure = PostgresErrorClassifier.classify(error, phase: phase, context: endpoint)
            guard case .rejected = failure.kind else { throw error }
            throw SetStatementFailure(firstOffset: firstOffset, sqlState: failure.targetCode)
        }
    }

    /// Runs a set statement, prepared when ``preparedSets`` says so; the `(Int64, Int64)` rows
    /// it returns when `reportsRows`.
    private func run(_ query: SetStatement.Query, reportsRows: Bool, on connection: PostgresConnection) async throws -> [(Int64, Int64)] {
        // The cache holds statements of the current connection: a batch the deadline gave up on
        // may still run here on the connection it started with, after a new one replaced it.
        guard settings.preparedStatements, self.connection === connection else {
            return try await runUnnamed(query.unnamed, reportsRows: reportsRows, on: connection)
        }
        let prepared: PreparedQuery
        switch preparedSets.use(query.sql) {
        case .run(let kept):
            prepared = kept
        case .prepare:
            prepared = try await connection.prepare(query: query.sql).get()
            statementCounts.prepared += 1
            // The connection may have been replaced while this one prepared.
            if self.connection === connection {
                for closing in preparedSets.insert(prepared, for: query.sql) { try await closing.deallocate().get() }
            }
        case .sendUnnamed:
            return try await runUnnamed(query.unnamed, reportsRows: reportsRows, on: connection)
        }
        statementCounts.preparedRuns += 1
        let rows = try await prepared.execute(query.parameters.map { PostgresData(string: $0) }).get()
        guard reportsRows else { return [] }
        return try rows.map(SetStatement.Batch.reported)
    }

    private func runUnnamed(_ query: PostgresQuery, reportsRows: Bool, on connection: PostgresConnection) async throws -> [(Int64, Int64)] {
        var reported: [(Int64, Int64)] = []
        let rows = try await connection.query(query, logger: logger)
        if reportsRows {
            for try await row in rows { reported.append(try SetStatement.Batch.reported(row)) }
        } else {
            for try await _ in rows {}
        }
        return reported
    }

    private func sendSingle(
        _ row: PlannedRow, target: SetStatement.Target, on connection: PostgresConnection, phase: inout PostgresErrorClassifier.Phase
    ) async throws {
        phase = .entry(row.offset)
        statementCounts.singles += 1
        try await connection.query(SetStatement.single(row, target: target), logger: logger)
    }

    /// CREATE TABLE and/or ADD COLUMN, inside the batch's transaction.
    private func makeSchemaChange(_ change: BatchPlan.SchemaChange, on connection: PostgresConnection) async throws {
        if change.createsTable {
            let target = statementTarget
            try await connection.query(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE TABLE \(qualified(change.table)) (\(target.key) TEXT NOT NULL, \(target.org) TEXT NOT NULL, \
                        \(target.ts) TEXT NOT NULL, PRIMARY KEY (\(target.conflictColumns)))
                        """), logger: logger)
        }
        guard !change.newColumns.isEmpty else { return }
        let additions = change.newColumns.map { "ADD COLUMN \(TableMapping.quoted($0.name)) \($0.kind.sqlType)" }
        try await connection.query(
            PostgresQuery(unsafeSQL: "ALTER TABLE \(qualified(change.table)) \(additions.joined(separator: ", "))"), logger: logger)
    }

    /// The table's columns as the target has them, or nil when there is no such table.
    private func loadShape(_ table: String, on connection: PostgresConnection) async throws -> TableShape? {
        var binds = Self.binds(settings.schema)
        binds.append(table)
        let rows = try await connection.query(
            PostgresQuery(
                unsafeSQL: """
                    SELECT c.column_name::text, c.udt_name::text,
                           c.column_default IS NOT NULL OR c.is_identity = 'YES' OR c.is_generated = 'ALWAYS'
                           OR EXISTS (SELECT 1 FROM information_schema.domains d
                                      WHERE d.domain_schema = c.domain_schema AND d.domain_name = c.domain_name
                                        AND d.domain_default IS NOT NULL)
                    FROM information_schema.columns c WHERE c.table_schema = $1 AND c.table_name = $2
                    """, binds: binds), logger: logger)
        var shape = TableShape(columns: [:])
        for try await (name, udtName, filled) in rows.decode((String, String, Bool).self) {
            shape.columns[name] = ColumnKind(udtName: udtName)
            if filled { shape.defaulted.insert(name) }
            if udtName == "json" { shape.plainJSON.insert(name) }
        }
        return shape.columns.isEmpty ? nil : shape
    }

    /// Inside a transaction: this link's stored position, its row locked for the rest of the
    /// transaction (so two brokers never interleave batches of one link). A missing row is
    /// inserted empty first: two first batches then wait for each other on it as well, instead
    /// of both applying and the second overwriting the first's position.
    private func lockAppliedPosition(_ connection: PostgresConnection) async throws -> AppliedPosition? {
        if let row = try await readAppliedPositionRow(connection, lock: true) { return try position(of: row) }
        try await connection.query(
            PostgresQuery(
                unsafeSQL: "INSERT INTO \(offsetsTable) (link, updated_at) VALUES ($1, now()) ON CONFLICT (link) DO NOTHING",
                binds: Self.binds(linkName)),
            logger: logger)
        return try await readAppliedPositionRow(connection, lock: true).flatMap { try position(of: $0) }
    }

    /// This link's stored position, read without a lock.
    private func readAppliedPosition(_ connection: PostgresConnection) async throws -> AppliedPosition? {
        try await readAppliedPositionRow(connection, lock: false).flatMap { try position(of: $0) }
    }

    private typealias PositionRow = (offset: Int64?, streamID: String?, epoch: Int64?, ownerEpoch: Int64?)

    private func readAppliedPositionRow(_ connection: PostgresConnection, lock: Bool) async throws -> PositionRow? {
        let rows = try await connection.query(
            PostgresQuery(
                unsafeSQL: "SELECT applied_offset, stream_id, epoch, owner_epoch FROM \(offsetsTable) WHERE link = $1\(lock ? " FOR UPDATE" : "")",
                binds: Self.binds(linkName)),
            logger: logger)
        var row: PositionRow?
        for try await values in rows.decode((Int64?, String?, Int64?, Int64?).self) { row = values }
        return row
    }

    /// A row's position, checked: a value that cannot be a position is a connection failure (the
    /// link suspends rather than guess). A row without an offset (inserted empty by a batch that
    /// had not committed) holds no position.
    private func position(of row: PositionRow) throws -> AppliedPosition? {
        guard let offset = row.offset else { return nil }
        let ownerEpoch = row.ownerEpoch ?? 0
        guard ownerEpoch >= 0 else {
            throw AdapterError.connection("orgsync_offsets holds a negative owner_epoch (\(ownerEpoch)) for link \(linkName)")
        }
        guard offset >= 0 else {
            throw AdapterError.connection("orgsync_offsets holds a negative applied_offset (\(offset)) for link \(linkName)")
        }
        switch (row.streamID, row.epoch) {
        case (nil, nil):
            return AppliedPosition(identity: nil, offset: Offset(UInt64(offset)), ownerEpoch: UInt64(ownerEpoch))
        case (let id?, let epoch?) where epoch >= 1 && !id.isEmpty:
            return AppliedPosition(
                identity: StreamIdentity(streamID: id, epoch: UInt64(epoch)), offset: Offset(UInt64(offset)), ownerEpoch: UInt64(ownerEpoch))
        default:
            throw AdapterError.connection("orgsync_offsets holds an incomplete stream identity for link \(linkName)")
        }
    }

    private func writePosition(_ position: AppliedPosition, on connection: PostgresConnection) async throws {
        guard let offset = Int64(exactly: position.offset.rawValue) else {
            throw AdapterError.connection("position \(position) does not fit a BIGINT")
        }
        var binds = Self.binds(linkName)
        binds.append(offset)
        binds.append(position.identity?.streamID)
        binds.append(position.identity.map { Int64(clamping: $0.epoch) })
        guard let ownerEpoch = Int64(exactly: position.ownerEpoch) else {
            throw AdapterError.connection("owner epoch \(position.ownerEpoch) does not fit a BIGINT")
        }
        binds.append(ownerEpoch)
        try await connection.query(
            PostgresQuery(
                unsafeSQL: """
                    INSERT INTO \(offsetsTable) (link, applied_offset, updated_at, stream_id, epoch, owner_epoch) VALUES ($1, $2, now(), $3, $4, $5)
                    ON CONFLICT (link) DO UPDATE SET applied_offset = EXCLUDED.applied_offset, updated_at = EXCLUDED.updated_at,
                        stream_id = EXCLUDED.stream_id, epoch = EXCLUDED.epoch, owner_epoch = EXCLUDED.owner_epoch
                    """, binds: binds), logger: logger)
    }

    // MARK: Connection

    private var statementTarget: SetStatement.Target {
        SetStatement.Target(schema: settings.schema, primaryKey: settings.primaryKey, own: settings.ownColumns)
    }

    private func qualified(_ table: String) -> String {
        TableMapping.quoted(settings.schema) + "." + TableMapping.quoted(table)
    }

    private static func binds(_ text: String) -> PostgresBindings {
        var binds = PostgresBindings(capacity: 2)
        binds.append(text)
        return binds
    }

    private func connectedOrConnect() async throws -> PostgresConnection {
        if let connection, !connection.isClosed { return connection }
        return try await connect()
    }

    private func connect() async throws -> PostgresConnection {
        await dropConnection()
        connectionCount += 1
        do {
            let connection = try await PostgresConnector.connect(
                settings: settings, applicationName: "orgsync:" + String(linkName.prefix(50)),
                startupParameters: [("statement_timeout", String(settings.queryTimeoutMs))] + Self.batchSessionParameters,
                connectTimeoutMs: settings.connectTimeoutMs, id: connectionCount, logger: logger)
            self.connection = connection
            if let origin = settings.replicationOrigin { try await Self.tagSession(connection, origin: origin, logger: logger) }
            try await openLivenessConnection()
            return connection
        } catch {
            throw PostgresErrorClassifier.classify(error, phase: .session, context: "\(endpoint): connect")
        }
    }

    /// Opens the liveness check's connection with the call's, outside any call: a check made
    /// while a batch is in flight then only asks `SELECT 1` (a new connection's authentication
    /// on a loaded machine can take longer than `liveness_timeout_ms`, and a live server must
    /// not look dead). Each link holds two connections while the check is on.
    /// Marks every transaction of this connection with the replication origin `origin`
    /// (created if missing), so that a capture source reading this database skips what the link
    /// applied: no echo when two databases are each other's source. Needs superuser (or the
    /// `pg_replication_origin_*` functions granted).
    static func tagSession(_ connection: PostgresConnection, origin: String, logger: Logger) async throws {
        _ = try await connection.query(
            "SELECT pg_replication_origin_create(\(origin)) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = \(origin))",
            logger: logger
        ).collect()
        _ = try await connection.query("SELECT pg_replication_origin_session_setup(\(origin))", logger: logger).collect()
    }

    private func openLivenessConnection() async throws {
        guard settings.livenessIntervalMs > 0, livenessConnection.get() == nil else { return }
        do {
            livenessConnection.set(
                try await LivenessWatch.connect(
                    settings: settings, linkName: linkName, logger: logger, timeoutMs: settings.connectTimeoutMs))
        } catch {
            await dropConnection()
            throw error
        }
    }

    private func dropConnection() async {
        preparedSets = PreparedStatementCache()
        guard let connection else { return }
        self.connection = nil
        try? await connection.close()
    }

    /// Ends a batch whose entry was rejected, within `query_timeout_ms` like every call (a
    /// ROLLBACK on a connection that died meanwhile may never be answered).
    private func rollback(_ connection: PostgresConnection) async {
        do {
            _ = try await withDeadline(connection) { try await connection.query("ROLLBACK", logger: self.logger) }
        } catch {
            // The session is in doubt; the next call reconnects.
            await dropConnection()
        }
    }

    /// Runs `body` with `query_timeout_ms` as its deadline. When the deadline passes the call
    /// fails with a connection error at once and the connection is closed; the body is
    /// abandoned rather than awaited, because a query sent on a connection that died under it
    /// may never return (postgres-nio does not always fail it), and a link must never hang.
    private func withDeadline<T: Sendable>(
        _ connection: PostgresConnection, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let timeoutMs = settings.queryTimeoutMs
        let endpoint = self.endpoint
        let gate = ResumeOnce<T>()
        let liveness = LivenessWatch(settings: settings, linkName: linkName, logger: logger, connection: livenessConnection)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                gate.install(continuation)
                let timer = Task {
                    try await Task.sleep(for: .milliseconds(timeoutMs))
                    gate.resume(.failure(AdapterError.connection("\(endpoint): no answer within query_timeout_ms=\(timeoutMs)")))
                    try? await connection.close()
                }
                // A dead server (frozen, unreachable) is noticed within about interval + timeout,
                // whatever the call's own deadline; a slow call on a live server is left alone.
                let watch = Task {
                    guard let problem = await liveness.firstProblem() else { return }
                    gate.resume(.failure(AdapterError.connection("\(endpoint): \(problem) while a call was in flight")))
                    try? await connection.close()
                }
                Task {
                    do {
                        gate.resume(.success(try await body()))
                    } catch {
                        gate.resume(.failure(error))
                    }
                    timer.cancel()
                    watch.cancel()
                }
            }
        } onCancel: {
            gate.resume(.failure(CancellationError()))
            connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
        }
    }
}

/// The phase a batch reached and the table shapes it learned, kept outside the batch's task.
private final class ApplyProgress: Sendable {
    private let state: Mutex<(phase: PostgresErrorClassifier.Phase, shapes: [String: TableShape])>
    init(shapes: [String: TableShape]) { state = Mutex((.session, shapes)) }
    var snapshot: (phase: PostgresErrorClassifier.Phase, shapes: [String: TableShape]) { state.withLock { $0 } }
    func record(phase: PostgresErrorClassifier.Phase, shapes: [String: TableShape]) { state.withLock { $0 = (phase, shapes) } }
}

/// Resumes a continuation exactly once, whichever of the work, the deadline or cancellation
/// comes first; a result that arrives before the continuation is installed is kept for it.
private final class ResumeOnce<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, pending: Result<T, any Error>?, done: Bool)>((nil, nil, false))

    func install(_ continuation: CheckedContinuation<T, any Error>) {
        let pending: Result<T, any Error>? = state.withLock { s in
            if let pending = s.pending, !s.done {
                s.done = true
                return pending
            }
            s.continuation = continuation
            return nil
        }
        if let pending { continuation.resume(with: pending) }
    }

    func resume(_ result: Result<T, any Error>) {
        let continuation: CheckedContinuation<T, any Error>? = state.withLock { s in
            guard !s.done else { return nil }
            guard let continuation = s.continuation else {
                if s.pending == nil { s.pending = result }
                return nil
            }
            s.done = true
            s.continuation = nil
            return continuation
        }
        continuation?.resume(with: result)
    }
}

/// Watches a server while a call is in flight on another connection: every
/// `liveness_interval_ms` it asks `SELECT 1` on a second connection (kept open between checks),
/// bounded by `liveness_timeout_ms`. The call's own connection cannot be asked (the protocol is
/// one exchange at a time), but a server that cannot answer the second one cannot be answering
/// the first: frozen processes, a dropped network, a dead host. A call that is slow on a live
/// server (a lock wait, a big batch) keeps going.
struct LivenessWatch: Sendable {
    let settings: PostgresAdapterSettings
    let linkName: String
    let logger: Logger
    let connection: LivenessConnection

    /// Returns the first problem found, or nil when cancelled (the call ended) or disabled.
    func firstProblem() async -> String? {
        let intervalMs = settings.livenessIntervalMs
        guard intervalMs > 0 else { return nil }
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: .milliseconds(intervalMs))
            } catch {
                return nil
            }
            if let problem = await probeOnce(), !Task.isCancelled { return problem }
        }
        return nil
    }

    /// One check, nil when the server answered. A kept connection that fails (rather than stays
    /// silent) may just be stale: one fresh connection is tried within the same bound.
    func probeOnce() async -> String? {
        let timeoutMs = settings.livenessTimeoutMs
        let deadline = ContinuousClock.now + .milliseconds(timeoutMs)
        let logger = self.logger
        if let kept = connection.get() {
            switch await bounded(by: deadline, { try await Self.selectOne(kept, logger: logger) }) {
            case .answered: return nil
            case .silent:
                connection.drop()
                return "the server did not answer a liveness check on a second connection within liveness_timeout_ms=\(timeoutMs)"
            case .failed: connection.drop()
            }
        }
        let (settings, linkName, holder) = (self.settings, self.linkName, connection)
        switch await bounded(by: deadline, {
            let fresh = try await Self.connect(settings: settings, linkName: linkName, logger: logger, timeoutMs: timeoutMs)
            // Kept (and closed by whoever replaces or drops it) before the query, so that a
            // deadline that passes meanwhile still closes it.
            holder.set(fresh)
            try await Self.selectOne(fresh, logger: logger)
        }) {
        case .answered: return nil
        case .silent:
            connection.drop()
            return "the server did not answer a liveness check on a second connection within liveness_timeout_ms=\(timeoutMs)"
        case .failed(let problem):
            connection.drop()
            return "a liveness check on a second connection failed (\(problem))"
        }
    }

    /// A connection for the check, named so that the server's activity view tells it apart.
    static func connect(settings: PostgresAdapterSettings, linkName: String, logger: Logger, timeoutMs: Int) async throws
        -> PostgresConnection
    {
        try await PostgresConnector.connect(
            settings: settings, applicationName: "orgsync-liveness:" + String(linkName.prefix(40)), connectTimeoutMs: timeoutMs,
            id: 0, logger: logger)
    }

    private static func selectOne(_ connection: PostgresConnection, logger: Logger) async throws {
        let rows = try await connection.query("SELECT 1", logger: logger)
        for try await _ in rows {}
    }

    /// A timer that fired late says this process was starved of CPU (or of threads to run its
    /// tasks on), not that the server was silent: the answer may have arrived meanwhile and be
    /// waiting to run. Before silence counts, let what is ready run (a yield), and when the timer
    /// was late by more than `lateTimerMs`, wait as long again (at most `lateGraceMaxMs`). A
    /// process that keeps time loses nothing: the check ends at its deadline.
    static func graceForLateTimer(deadline: ContinuousClock.Instant) async {
        await Task.yield()
        let late = ContinuousClock.now - deadline
        guard late > .milliseconds(lateTimerMs) else { return }
        try? await Task.sleep(for: min(late, .milliseconds(lateGraceMaxMs)))
        await Task.yield()
    }

    static let lateTimerMs = 100
    static let lateGraceMaxMs = 1_000

    enum Outcome: Sendable {
        case answered
        case silent
        case failed(String)
    }

    /// Runs `work` until `deadline`: never cancelled (a connection dropped mid-connect by
    /// cancellation is never closed); past the deadline the caller drops the connection, which
    /// ends a query that waits for its answer.
    private func bounded(by deadline: ContinuousClock.Instant, _ work: @escaping @Sendable () async throws -> Void) async -> Outcome {
        let gate = ResumeOnce<Outcome>()
        let outcome = try? await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Outcome, any Error>) in
            gate.install(continuation)
            Task {
                do {
                    try await work()
                    gate.resume(.success(.answered))
                } catch {
                    gate.resume(.success(.failed(String(String(describing: error).prefix(200)))))
                }
            }
            Task {
                try? await Task.sleep(until: deadline, clock: .continuous)
                await Self.graceForLateTimer(deadline: deadline)
                gate.resume(.success(.silent))
            }
        }
        return outcome ?? .silent
    }
}

/// The liveness check's connection, kept between checks; closed when dropped or replaced.
final class LivenessConnection: Sendable {
    private let state = Mutex<PostgresConnection?>(nil)

    deinit { drop() }

    func get() -> PostgresConnection? {
        state.withLock { $0.flatMap { $0.isClosed ? nil : $0 } }
    }

    func set(_ connection: PostgresConnection) {
        let old = state.withLock { state -> PostgresConnection? in
            defer { state = connection }
            return state
        }
        if let old, old !== connection { Self.close(old) }
    }

    func drop() {
        let old = state.withLock { state -> PostgresConnection? in
            defer { state = nil }
            return state
        }
        if let old { Self.close(old) }
    }

    /// Closes `connection` and keeps it alive until its channel is closed (postgres-nio asserts
    /// that a connection is closed, not just closing, when it goes).
    private static func close(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }
}
