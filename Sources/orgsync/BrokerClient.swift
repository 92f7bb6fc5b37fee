import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import OrgSyncAPI

/// Options of the commands that talk to a running broker.
struct BrokerOptions: ParsableArguments {
    @Option(help: "The broker's base URL (or ORGSYNC_URL).")
    var url: String = ProcessInfo.processInfo.environment["ORGSYNC_URL"] ?? "http://127.0.0.1:7070"

    @Option(help: "PEM file of the CA that signed an https broker's certificate, trusted instead of the system's (or ORGSYNC_CACERT).")
    var cacert: String?

    @Flag(help: "Print JSON instead of text.")
    var json = false

    /// The bearer token comes from ORGSYNC_TOKEN only: a token on the command line would show
    /// in `ps` and shell history.
    var token: String? { ProcessInfo.processInfo.environment["ORGSYNC_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    func client() throws -> BrokerClient {
        try BrokerClient(url: url, token: token, caFile: cacert ?? ProcessInfo.processInfo.environment["ORGSYNC_CACERT"])
    }
}

/// A small HTTP(S) client for the broker's JSON API, on AsyncHTTPClient; `--cacert` becomes the
/// trust roots. Each exchange has a client of its own, shut down after it: a command sends a
/// few requests (`produce`: one per batch of up to 100 000 entries), so a handshake each costs
/// little, and nothing is left to shut down on any path out of a command.
struct BrokerClient {
    let base: URL
    let token: String?
    /// With `--cacert`: certificates verified against that CA only (host names too).
    let tls: TLSConfiguration?

    /// Bound on one exchange with the broker, connect to last body byte.
    static let requestTimeout = TimeAmount.seconds(60)
    /// Most of an answer's body read (the broker's answers are small; an append's is tiny).
    static let answerBytesMax = 16 << 20

    struct Failure: Error, CustomStringConvertible {
        var description: String
        /// The broker was not reached, or its answer not read (refused, TLS, timeout): a retry may
        /// succeed. False for an answer that was read and is wrong.
        var isTransport = false
    }

    init(url: String, token: String?, caFile: String?) throws {
        guard let base = URL(string: url), base.scheme == "http" || base.scheme == "https", base.host != nil else {
            throw ValidationError("--url must be an http(s) URL, not \(url)")
        }
        self.base = base
        self.token = token
        guard let caFile, !caFile.isEmpty else {
            tls = nil
            return
        }
        guard base.scheme == "https" else { throw ValidationError("--cacert (ORGSYNC_CACERT) needs an https --url, not \(url)") }
        let roots: [NIOSSLCertificate]
        do {
            roots = try NIOSSLCertificate.fromPEMFile(caFile)
        } catch {
            throw ValidationError("--cacert \(caFile): cannot read PEM certificates (\(error))")
        }
        guard !roots.isEmpty else { throw ValidationError("--cacert \(caFile): holds no PEM certificate") }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(roots)
        tls = configuration
    }

    /// One request to the broker: its status and (at most ``answerBytesMax`` of) its body.
    /// Transport failures (refused, TLS, timeout) throw ``Failure`` naming the broker.
    func exchange(
        _ method: HTTPMethod, _ path: String, body: Data? = nil, headers: [(String, String)] = []
    ) async throws -> (status: Int, body: Data) {
        guard let url = URL(string: path, relativeTo: base) else { throw Failure(description: "bad path \(path)") }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.tlsConfiguration = tls
        // A refused connection or handshake is reported at once, not retried until the timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        let result: Result<(status: Int, body: Data), any Error>
        do {
            let response = try await client.execute(request, timeout: Self.requestTimeout)
            var answer = try await response.body.collect(upTo: Self.answerBytesMax)
            result = .success((Int(response.status.code), Data(answer.readBytes(length: answer.readableBytes) ?? [])))
        } catch {
            result = .failure(Failure(description: "cannot reach the broker at \(base.absoluteString): \(Self.describe(error))", isTransport: true))
        }
        try? await client.shutdown()
        return try result.get()
    }

    /// A transport error in an operator's words (TLS failures say so).
    static func describe(_ error: any Error) -> String {
        if error is NIOSSLError || error is BoringSSLError { return "TLS: \(error)" }
        if let error = error as? HTTPClientError, error == .deadlineExceeded { return "no answer within \(requestTimeout)" }
        return String(describing: error)
    }

    /// Sends a request; returns the body of a 2xx answer, throws the broker's error message otherwise.
    func send(_ method: String, _ path: String, body: Data? = nil, contentType: String? = nil) async throws -> Data {
        let (status, data) = try await exchange(
            HTTPMethod(rawValue: method), path, body: body, headers: contentType.map { [("Content-Type", $0)] } ?? [])
        guard (200..<300).contains(status) else { throw Failure(description: Self.describe(status: status, body: data)) }
        return data
    }

    /// A non-2xx answer: the broker's error code and message, or the status alone.
    static func describe(status: Int, body: Data) -> String {
        if let error = try? JSONDecoder().decode(ErrorBody.self, from: body) {
            return "\(status) \(error.error.code): \(error.error.message)"
        }
        return "HTTP \(status)"
    }

    func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        try decode(try await send("GET", path), as: type)
    }

    func decode<T: Decodable>(_ data: Data, as type: T.Type) throws -> T {
        do {
            return try APIJSON.decoder().decode(type, from: data)
        } catch {
            throw Failure(description: "unexpected answer from the broker: \(error)")
        }
    }
}
