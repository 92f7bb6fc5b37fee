#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import OrgSyncLog
import OrgSyncPluginAPI

/// The working side of one link: it reads the stream from the cursor, applies batches through the
/// adapter, commits the cursor, dead-letters rejected entries, retries dead letters and rewrites
/// the target's position for an operator. It decides nothing about the link's state: it reports
/// what happened, and its ``LinkSupervisor`` turns that into events of the state machine and
/// performs the machine's actions.
///
/// Owned by one supervisor and used only on its actor: every async method runs on the caller's
/// executor (`nonisolated(nonsending)`), so the link's state needs no lock and its adapter calls
/// never overlap (one task, the supervisor's `run()`, makes them).
final class Link {
    let name: String
    let source: any LinkEntrySource
    let adapter: any OrgAdapter
    let cursorStore: any LinkCursorStore
    let deadLetters: DeadLetters
    let observer: (any LinkObserver)?
    let wallClockMs: @Sendable () -> UInt64
    /// The owner epoch every batch and stored position carries (``EntryBatch/ownerEpoch``): 0 on a
    /// standalone broker.
    let ownerEpoch: UInt64
    /// Where dead letters are written and fsynced: off the cooperative pool.
    private let files: BlockingFileQueue

    /// The next offset to apply; moves only in ``storeCursor(_:)`` and ``rewritePosition(_:)``.
    private(set) var cursor: Offset = 0
    private(set) var adapterOpen = false
    /// Entries the target applied since the link started.
    private(set) var appliedCount: UInt64 = 0

    init(
        name: String, source: any LinkEntrySource, adapter: any OrgAdapter, cursorStore: any LinkCursorStore,
        deadLetters: DeadLetters, observer: (any LinkObserver)?, wallClockMs: @escaping @Sendable () -> UInt64,
        ownerEpoch: UInt64 = 0
    ) {
        self.ownerEpoch = ownerEpoch
        self.name = name
        self.source = source
        self.adapter = adapter
        self.cursorStore = cursorStore
        self.deadLetters = deadLetters
        self.observer = observer
        self.wallClockMs = wallClockMs
        files = BlockingFileQueue(label: "orgsync.link.\(name)")
    }

    var streamName: String { source.streamName }

    /// The stream's id and current epoch, which every batch carries.
    nonisolated(nonsending) func identity() async -> StreamIdentity {
        let lineage = await source.lineage()
        return StreamIdentity(streamID: lineage.streamID, epoch: lineage.currentEpoch)
    }

    // MARK: - Cursor

    /// Loads the stored cursor (0 without one).
    ///
    /// - Throws: ``LinkSupervisorError/cursorBeyondEnd(link:cursor:endOffset:)`` when it is past
    ///   the stream's end (the log lost data, or the cursor is not this stream's);
    ///   ``LinkStoreUnavailable`` when a store kept elsewhere cannot answer now; the store's error.
    nonisolated(nonsending) func loadCursor() async throws {
        let stored = try await cursorStore.load(link: name) ?? 0
        let end = try await source.checkedEndOffset()
        guard stored <= end else { throw LinkSupervisorError.cursorBeyondEnd(link: name, cursor: stored, endOffset: end) }
        cursor = stored
    }

    /// The only place the cursor moves forward; it only grows.
    nonisolated(nonsending) func storeCursor(_ next: Offset) async throws {
        guard next > cursor else { return }
        try await cursorStore.store(link: name, offset: next)
        cursor = next
    }

    // MARK: - The adapter

    nonisolated(nonsending) func openAdapter() async throws {
        guard !adapterOpen else { return }
        try await adapter.open()
        adapterOpen = true
    }

    nonisolated(nonsending) func closeAdapter() async {
        await adapter.close()
        adapterOpen = false
    }

    /// Opens the adapter if needed and probes the target; tells the observer either way.
    nonisolated(nonsending) func probe() async throws {
        do {
            try await openAdapter()
            try await adapter.probe()
            observer?.didProbe(link: name, stream: streamName, answered: true)
        } catch {
            if !Task.isCancelled { observer?.didProbe(link: name, stream: streamName, answered: false) }
            throw error
        }
    }

    nonisolated(nonsending) func releaseMemory() async {
        await adapter.releaseMemory()
    }

    /// The position the target stores (opening the adapter if needed).
    ///
    /// - Throws: the adapter's error: the target failed.
    nonisolated(nonsending) func storedPosition() async throws -> AppliedPosition? {
        try await openAdapter()
        return try await adapter.appliedPosition()
    }

    /// Exactly-once: a target that committed a batch whose acknowledgement was lost says so
    /// through its stored position, and the link starts after it — but only when that position
    /// belongs to this stream as it is now (``LinkStartPosition``). Stores the cursor the
    /// decision starts at.
    ///
    /// - Throws: the cursor store's error.
    nonisolated(nonsending) func decideStart(stored: AppliedPosition?) async throws -> LinkStartPosition {
        let lineage = await source.lineage()
        let end = await source.endOffset()
        let decision = LinkStartPosition.decide(
            stored: stored, cursor: cursor, endOffset: end, lineage: lineage, deadLetterOffsets: deadLetters.offsets)
        if case .startAt(let offset, _) = decision { try await storeCursor(offset) }
        return decision
    }

