import OrgSyncNotifications
import Testing

@Suite struct DeliveryDecisionTests {
    let settings = NotificationSettings(
        name: "ops", url: "http://127.0.0.1/", secret: Array(repeating: 7, count: 24),
        backoffBaseMs: 1_000, backoffCapMs: 10_000, giveUpAfterMs: 60_000)
    let t0: UInt64 = 1_800_000_000_000

    func decide(_ status: Int?, retryAfter: String? = nil, attempt: Int = 1, ageMs: UInt64 = 0) -> DeliveryDecision {
        DeliveryDecision.after(status: status, failure: status == nil ? "no answer: refused" : nil, retryAfter: retryAfter,
                               attempt: attempt, eventTimeMs: t0, nowMs: t0 + ageMs, settings: settings)
    }

    @Test func twoHundredsAreDeliveredAndRetryableAnswersBackOffExponentiallyUpToTheCap() {
        #expect(decide(200) == .delivered)
        #expect(decide(204) == .delivered)
        #expect(decide(500, attempt: 1) == .retry(afterMs: 1_000, reason: "HTTP 500"))
        #expect(decide(503, attempt: 2) == .retry(afterMs: 2_000, reason: "HTTP 503"))
        #expect(decide(408, attempt: 3) == .retry(afterMs: 4_000, reason: "HTTP 408"))
        #expect(decide(429, attempt: 4) == .retry(afterMs: 8_000, reason: "HTTP 429"))
        #expect(decide(502, attempt: 5) == .retry(afterMs: 10_000, reason: "HTTP 502"), "capped")
        #expect(decide(502, attempt: 500) == .retry(afterMs: 10_000, reason: "HTTP 502"), "no overflow at absurd attempts")
        #expect(decide(nil, attempt: 1) == .retry(afterMs: 1_000, reason: "no answer: refused"))
    }

    @Test func retryAfterIsHonouredWhenLongerInSecondsOrAsAnHTTPDate() {
        #expect(decide(429, retryAfter: "30") == .retry(afterMs: 30_000, reason: "HTTP 429"), "longer than the backoff: honoured, past the cap")
        #expect(decide(503, retryAfter: "0", attempt: 3) == .retry(afterMs: 4_000, reason: "HTTP 503"), "shorter: the backoff stands")
        // t0 is 2027-01-15T08:00:00Z; the receiver asks for 08:00:20.
        #expect(decide(503, retryAfter: "Fri, 15 Jan 2027 08:00:20 GMT") == .retry(afterMs: 20_000, reason: "HTTP 503"))
        #expect(decide(503, retryAfter: "soon") == .retry(afterMs: 1_000, reason: "HTTP 503"), "unreadable: the backoff")
        if case .deadLetter = decide(503, retryAfter: "99999999999999999999999") {} else {
            Issue.record("a Retry-After beyond any give-up must give up, not overflow")
        }
    }

    @Test func otherAnswersAndEventsPastTheGiveUpAgeGoToTheDeadLetters() {
        #expect(decide(400) == .deadLetter(reason: "the receiver refused the event: HTTP 400"))
        #expect(decide(410) == .deadLetter(reason: "the receiver refused the event: HTTP 410"))
        #expect(decide(301) == .deadLetter(reason: "the receiver refused the event: HTTP 301"))
        #expect(decide(500, attempt: 4, ageMs: 51_000) == .retry(afterMs: 8_000, reason: "HTTP 500"), "59 s old at the next try: still in time")
        #expect(decide(500, attempt: 4, ageMs: 53_000) == .deadLetter(reason: "gave up after 4 attempts (give_up_after_ms 60000); the last: HTTP 500"))
    }
}
