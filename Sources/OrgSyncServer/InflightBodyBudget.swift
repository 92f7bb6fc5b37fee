import OrgSyncBroker
/// The broker-wide budget of request-body bytes held in memory (`server.inflight_body_bytes_max`):
/// which reservations are granted now, which wait, and which waiters a release lets in. A value
/// with no I/O and no clock; ``InflightBodyBudget`` performs its decisions.
///
/// Invariants: `reservedBytes <= bytesMax`; waiters are granted in arrival order (a large body is
/// not starved by a stream of small ones), so a waiter is granted only when every earlier one was.
struct BodyBudgetState {
    let bytesMax: Int
    private(set) var reservedBytes = 0
    private(set) var waiting: [(id: Int, bytes: Int)] = []

    init(bytesMax: Int) { self.bytesMax = bytesMax }

    enum Decision: Equatable {
        case granted
        /// More than the whole budget: can never be granted.
        case refused
        case wait
    }

    /// Reserves `bytes` now when they fit and nobody is waiting; else `id` waits.
    mutating func reserve(id: Int, bytes: Int) -> Decision {
        guard bytes <= bytesMax else { return .refused }
        if waiting.isEmpty && reservedBytes + bytes <= bytesMax {
            reservedBytes += bytes
            return .granted
        }
        waiting.append((id, bytes))
        return .wait
    }

    /// Returns `bytes` to the budget; the waiters granted by it, in order.
    mutating func release(_ bytes: Int) -> [Int] {
        reservedBytes = max(0, reservedBytes - bytes)
        return grantWaiters()
    }

    /// Waiter `id` gives up (its wait is over): true if it was still waiting. Its leaving may let
    /// later (smaller) waiters in; they are returned in `granted`.
    mutating func cancel(id: Int) -> (wasWaiting: Bool, granted: [Int]) {
        guard let index = waiting.firstIndex(where: { $0.id == id }) else { return (false, []) }
        waiting.remove(at: index)
        return (true, grantWaiters())
    }

    private mutating func grantWaiters() -> [Int] {
        var granted: [Int] = []
        while let first = waiting.first, reservedBytes + first.bytes <= bytesMax {
            waiting.removeFirst()
            reservedBytes += first.bytes
            granted.append(first.id)
        }
        return granted
    }
}

/// Request-body bytes in flight across every request of the broker. A request reserves the
/// bytes it is about to hold before reading them and releases them once answered; when the
/// budget is spent it waits at most `waitMax` for room, then is refused (the route answers 503
/// with `Retry-After`).
public actor InflightBodyBudget {
    private var state: BodyBudgetState
    private var waiters: [Int: CheckedContinuation<Bool, Never>] = [:]
    private var nextID = 0
    /// Tasks waiting for `reservedBytes` to reach a level (``waitUntilReserved(atLeast:)``).
    private var observers: [(bytes: Int, continuation: CheckedContinuation<Void, Never>)] = []
    /// The longest a reservation waits for room.
    public nonisolated let waitMax: Duration

    public init(bytesMax: Int, waitMax: Duration = .seconds(1)) {
        state = BodyBudgetState(bytesMax: bytesMax)
        self.bytesMax = bytesMax
        self.waitMax = waitMax
    }

    public nonisolated let bytesMax: Int
    public var reservedBytes: Int { state.reservedBytes }

    /// Reserves `bytes`, waiting at most `waitMax` for room. False: not granted (nothing reserved).
    public func reserve(_ bytes: Int) async -> Bool {
        guard bytes > 0 else { return true }
        let id = nextID
        nextID += 1
        switch state.reserve(id: id, bytes: bytes) {
        case .granted:
            notifyObservers()
            return true
        case .refused: return false
        case .wait: break
        }
        let waitMax = waitMax
        let timeout = Task { [weak self] in
            try? await Task.sleep(for: waitMax)
            await self?.giveUp(id)
        }
        let granted = await withCheckedContinuation { waiters[id] = $0 }
        timeout.cancel()
        return granted
    }

    /// Returns bytes reserved earlier.
    public func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        resume(state.release(bytes))
        // Large bodies leave their pages with the allocator; once no body has been held for a
        // moment, give them back to the system so the broker returns near its resting size.
        if state.reservedBytes == 0, bytes >= Self.trimAfterBytesMin { scheduleTrim() }
    }

    /// Releases of at least this many bytes give freed memory back to the system.
    static let trimAfterBytesMin = 1 << 20
    /// How long the budget stays empty before freed memory is given back: what a request frees
    /// after its release (its response, its connection's buffers) is freed by then too, and a
    /// burst of requests trims once, not once per request.
    static let trimQuietPeriodMs = 200
    /// And once more this long after, if the budget is still empty: pages a connection's
    /// buffers or the log's write path free later than the first trim would otherwise stay
    /// with the allocator until the next large body (the CI run's request-body memory test
    /// once ended 65 MiB above its start with nothing in flight).
    static let trimAgainAfterMs = 2_000
    private var trimScheduled = false

    private func scheduleTrim() {
        guard !trimScheduled else { return }
        trimScheduled = true
        Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Self.trimQuietPeriodMs))
            guard await self?.trimIfStillEmpty() == true else { return }
            try? await Task.sleep(for: .milliseconds(Self.trimAgainAfterMs))
            await self?.trimAgainIfStillEmpty()
        }
    }

    /// True when it trimmed.
    private func trimIfStillEmpty() -> Bool {
        trimScheduled = false
        // A body reserved meanwhile schedules the next trim when it is released.
        guard state.reservedBytes == 0 else { return false }
        FreedMemory.giveBack()
        return true
    }

    private func trimAgainIfStillEmpty() {
        // A trim scheduled meanwhile (a body came and went) does this itself.
        guard !trimScheduled, state.reservedBytes == 0 else { return }
        FreedMemory.giveBack()
    }

    private func giveUp(_ id: Int) {
        let (wasWaiting, granted) = state.cancel(id: id)
        if wasWaiting { waiters.removeValue(forKey: id)?.resume(returning: false) }
        resume(granted)
    }

    private func resume(_ granted: [Int]) {
        for id in granted { waiters.removeValue(forKey: id)?.resume(returning: true) }
        notifyObservers()
    }

    /// Returns once at least `bytes` are reserved (for tests and diagnostics: an event to wait
    /// on rather than a sleep).
    func waitUntilReserved(atLeast bytes: Int) async {
        guard state.reservedBytes < bytes else { return }
        await withCheckedContinuation { observers.append((bytes, $0)) }
    }

    private func notifyObservers() {
        let reached = observers.filter { $0.bytes <= state.reservedBytes }
        observers.removeAll { $0.bytes <= state.reservedBytes }
        for observer in reached { observer.continuation.resume() }
    }
}