    // MARK: - Consuming

    /// Up to `maxCount` entries from the cursor, checked to be dense; empty when caught up.
    ///
    /// - Throws: ``LinkSupervisorError/sourceOutOfOrder(link:expected:got:)``; the source's error.
    nonisolated(nonsending) func readBatch(maxCount: Int) async throws -> [Entry] {
        let start = cursor
        let entries = try await source.read(from: start, maxCount: maxCount)
        for (index, entry) in entries.enumerated() where entry.offset != Offset(start.rawValue + UInt64(index)) {
            throw LinkSupervisorError.sourceOutOfOrder(link: name, expected: Offset(start.rawValue + UInt64(index)), got: entry.offset)
        }
        return entries
    }

    /// What became of a batch.
    enum BatchOutcome {
        /// Applied and committed.
        case committed
        /// The target rejected `entry`; the entries before it are applied and committed
        /// (`committedBefore` of them). The rejected entry is not handled yet.
        case rejected(Entry, AdapterError, committedBefore: Int)
        /// A connection failure (or an error that is not an ``AdapterError``); nothing committed.
        case failed(String)
        /// The adapter found a stored position from another stream or a later epoch.
        case diverged(String)
        /// The adapter found a stored position of a later owner: this member lost the link.
        case fenced(String)
        /// Given up at a retryable failure (`retry` said no), or cancelled.
        case abandoned
    }

    /// Applies `entries` and commits them; on a rejection, applies and commits the entries before
    /// the rejected one. At a retryable failure it asks `retry` (the supervisor: the state
    /// machine's backoff) and applies the same entries again when it answers true.
    nonisolated(nonsending) func applyAndCommit(
        _ entries: [Entry], retry: (_ reason: String) async -> Bool
    ) async throws -> BatchOutcome {
        var batch = entries
        var rejection: (entry: Entry, error: AdapterError)?
        while let first = batch.first, let last = batch.last {
            switch await applyOnce(batch, retry: retry) {
            case .applied:
                try await commit(batch)
                batch = []
            case .rejected(let offset, let error):
                guard let index = batch.firstIndex(where: { $0.offset == offset }) else {
                    return .failed("adapter rejected offset \(offset), outside batch \(first.offset)...\(last.offset): \(error)")
                }
                rejection = (batch[index], error)
                batch = Array(batch[..<index])
            case .ended(let outcome):
                return outcome
            }
        }
        guard let rejection, let start = entries.first?.offset else { return .committed }
        return .rejected(rejection.entry, rejection.error, committedBefore: Int(rejection.entry.offset.rawValue - start.rawValue))
    }

    /// One attempt at a batch, as ``applyOnce(_:retry:)`` reports it.
    private enum Attempt {
        case applied
        case rejected(Offset, AdapterError)
        case ended(BatchOutcome)
    }

    /// Applies `entries` (again after retryable failures while `retry` allows).
    private nonisolated(nonsending) func applyOnce(
        _ entries: [Entry], retry: (_ reason: String) async -> Bool
    ) async -> Attempt {
        let batch = EntryBatch(stream: streamName, identity: await identity(), entries: entries, ownerEpoch: ownerEpoch)
        while true {
            do {
                let started = ContinuousClock.now
                try await adapter.apply(batch)
                observer?.didApply(link: name, stream: streamName, entryCount: entries.count, duration: ContinuousClock.now - started)
                return .applied
            } catch let error as AdapterError {
                switch error.kind {
                case .connection: return .ended(.failed(error.description))
                case .positionConflict: return .ended(.diverged(error.message))
                case .fenced: return .ended(.fenced(error.message))
                case .rejected(let offset): return .rejected(offset, error)
                case .retryable:
                    guard await retry(error.description) else { return .ended(.abandoned) }
                }
            } catch {
                return .ended(Task.isCancelled ? .abandoned : .failed("\(error)"))
            }
        }
    }

    private nonisolated(nonsending) func commit(_ entries: [Entry]) async throws {
        guard let last = entries.last else { return }
        try await storeCursor(last.offset.next)
        appliedCount += UInt64(entries.count)
    }

    /// Stores a rejected entry in the dead letters (durably), then moves the cursor past it.
    /// `recorded` runs between the two (the sync log's line for it).
    nonisolated(nonsending) func deadLetter(_ entry: Entry, _ error: AdapterError, recorded: () -> Void) async throws {
        let json = String(decoding: entry.raw.isEmpty ? Array(entry.jsonData()) : entry.raw, as: UTF8.self)
        try await putDeadLetter(DeadLetter(offset: entry.offset, entryJSON: json, error: error.message,
                                           targetCode: error.targetCode, failedAtMs: wallClockMs()))
        recorded()
        try await storeCursor(entry.offset.next)
    }

    private nonisolated(nonsending) func putDeadLetter(_ letter: DeadLetter) async throws {
        let deadLetters = deadLetters
        try await files.run { try deadLetters.put(letter) }
    }

