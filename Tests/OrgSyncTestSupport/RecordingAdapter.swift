import OrgSyncCore
import OrgSyncPluginAPI
import Synchronization

/// One call an adapter received, for scripts deciding its outcome.
public enum AdapterCall: Sendable {
    case open
    case apply(EntryBatch)
    case probe
    case appliedPosition
    case setAppliedPosition(AppliedPosition?)
}

/// What a scripted target does with a call.
public enum ScriptedOutcome: Sendable, Equatable {
    case proceed
    case fail(AdapterError)
    /// Commit the batch, then lose the acknowledgement (throw). Only meaningful for `apply`.
    case commitThenFail(AdapterError)
}

/// Decides the outcome of each adapter call (a scripted flaky target).
public protocol TargetScript: Sendable {
    func outcome(for call: AdapterCall) -> ScriptedOutcome
}

/// An ``OrgAdapter`` that records every applied entry, keeps an applied offset like the SQL
/// adapters do (one "transaction" for data and offset), and fails as scripted: manually
/// (``setDown(_:)``, ``reject(_:)``, ``failNextApplies(_:)``) or through a ``TargetScript``.
///
/// It also checks the contract from the link's side: after a connection failure the link must
/// call `open()` before anything else (`callsWhileClosedCount` counts violations).
public final class RecordingAdapter: OrgAdapter {
    public struct Target: Sendable {
        /// Every entry committed, in commit order (duplicates stay: they are what tests look for).
        public var applied: [Entry] = []
        /// The position stored "in the target", written with each commit like the SQL adapters do.
        public var appliedPosition: AppliedPosition?
        public var appliedOffset: Offset? { appliedPosition?.offset }
        public var isOpen = false
        public var openCount = 0
        public var probeCount = 0
        public var closeCount = 0
        public var applyCallCount = 0
        public var callsWhileClosedCount = 0
        public var releaseMemoryCount = 0
    }

    private struct Behavior {
        var down = false
        var rejectedOffsets: Set<Offset> = []
        var queuedApplyFailures: [AdapterError] = []
        var lostAcknowledgementCount = 0
    }

    public let target = Observed(Target())
    private let behavior = Mutex(Behavior())
    private let keepsAppliedOffset: Bool
    private let script: (any TargetScript)?

    public init(keepsAppliedOffset: Bool = true, script: (any TargetScript)? = nil) {
        self.keepsAppliedOffset = keepsAppliedOffset
        self.script = script
    }

    // MARK: - Scripting

    public func setDown(_ down: Bool) { behavior.withLock { $0.down = down } }
    public func reject(_ offsets: Set<Offset>) { behavior.withLock { $0.rejectedOffsets.formUnion(offsets) } }
    public func accept(_ offsets: Set<Offset>) { behavior.withLock { $0.rejectedOffsets.subtract(offsets) } }
    /// The next applies fail with these errors, one each, before anything else is checked.
    public func failNextApplies(_ errors: [AdapterError]) { behavior.withLock { $0.queuedApplyFailures += errors } }

    /// The next `count` applies commit, then fail with a connection error (the answer is lost).
    public func loseNextAcknowledgements(_ count: Int) { behavior.withLock { $0.lostAcknowledgementCount += count } }

    public var appliedOffsets: [Offset] { target.update { $0.applied.map(\.offset) } }

    // MARK: - OrgAdapter

    public func open() async throws {
        try check(.open, needsOpen: false)
        target.update {
            $0.isOpen = true
            $0.openCount += 1
        }
    }

    public func apply(_ batch: EntryBatch) async throws {
        target.update { $0.applyCallCount += 1 }
        let queued = behavior.withLock { $0.queuedApplyFailures.isEmpty ? nil : $0.queuedApplyFailures.removeFirst() }
        if let queued { throw lose(queued) }
        let loseAcknowledgement = behavior.withLock { behavior -> Bool in
            guard behavior.lostAcknowledgementCount > 0 else { return false }
            behavior.lostAcknowledgementCount -= 1
            return true
        }
        if keepsAppliedOffset {
            switch StoredPositionVerdict.decide(stored: target.value.appliedPosition, batch: batch) {
            case .conflict(let reason): throw AdapterError.positionConflict(reason)
            case .fenced(let reason): throw AdapterError.fenced(reason)
            case .apply: break
            }
        }
        switch try scriptedOutcome(.apply(batch), needsOpen: true) {
        case .commitThenFail(let error):
            commit(batch)
            throw lose(error)
        case .fail(let error):
            throw lose(error)
        case .proceed:
            break
        }
        let rejected = behavior.withLock { $0.rejectedOffsets }
        if let first = batch.entries.first(where: { rejected.contains($0.offset) }) {
            throw AdapterError.rejected(offset: first.offset, "scripted rejection", targetCode: "23514")
        }
        commit(batch)
        if loseAcknowledgement { throw lose(AdapterError.connection("acknowledgement lost")) }
    }

    public func probe() async throws {
        try check(.probe, needsOpen: true)
        target.update { $0.probeCount += 1 }
    }

    public func appliedPosition() async throws -> AppliedPosition? {
        try check(.appliedPosition, needsOpen: true)
        return keepsAppliedOffset ? target.value.appliedPosition : nil
    }

    public func setAppliedPosition(_ position: AppliedPosition?) async throws {
        try check(.setAppliedPosition(position), needsOpen: true)
        if keepsAppliedOffset { target.update { $0.appliedPosition = position } }
    }

    /// Stores a position as if another writer had (a target fed from another stream, say).
    public func storePosition(_ position: AppliedPosition?) { target.update { $0.appliedPosition = position } }

    public func close() async {
        target.update {
            $0.isOpen = false
            $0.closeCount += 1
        }
    }

    public func releaseMemory() async { target.update { $0.releaseMemoryCount += 1 } }

    // MARK: - Helpers

    private func commit(_ batch: EntryBatch) {
        target.update {
            $0.applied += batch.entries
            $0.appliedPosition = StoredPositionVerdict.positionAfter(batch, stored: $0.appliedPosition)
        }
    }

    private func check(_ call: AdapterCall, needsOpen: Bool) throws {
        if case .fail(let error) = try scriptedOutcome(call, needsOpen: needsOpen) { throw lose(error) }
    }

    private func scriptedOutcome(_ call: AdapterCall, needsOpen: Bool) throws -> ScriptedOutcome {
        if needsOpen, !target.update({ $0.isOpen }) {
            target.update { $0.callsWhileClosedCount += 1 }
            throw AdapterError.connection("not open")
        }
        if behavior.withLock({ $0.down }) { throw lose(AdapterError.connection("target down", targetCode: "08006")) }
        return script?.outcome(for: call) ?? .proceed
    }

    /// A connection error ends the session: the link must open again.
    private func lose(_ error: AdapterError) -> AdapterError {
        if case .connection = error.kind { target.update { $0.isOpen = false } }
        return error
    }
}
