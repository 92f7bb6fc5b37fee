import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import OrgSyncLog
import OrgSyncBroker
import OrgSyncServer

/// One broker and its router for the whole run, over a data directory in /dev/shm (or the
/// temporary directory), removed at exit.
private struct HTTPFixture: Sendable {
    static let token = "fuzz-produce-token-0123456789"
    let broker: Broker
    let responder: RouterResponder<BrokerRequestContext>
    /// One channel for every request (the context wants one; a channel per request leaks its
    /// pipeline, which it keeps in a cycle until closed).
    let channel = NIOAsyncTestingChannel()

    static let shared: HTTPFixture? = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let directory = base + "/orgsync-fuzz-http-\(getpid())"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()) + "/orgsync-fuzz-http-\(getpid())") }
        let yaml = """
            auth:
              tokens:
                - { name: p, role: produce, token: "\(token)" }
            server:
              body_bytes_max: 65536
              entry_bytes_max: 4096
              request_entries_max: 200
              inflight_body_bytes_max: 1048576
            streams:
              - name: s
                fsync: interval
                fsync_interval_ms: 1000
                segment_bytes_max: 1048576
            """
        do {
            let configuration = try BrokerConfiguration.parse(yaml: yaml)
            let broker = try Broker(configuration: configuration, dataDirectory: directory, metrics: BrokerMetrics(), logger: quietLogger)
            let router = buildRouter(broker: broker, authenticator: Authenticator(configuration: configuration, environment: [:]))
            return HTTPFixture(broker: broker, responder: router.buildResponder())
        } catch {
            printError("cannot start the fuzz broker: \(error)")
            return nil
        }
    }()
}

/// Input: a request as text, `METHOD PATH\r?\n`, header lines `Name: value`, an empty line, the
/// body (a bearer token is added when the input has no Authorization header). It goes through
/// the broker's router and handlers in process. Properties: no 5xx other than 503 (body budget,
/// stream not ready), and a 201 appended exactly the request's entries at the answered offsets.
@Sendable func fuzzHTTP(_ data: [UInt8]) {
    guard let fixture = HTTPFixture.shared, let stream = fixture.broker.streams["s"] as? StreamLog else { return }
    var lines = data.split(separator: UInt8(ascii: "\n"), maxSplits: 40, omittingEmptySubsequences: false)[...]
    guard let requestLine = lines.popFirst() else { return }
    let parts = String(decoding: requestLine, as: UTF8.self).trimmingCharacters(in: .whitespaces).split(separator: " ", maxSplits: 1)
    guard parts.count == 2, let method = HTTPRequest.Method(String(parts[0])) else { return }
    let path = String(parts[1])
    var fields = HTTPFields()
    var bodyStart = data.count
    while let line = lines.popFirst() {
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .init(charactersIn: "\r"))
        if text.isEmpty {
            bodyStart = line.endIndex + 1
            break
        }
        guard let colon = text.firstIndex(of: ":"), let name = HTTPField.Name(String(text[..<colon])) else { continue }
        let value = text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        fields.append(HTTPField(name: name, value: value))
    }
    if fields[.authorization] == nil { fields[.authorization] = "Bearer \(HTTPFixture.token)" }
    let body = bodyStart < data.count ? Array(data[bodyStart...]) : []
    let endBefore = stream.endOffset
    let head = HTTPRequest(method: method, scheme: "http", authority: "127.0.0.1", path: path, headerFields: fields)
    let responder = fixture.responder
    let (status, responseBody): (Int, [UInt8]) = blocking {
        // Split the body into two buffers, so that reading across chunks is exercised.
        let cut = body.count / 2
        let chunks = [ByteBuffer(bytes: body[..<cut]), ByteBuffer(bytes: body[cut...])].filter { $0.readableBytes > 0 }
        let request = Request(head: head, body: RequestBody(asyncSequence: chunks.async))
        let context = BrokerRequestContext(source: .init(channel: fixture.channel, logger: quietLogger))
        do {
            let response = try await responder.respond(to: request, context: context)
            let collected = CollectedBody()
            try? await response.body.write(CollectingWriter(collected: collected))
            return (response.status.code, Array(collected.buffer.readableBytesView))
        } catch let error as any HTTPResponseError {
            return (error.status.code, [])
        } catch {
            return (500, Array("\(error)".utf8))
        }
    }
    fuzzCheck(status < 500 || status == 503, "HTTP \(status): \(String(decoding: responseBody.prefix(300), as: UTF8.self))")
    guard status == 201, method == .post else { return }
    struct Answer: Decodable { var firstOffset: UInt64; var lastOffset: UInt64; var count: Int }
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    guard let answer = try? decoder.decode(Answer.self, from: Data(responseBody)) else {
        fuzzCheck(false, "201 without offsets: \(String(decoding: responseBody.prefix(300), as: UTF8.self))")
        return
    }
    fuzzCheck(answer.count == Int(answer.lastOffset - answer.firstOffset + 1), "count does not match the offsets")
    if fields[HTTPField.Name("Idempotency-Key")!] == nil {
        fuzzCheck(answer.firstOffset >= endBefore, "appended at \(answer.firstOffset), below the end \(endBefore) before")
    }
}

/// Collects a response body.
final class CollectedBody: @unchecked Sendable {
    var buffer = ByteBuffer()
}

struct CollectingWriter: ResponseBodyWriter {
    let collected: CollectedBody
    mutating func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        collected.buffer.writeBuffer(&buffer)
    }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

extension Array where Element == ByteBuffer {
    var async: AsyncBufferSequence { AsyncBufferSequence(buffers: self) }
}

struct AsyncBufferSequence: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let buffers: [ByteBuffer]
    struct AsyncIterator: AsyncIteratorProtocol {
        var remaining: [ByteBuffer]
        mutating func next() async -> ByteBuffer? { remaining.isEmpty ? nil : remaining.removeFirst() }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: buffers) }
}
