/// When a client connection must be closed for being slow or idle: a value that takes the
/// connection's events and the time and returns what to do (the channel handler
/// ``ConnectionDeadlineHandler`` performs it). No I/O, no clock of its own.
///
/// The deadlines (the semantics of Go's `ReadHeaderTimeout` and `IdleTimeout`):
/// - a new connection has `headerTimeout` to deliver its first request's complete header block;
/// - between requests on a kept-alive connection it may stay silent for `idleTimeout`; the first
///   byte of the next request starts that request's `headerTimeout`;
/// - while a request body streams in, each received byte restarts `idleTimeout` (a body that
///   stops arriving is idle);
/// - while the broker is answering (the request is read, the response not yet written) there is
///   no deadline: an append waits for its `fdatasync`, not for the client.
///
/// Invariant: at most one deadline is pending; ``State-swift.enum`` holds it.
struct ConnectionDeadlines<Instant: InstantProtocol> {
    enum State: Equatable {
        /// Waiting for (the rest of) a request's header block until `deadline`.
        case readingHead(deadline: Instant)
        /// A request's head is in; its body (if any) is arriving. Closed if silent until `deadline`.
        case readingBody(deadline: Instant)
        /// Every request read; at least one response is being produced.
        case answering
        /// Every response written; waiting for the next request until `deadline`.
        case idle(deadline: Instant)
    }

    enum Action: Equatable {
        /// Make sure a timer fires no later than this instant.
        case armTimer(Instant)
        /// Close the connection: a deadline passed.
        case close
        case none
    }

    let headerTimeout: Instant.Duration
    let idleTimeout: Instant.Duration
    private(set) var state: State
    /// Requests whose head was read and whose response has not been written completely.
    private(set) var requestsUnanswered = 0

    /// A connection accepted at `now`.
    init(headerTimeout: Instant.Duration, idleTimeout: Instant.Duration, openedAt now: Instant) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        state = .readingHead(deadline: now.advanced(by: headerTimeout))
    }

    /// The action for the state just entered: a pending deadline needs a timer.
    var initialAction: Action { deadline.map(Action.armTimer) ?? .none }

    var deadline: Instant? {
        switch state {
        case .readingHead(let deadline), .readingBody(let deadline), .idle(let deadline): deadline
        case .answering: nil
        }
    }

    /// Bytes arrived from the client (before HTTP parsing).
    mutating func bytesReceived(now: Instant) -> Action {
        switch state {
        case .idle:
            state = .readingHead(deadline: now.advanced(by: headerTimeout))
            return initialAction
        case .readingBody:
            state = .readingBody(deadline: now.advanced(by: idleTimeout))
            return initialAction
        case .readingHead, .answering:
            // A header block's deadline does not move with its bytes (a client dribbling one
            // byte a second is the attack); bytes while answering are a pipelined request, whose
            // head is timed once this response is written.
            return .none
        }
    }

    /// A request's complete header block was parsed.
    mutating func headReceived(now: Instant) -> Action {
        requestsUnanswered += 1
        state = .readingBody(deadline: now.advanced(by: idleTimeout))
        return initialAction
    }

    /// The request's body ended (or it had none).
    mutating func requestEnded(now: Instant) -> Action {
        guard case .readingBody = state else { return .none }
        if requestsUnanswered > 0 {
            state = .answering
            return .none
        }
        // Answered before its body was read (a 413 while streaming): idle from here.
        state = .idle(deadline: now.advanced(by: idleTimeout))
        return initialAction
    }

    /// A response was written completely.
    mutating func responseEnded(now: Instant) -> Action {
        requestsUnanswered = max(0, requestsUnanswered - 1)
        guard requestsUnanswered == 0, case .answering = state else { return .none }
        state = .idle(deadline: now.advanced(by: idleTimeout))
        return initialAction
    }

    /// A timer armed earlier fired at `now`.
    mutating func timerFired(now: Instant) -> Action {
        guard let deadline else { return .none }
        return now >= deadline ? .close : .armTimer(deadline)
    }
}
