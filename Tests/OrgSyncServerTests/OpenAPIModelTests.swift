import Foundation
import OrgSyncAPI
import OrgSyncBroker
import OrgSyncServer
import Testing
import Yams

/// The OpenAPI document's schemas and the API model (`OrgSyncAPI`) name the same fields: every
/// key a body is written with is a property of its schema, every property is a key the body
/// can have, and every required property is written even when the optional ones are absent.
@Suite struct OpenAPIModelTests {
    static func schemas() throws -> [String: Any] {
        let document = try #require(try Yams.load(yaml: openAPIDocument) as? [String: Any])
        let components = try #require(document["components"] as? [String: Any])
        return try #require(components["schemas"] as? [String: Any])
    }

    /// The keys `value` is written with (APIJSON: snake_case), absent optionals left out.
    static func keys(_ value: some Encodable) throws -> Set<String> {
        let object = try #require(try JSONSerialization.jsonObject(with: APIJSON.encoder().encode(value)) as? [String: Any])
        return Set(object.keys)
    }

    static func check(_ name: String, full: some Encodable, minimal: some Encodable) throws {
        let schema = try #require(try schemas()[name] as? [String: Any], "schema \(name)")
        let properties = Set(try #require(schema["properties"] as? [String: Any], "\(name).properties").keys)
        let required = Set(schema["required"] as? [String] ?? [])
        let written = try keys(full)
        let writtenAlways = try keys(minimal)
        #expect(written == properties, "\(name): the model writes \(written.sorted()), the document lists \(properties.sorted())")
        #expect(required.isSubset(of: writtenAlways), "\(name): required \(required.subtracting(writtenAlways).sorted()) not always written")
    }

    @Test func everyBodyMatchesItsSchema() throws {
        let link = LinkStatusBody(
            name: "l", stream: "s", state: "active", heldDown: false, cursor: 1, endOffset: 2, lag: 1, lastError: "e",
            probeProgress: "0/3", probeSuccesses: 0, probeThreshold: 3, timeInStateMs: 5, suspensions: 0, flaps: 0, holdDowns: 0,
            rejectedEntries: 0, appliedEntries: 1, deadLettersFailed: 0, running: true, streamId: "id", epoch: 1)
        var linkMinimal = link
        linkMinimal.lastError = nil
        try Self.check("LinkStatus", full: link, minimal: linkMinimal)

        let source = SourceStatusBody(
            name: "crm", stream: "s", state: "active", heldDown: false, positionCommit: 0x1_0000_00AB, positionChange: 2, lagBytes: 10, lagMs: 150,
            lastAppendTimeMs: 5, lastError: "e", probeProgress: "0/3", timeInStateMs: 1, suspensions: 0, appendedEntries: 3,
            skippedChanges: 0, transactions: 1, rounds: 1, running: true)
        #expect(source.positionLsn == "1/AB")
        try Self.check("SourceStatus", full: source, minimal: SourceStatusBody(
            name: "crm", stream: "s", state: "suspended", heldDown: false, positionCommit: nil, positionChange: nil, lagBytes: nil, lagMs: nil,
            lastAppendTimeMs: nil, lastError: nil, probeProgress: "0/3", timeInStateMs: 1, suspensions: 1, appendedEntries: 0,
            skippedChanges: 0, transactions: 0, rounds: 0, running: true))

        let stream = StreamInfoBody(name: "s", startOffset: 0, endOffset: 1, segments: 1, storedBytes: 10, rawBytes: 20, compressionRatio: 2)
        try Self.check("StreamInfo", full: stream, minimal: stream)

        let record = SyncLogRecordBody(sequence: 1, timeMs: 2, event: "entry_failed", state: "active", reason: "r", offset: 3,
                                       status: "failed", targetCode: "23514")
        try Self.check("SyncLogRecord", full: record, minimal: SyncLogRecordBody(
            sequence: 1, timeMs: 2, event: "suspended", state: "suspended", reason: "r", offset: nil, status: nil, targetCode: nil))

        let letter = DeadLetterBody(offset: 1, entry: "{}", error: "e", targetCode: "c", status: "resolved", failedAtMs: 1,
                                    resolvedAtMs: 2, attempts: 1)
        try Self.check("DeadLetter", full: letter, minimal: DeadLetterBody(
            offset: 1, entry: "{}", error: "e", targetCode: nil, status: "failed", failedAtMs: 1, resolvedAtMs: nil, attempts: 1))

        let deadLetter = NotificationDeadLetterBody(id: "msg_1.demo.3.link.suspended", type: "link.suspended", reason: "HTTP 400", attempts: 1, atMs: 5)
        try Self.check("NotificationDeadLetter", full: deadLetter, minimal: deadLetter)
        let lane = NotificationLinkBody(link: "demo", pending: 1, headAttempts: 2, lastError: "HTTP 500", delivered: 3, deadLettered: 1,
                                        deadLetters: [deadLetter])
        var laneMinimal = lane
        laneMinimal.lastError = nil
        try Self.check("NotificationLink", full: lane, minimal: laneMinimal)
        let target = NotificationTargetBody(name: "ops", events: ["link.suspended"], links: [lane])
        try Self.check("NotificationTarget", full: target, minimal: target)
        let linkSample = LinkSampleBody(timeMs: 1, state: "active", heldDown: false, lag: 2, cursor: 3, appliedEntries: 4, appliedPerSecond: 1.5)
        var linkSampleMinimal = linkSample
        linkSampleMinimal.appliedPerSecond = nil
        try Self.check("LinkSample", full: linkSample, minimal: linkSampleMinimal)
        let linkSamples = LinkSamplesBody(link: "l", stream: "s", windowMs: 60_000, samplesMax: 900, samples: [linkSample])
        try Self.check("LinkSamples", full: linkSamples, minimal: linkSamples)
        let streamSample = StreamSampleBody(timeMs: 1, endOffset: 2, appendedPerSecond: 3)
        try Self.check("StreamSample", full: streamSample, minimal: StreamSampleBody(timeMs: 1, endOffset: 2, appendedPerSecond: nil))
        let streamSamples = StreamSamplesBody(stream: "s", windowMs: 60_000, samplesMax: 900, samples: [streamSample])
        try Self.check("StreamSamples", full: streamSamples, minimal: streamSamples)

        let error = ErrorBody(code: "c", message: "m")
        try Self.check("Error", full: error, minimal: error)
        let errorSchema = try #require(try Self.schemas()["Error"] as? [String: Any])
        let detail = try #require((errorSchema["properties"] as? [String: Any])?["error"] as? [String: Any])
        #expect(Set((detail["properties"] as? [String: Any])?.keys.map { $0 } ?? []) == ["code", "message"])
    }
}
