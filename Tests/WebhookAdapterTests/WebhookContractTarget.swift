// The generic adapter contract (branch `adapters`, Tests/OrgSyncAdapterContract) run against
// the webhook adapter and a receiver that stores records in memory. Compiled when the package
// gives this target the contract module and defines ORGSYNC_ADAPTER_CONTRACT.
#if ORGSYNC_ADAPTER_CONTRACT
import OrgSyncTestHTTP
import Foundation
import NIOHTTP1
import OrgSyncAdapterContract
import OrgSyncPluginAPI
import OrgSyncTestCertificates
import Synchronization
import Testing
@testable import WebhookAdapter

/// A receiver as a careful user would write one: a batch applies whole or not at all, a repeated
/// `Idempotency-Key` is answered 200 without applying again, and an insert of an existing key
/// is refused with 422 `{"rejected_offset": N}`.
final class InMemoryReceiver: Sendable {
    private struct State {
        var tables: [String: [String: [String: JSONValue]]] = [:]
        var appliedKeys: Set<String> = []
    }
    private let state = Mutex(State())

    func rows(object: String) -> [ContractRow] {
        state.withLock { ($0.tables[object] ?? [:]).map { ContractRow(key: $0.key, fields: $0.value) } }
    }

    func respond(_ request: RecordedRequest) -> Reply {
        guard request.method == .POST else { return Reply(status: .ok) }
        guard let idempotencyKey = request.headers["Idempotency-Key"].first,
            let document = try? JSONDecoder().decode([String: JSONValue].self, from: Data(request.body)),
            case .array(let entries)? = document["entries"]
        else { return Reply(status: .badRequest, body: "not a batch") }
        return state.withLock { state in
            if state.appliedKeys.contains(idempotencyKey) { return Reply(status: .ok, body: "repeat") }
            var tables = state.tables
            for case .object(let entry) in entries {
                guard case .int(let offset)? = entry["offset"], let object = entry["object"]?.stringValue,
                    let key = entry["key"]?.stringValue, let op = entry["op"]?.stringValue
                else { return Reply(status: .badRequest, body: "bad entry") }
                var fields: [String: JSONValue] = [:]
                if case .object(let given)? = entry["fields"] { fields = given }
                switch op {
                case "insert":
                    if tables[object]?[key] != nil {
                        return Reply(status: .unprocessableEntity, body: #"{"rejected_offset":\#(offset),"error":"key exists"}"#)
                    }
                    tables[object, default: [:]][key] = fields
                case "upsert":
                    tables[object, default: [:]][key, default: [:]].merge(fields) { $1 }
                case "delete":
                    tables[object]?[key] = nil
                default:
                    return Reply(status: .unprocessableEntity, body: #"{"rejected_offset":\#(offset)}"#)
                }
            }
            state.tables = tables
            state.appliedKeys.insert(idempotencyKey)
            return Reply(status: .ok)
        }
    }
}

struct WebhookTrafficProblem: Error, CustomStringConvertible {
    var description: String
}

struct WebhookContractTarget: AdapterContractTarget {
    let server: TestHTTPServer
    let receiver: InMemoryReceiver
    /// Over TLS: the directory of the test CA and the receiver's certificate, and the CA's file.
    var certificateDirectory: String? = nil
    var caFile: String? = nil
    let factory: any OrgAdapterFactory = WebhookAdapterFactory()
    var capabilities: AdapterContractCapabilities { AdapterContractCapabilities(storesAppliedOffset: false) }

    static func make() async throws -> WebhookContractTarget {
        let receiver = InMemoryReceiver()
        let server = try await TestHTTPServer.start { receiver.respond($0) }
        return WebhookContractTarget(server: server, receiver: receiver)
    }

    /// The receiver over https, its certificate from a test CA given to the link as `ca_file`.
    static func makeOverTLS() async throws -> WebhookContractTarget {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("orgsync-webtls-contract-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do {
            let certificates = try TestCertificates(directory: directory)
            let issued = try certificates.issue("receiver", hosts: ["127.0.0.1"])
            let receiver = InMemoryReceiver()
            let server = try await TestHTTPServer.start(
                tls: ServerTLS(certificateFile: issued.certificateFile, keyFile: issued.keyFile)) { receiver.respond($0) }
            return WebhookContractTarget(server: server, receiver: receiver, certificateDirectory: directory, caFile: certificates.caFile)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    func configuration(linkName: String, streamName: String) -> AdapterConfiguration {
        var settings = ["url": server.url, "timeout_ms": "2000"]
        if let caFile { settings["ca_file"] = caFile }
        return AdapterConfiguration(linkName: linkName, streamName: streamName, settings: settings)
    }

    func rows(object: String) async throws -> [ContractRow] { receiver.rows(object: object) }

    func makeDead() async throws { await server.stop() }

    /// Every batch the adapter POSTed: JSON, a body whose offsets increase and match its
    /// `first_offset`/`last_offset`, an `Idempotency-Key` of exactly
    /// `<stream>:<stream id>:<epoch>:<first>-<last>` taken from that body, and a key sent again
    /// only with the very same body (a re-send, never another batch under an old key).
    func checkWhatTheAdapterSent() async throws {
        var bodiesByKey: [String: [UInt8]] = [:]
        for (index, request) in server.requests.enumerated() where request.method == .POST {
            func fail(_ problem: String) -> WebhookTrafficProblem { WebhookTrafficProblem(description: "POST #\(index): \(problem)") }
            guard request.headers["Content-Type"] == ["application/json"] else { throw fail("Content-Type \(request.headers["Content-Type"])") }
            guard let key = request.headers["Idempotency-Key"].first, request.headers["Idempotency-Key"].count == 1 else {
                throw fail("not exactly one Idempotency-Key")
            }
            guard let document = try? JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any],
                  let stream = document["stream"] as? String, let streamID = document["stream_id"] as? String,
                  let epoch = document["epoch"] as? Int, let first = document["first_offset"] as? Int,
                  let last = document["last_offset"] as? Int, let entries = document["entries"] as? [[String: Any]]
            else { throw fail("the body is not a batch document") }
            let offsets = entries.compactMap { $0["offset"] as? Int }
            guard offsets.count == entries.count, !offsets.isEmpty, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 < $1 }),
                  offsets.first == first, offsets.last == last else {
                throw fail("entry offsets \(offsets) do not increase from first_offset \(first) to last_offset \(last)")
            }
            guard key == "\(stream):\(streamID):\(epoch):\(first)-\(last)" else {
                throw fail("Idempotency-Key \(key) does not name the batch \(stream):\(streamID):\(epoch):\(first)-\(last)")
            }
            if let earlier = bodiesByKey[key], earlier != request.body {
                throw fail("Idempotency-Key \(key) was sent again with another body")
            }
            bodiesByKey[key] = request.body
        }
    }

    func tearDown() async {
        await server.stop()
        if let certificateDirectory { try? FileManager.default.removeItem(atPath: certificateDirectory) }
    }
}

@Suite struct WebhookAdapterContractTests {
    @Test(arguments: AdapterContract.Check.allCases)
    func contract(_ check: AdapterContract.Check) async throws {
        try await AdapterContract { try await WebhookContractTarget.make() }.run(check)
    }

    @Test(arguments: AdapterContract.Check.allCases)
    func contractOverHTTPS(_ check: AdapterContract.Check) async throws {
        try await AdapterContract { try await WebhookContractTarget.makeOverTLS() }.run(check)
    }
}
#endif