    // MARK: - For operators

    /// Applies a dead-lettered entry again, alone; on success its status becomes `resolved`.
    /// `record` writes the sync log's line for the outcome (event, reason, status, target code).
    ///
    /// - Throws: ``LinkSupervisorError`` (no such dead letter, already resolved, unreadable, or
    ///   the retry failed with the target's answer); the dead letters' storage error.
    nonisolated(nonsending) func retryDeadLetter(
        _ offset: Offset, record: (SyncLogEvent, String, EntryStatus, String?) -> Void
    ) async throws -> DeadLetter {
        guard var letter = deadLetters.letter(at: offset) else { throw LinkSupervisorError.deadLetterNotFound(link: name, offset: offset) }
        guard letter.status == .failed else { throw LinkSupervisorError.deadLetterAlreadyResolved(link: name, offset: offset) }
        let entry: Entry
        do {
            entry = try Entry.parse(Array(letter.entryJSON.utf8), offset: offset)
        } catch {
            throw LinkSupervisorError.deadLetterUnreadable(link: name, offset: offset, problem: error.description)
        }
        letter.attemptCount += 1
        if let error = await applyAlone(entry) {
            if case .rejected = error.kind {
                letter.error = error.message
                letter.targetCode = error.targetCode
                try await putDeadLetter(letter)
                record(.entryFailed, "retry \(letter.attemptCount) rejected: \(error.message)", .failed, error.targetCode)
            }
            throw LinkSupervisorError.retryFailed(link: name, offset: offset, error: error)
        }
        letter.status = .resolved
        letter.resolvedAtMs = wallClockMs()
        try await putDeadLetter(letter)
        record(.entryResolved, "applied on attempt \(letter.attemptCount)", .resolved, nil)
        return letter
    }

    /// nil on success.
    private nonisolated(nonsending) func applyAlone(_ entry: Entry) async -> AdapterError? {
        do {
            try await openAdapter()
            let started = ContinuousClock.now
            try await adapter.apply(EntryBatch(stream: streamName, identity: await identity(), entries: [entry], isDeadLetterRetry: true, ownerEpoch: ownerEpoch))
            observer?.didApply(link: name, stream: streamName, entryCount: 1, duration: ContinuousClock.now - started)
            return nil
        } catch let error as AdapterError {
            return error
        } catch {
            return AdapterError.connection("\(error)")
        }
    }

    /// Rewrites where the link stands, in the target (its stored position, in its own
    /// transaction) and in the cursor: replay from an offset, or adopt the target's position as
    /// this stream's. Returns the new cursor, the target's new position and the sync log's reason.
    ///
    /// - Throws: ``LinkSupervisorError/cursorChangeRefused(link:reason:)`` (past the end, nothing
    ///   to adopt); ``LinkSupervisorError/targetFailed(link:reason:)``; the cursor store's error.
    nonisolated(nonsending) func rewritePosition(
        _ change: PositionChange
    ) async throws -> (cursor: Offset, position: AppliedPosition?, reason: String) {
        let end = await source.endOffset()
        let identity = await identity()
        let position: AppliedPosition?
        let next: Offset
        let reason: String
        switch change {
        case .reset(let from):
            guard from <= end else {
                throw LinkSupervisorError.cursorChangeRefused(link: name, reason: "offset \(from) is beyond the stream's end \(end)")
            }
            position = from.rawValue == 0 ? nil : AppliedPosition(identity: identity, offset: Offset(from.rawValue - 1), ownerEpoch: ownerEpoch)
            next = from
            reason = "reset by operator to consume from offset \(from) (cursor was \(cursor)); the target's position is now "
                + (position?.description ?? "none")
        case .adopt:
            let stored = try await onTarget { try await self.adapter.appliedPosition() }
            guard let stored else {
                throw LinkSupervisorError.cursorChangeRefused(link: name, reason: "the target holds no position to adopt; reset the link to an offset instead")
            }
            guard stored.offset < end else {
                throw LinkSupervisorError.cursorChangeRefused(link: name, reason:
                    "the target's position (\(stored)) is at or past the stream's end \(end): adopting it would skip entries not yet appended; reset the link to an offset instead")
            }
            position = AppliedPosition(identity: identity, offset: stored.offset, ownerEpoch: ownerEpoch)
            next = stored.offset.next
            reason = "the target's position (\(stored)) adopted by operator for \(identity); consuming from \(next)"
        }
        try await onTarget { try await self.adapter.setAppliedPosition(position) }
        try await cursorStore.store(link: name, offset: next)
        cursor = next
        return (next, position, reason)
    }

    /// Runs an adapter call for an operator's request, opening the adapter first.
    private nonisolated(nonsending) func onTarget<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            try await openAdapter()
            return try await body()
        } catch {
            throw LinkSupervisorError.targetFailed(link: name, reason: Link.describe(error))
        }
    }

    static func describe(_ error: any Error) -> String {
        (error as? AdapterError)?.description ?? "connection: \(error)"
    }
}
