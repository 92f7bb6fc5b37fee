import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import OrgSyncLog
@testable import OrgSyncBroker
@testable import OrgSyncServer
import Testing

/// `Idempotency-Key` on `POST /v1/streams/{s}/entries`: a retry appends nothing and gets the
/// original answer; another body with the same key is 422; a bad key is 400.
@Suite struct IdempotentAppendRouteTests {
    func keyed(_ key: String, _ contentType: String = "application/x-ndjson") -> HTTPFields {
        var fields = headers(TestBroker.produceToken, contentType)
        fields[HTTPField.Name("Idempotency-Key")!] = key
        return fields
    }

    @Test func aRetryWithTheSameKeyAppendsNothingAndReplaysTheAnswer() async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        let body = (0..<5).map(entryJSON).joined(separator: "\n")
        let events = try #require(t.broker.streams["events"] as? StreamLog)
        try await app.test(.router) { client in
            var first: [String: Int]?
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: keyed("batch-1"),
                                     body: ByteBuffer(string: body)) { response in
                #expect(response.status == .created)
                #expect(response.headers[HTTPField.Name("Idempotent-Replayed")!] == nil)
                first = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Int]
            }
            #expect(events.endOffset == 5)
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: keyed("batch-1"),
                                     body: ByteBuffer(string: body)) { response in
                #expect(response.status == .created)
                #expect(response.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
                let again = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Int]
                #expect(again == first, "the original offsets")
            }
            #expect(events.endOffset == 5, "a replay appends nothing")
            // The same key with another body: 422, nothing appended.
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: keyed("batch-1"),
                                     body: ByteBuffer(string: entryJSON(9))) { response in
                #expect(response.status == .unprocessableContent)
                #expect(errorCode(response) == "idempotency_key_reused")
            }
            // Another key appends.
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: keyed("batch-2", "application/json"),
                                     body: ByteBuffer(string: entryJSON(9))) { response in
                #expect(response.status == .created)
            }
            #expect(events.endOffset == 6)
        }
    }

    @Test(arguments: ["", String(repeating: "k", count: 256), "with space", "naïve"])
    func aBadKeyIs400AndAppendsNothing(key: String) async throws {
        let t = try TestBroker()
        let app = Application(router: t.router)
        try await app.test(.router) { client in
            var fields = headers(TestBroker.produceToken)
            fields.append(HTTPField(name: HTTPField.Name("Idempotency-Key")!, value: key))
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: fields,
                                     body: ByteBuffer(string: entryJSON(0))) { response in
                #expect(response.status == .badRequest)
                #expect(errorCode(response) == "invalid_idempotency_key")
            }
        }
        #expect(t.end == 0)
    }

    @Test func keysSurviveARestartOfTheBroker() async throws {
        let t = try TestBroker()
        let body = entryJSON(1)
        try await Application(router: t.router).test(.router) { client in
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: keyed("once", "application/json"),
                                     body: ByteBuffer(string: body)) { response in
                #expect(response.status == .created)
            }
        }
        let again = try await t.reopened()
        try await Application(router: again.router).test(.router) { client in
            try await client.execute(uri: "/v1/streams/events/entries", method: .post, headers: keyed("once", "application/json"),
                                     body: ByteBuffer(string: body)) { response in
                #expect(response.status == .created)
                #expect(response.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
            }
        }
        #expect(again.end == 1)
    }
}
