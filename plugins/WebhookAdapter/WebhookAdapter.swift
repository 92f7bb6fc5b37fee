import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import OrgSyncPluginAPI
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Registers the webhook adapter under the name `webhook`.
public struct WebhookAdapterFactory: OrgAdapterFactory {
    public let name = "webhook"
    public let version = "0.1.0"
    /// The settings of ``WebhookAdapterSettings``; anything else in a link's `settings` stops start-up.
    public let settings = AdapterSettingsDeclaration([
        .required("url"), .family("header."), .family("header_env."), .optional("timeout_ms"), .optional("probe_url"),
        .optional("probe_method"), .optional("error_body_bytes_max"),
        .optional("ca_file"), .optional("cert_file"), .optional("key_file"), .optional("insecure_skip_verify"),
    ])
    let environment: @Sendable () -> [String: String]

    public init() {
        self.environment = { ProcessInfo.processInfo.environment }
    }

    init(environment: @escaping @Sendable () -> [String: String]) {
        self.environment = environment
    }

    public func makeAdapter(_ configuration: AdapterConfiguration) throws -> any OrgAdapter {
        let settings = try WebhookAdapterSettings(configuration, environment: environment())
        // Read the PEM files once now, so a missing or broken one stops start-up naming it.
        _ = try settings.tls.clientConfiguration()
        var logger = Logger(label: "orgsync.adapter.webhook")
        logger[metadataKey: "link"] = "\(configuration.linkName)"
        return WebhookAdapter(streamName: configuration.streamName, settings: settings, logger: logger)
    }
}

/// The settings of a `webhook` link.
///
/// | setting | default | meaning |
/// | --- | --- | --- |
/// | `url` | required | `http://` or `https://` URL each batch is POSTed to |
/// | `header.NAME` | none | a header sent with every request, e.g. `header.Authorization = Bearer …` |
/// | `header_env.NAME` | none | a header whose value is read from the environment variable named here (must be set); wins over `header.NAME` |
/// | `timeout_ms` | `10000` | bound on one request, connect to last body byte (a certificate verification failure: twice, see the README) |
/// | `probe_url` | `url` | URL of the probe request |
/// | `probe_method` | `HEAD` | `HEAD` or `GET` |
/// | `error_body_bytes_max` | `512` | how much of an error response's body goes into the error message |
/// | `ca_file`, `cert_file`, `key_file`, `insecure_skip_verify` | see ``WebhookTLSSettings`` | TLS of an `https://` URL |
///
/// Header values are secrets: they are sent, never logged, and left out of ``description``.
public struct WebhookAdapterSettings: Sendable, Hashable, CustomStringConvertible {
    public var url: String
    public var headers: [String: String]
    public var timeoutMs: Int
    public var probeURL: String
    public var probeMethod: String
    public var errorBodyBytesMax: Int
    public var tls: WebhookTLSSettings

    public init(
        url: String, headers: [String: String] = [:], timeoutMs: Int = 10_000, probeURL: String? = nil,
        probeMethod: String = "HEAD", errorBodyBytesMax: Int = 512, tls: WebhookTLSSettings = WebhookTLSSettings()
    ) {
        self.url = url
        self.headers = headers
        self.timeoutMs = timeoutMs
        self.probeURL = probeURL ?? url
        self.probeMethod = probeMethod
        self.errorBodyBytesMax = errorBodyBytesMax
        self.tls = tls
    }

    public init(_ configuration: AdapterConfiguration, environment: [String: String]) throws(AdapterConfigurationError) {
        url = try configuration.string("url")
        try Self.checkURL(url, setting: "url")
        probeURL = configuration.string("probe_url", default: url)
        try Self.checkURL(probeURL, setting: "probe_url")
        probeMethod = configuration.string("probe_method", default: "HEAD").uppercased()
        guard probeMethod == "HEAD" || probeMethod == "GET" else {
            throw AdapterConfigurationError(setting: "probe_method", problem: "must be HEAD or GET, not \(probeMethod)")
        }
        timeoutMs = try configuration.int("timeout_ms", default: 10_000, in: 1...3_600_000)
        errorBodyBytesMax = try configuration.int("error_body_bytes_max", default: 512, in: 0...65_536)
        tls = try WebhookTLSSettings(configuration, urls: [("url", url), ("probe_url", probeURL)])
        headers = [:]
        for (setting, value) in configuration.settings.sorted(by: { $0.key < $1.key }) {
            if setting.hasPrefix("header."), setting.count > "header.".count {
                let name = String(setting.dropFirst("header.".count))
                try Self.checkHeader(name: name, value: value, setting: setting)
                if headers[name] == nil { headers[name] = value }
            } else if setting.hasPrefix("header_env."), setting.count > "header_env.".count {
                let name = String(setting.dropFirst("header_env.".count))
                guard let secret = environment[value] else {
                    throw AdapterConfigurationError(setting: setting, problem: "names the environment variable \(value), which is not set")
                }
                try Self.checkHeader(name: name, value: secret, setting: setting)
                headers[name] = secret
            }
        }
    }

    private static func checkURL(_ url: String, setting: String) throws(AdapterConfigurationError) {
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://"), URL(string: url)?.host != nil else {
            throw AdapterConfigurationError(setting: setting, problem: "must be an http:// or https:// URL with a host")
        }
    }

    private static func checkHeader(name: String, value: String, setting: String) throws(AdapterConfigurationError) {
        let token = name.unicodeScalars.allSatisfy { $0.isASCII && $0.value > 0x20 && $0.value < 0x7F && $0 != ":" }
        guard token else { throw AdapterConfigurationError(setting: setting, problem: "is not a valid header name") }
        // The value is not quoted in the message: it is a secret.
        guard !value.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) else {
            throw AdapterConfigurationError(setting: setting, problem: "has a line break in its value")
        }
    }

    public var description: String {
        let tlsSummary = tls.summary.isEmpty ? "" : " " + tls.summary
        return "webhook \(url) headers=[\(headers.keys.sorted().map { "\($0): <redacted>" }.joined(separator: ", "))] timeout_ms=\(timeoutMs)\(tlsSummary)"
    }
}

/// POSTs each batch as one JSON document to a URL. At-least-once: a batch may be sent again
/// after a failure or a crash, with the same `Idempotency-Key: <stream>:<stream id>:<epoch>:<first>-<last>`
/// so the receiver can drop the repeat — and, because the stream's identity is in it, never takes
/// new entries at offsets a repair gave back (a new epoch) for a repeat. ``appliedPosition()`` is always nil (the receiver keeps none we
/// can read).
///
/// ```json
/// {"stream":"events","stream_id":"…","epoch":1,"first_offset":40,"last_offset":41,
///  "entries":[{"offset":40,"org":…,"object":…,"op":…,"key":…,"ts":…,"fields":{…}}, …]}
/// ```
/// Each entry is the producer's JSON object as it was sent, with `offset` put first.
///
/// | response | error |
/// | --- | --- |
/// | 2xx | none: the batch is applied |
/// | 401, 403, 408, 429, 5xx, 3xx, no response, timeout, TLS failure | `connection` (the link suspends and probes) |
/// | other 4xx | `rejected` at the offset the body names as `{"rejected_offset": N}` (when N is in the batch), else the batch's first entry; the message holds the status and the start of the body |
///
/// 401/403 count as connection failures, not rejections: an expired credential must suspend the
/// link rather than send every entry to the dead letters. So does a TLS failure (see
/// ``TLSFailure``): its message names the reason — unknown CA, expired certificate, host name,
/// client certificate — and the link resumes through its probes once a valid certificate is in
/// place.
public actor WebhookAdapter: OrgAdapter {
    public nonisolated let streamName: String
    public nonisolated let settings: WebhookAdapterSettings
    private let logger: Logger
    private var client: OwnedHTTPClient?
    private var warnedInsecure = false

    public init(streamName: String, settings: WebhookAdapterSettings, logger: Logger = Logger(label: "orgsync.adapter.webhook")) {
        self.streamName = streamName
        self.settings = settings
        self.logger = logger
    }

    /// Makes the HTTP client and probes the receiver, so a link does not start (or resume)
    /// against a receiver that is not there. With `insecure_skip_verify`, the first call logs a
    /// warning: verification is never off silently.
    public func open() async throws {
        if settings.tls.insecureSkipVerify, !warnedInsecure {
            warnedInsecure = true
            logger.warning(
                "webhook \(settings.url): insecure_skip_verify is true: the receiver's certificate and host name are not verified, so anyone on the network path can read and change what this link sends")
        }
        _ = try httpClient()
        try await probe()
    }

    public func apply(_ batch: EntryBatch) async throws {
        guard let first = batch.firstOffset, let last = batch.lastOffset else { return }
        var request = HTTPClientRequest(url: settings.url)
        request.method = .POST
        addHeaders(to: &request)
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        request.headers.replaceOrAdd(name: "Idempotency-Key", value: Self.idempotencyKey(batch, first: first, last: last))
        let body = Self.payload(batch)
        request.body = .bytes(ByteBuffer(bytes: body))
        let (status, responseBody) = try await send(request, what: "POST")
        switch status.code {
        case 200..<300:
            return
        case 401, 403, 408, 429, 300..<400, 500...:
            throw AdapterError.connection(
                "webhook answered \(status.code) \(status.reasonPhrase)\(Self.bodySuffix(responseBody, bytesMax: settings.errorBodyBytesMax))", targetCode: String(status.code))
        default:
            let offset = Self.rejectedOffset(in: responseBody, batch: batch) ?? first
            throw AdapterError.rejected(
                offset: offset, "webhook answered \(status.code) \(status.reasonPhrase)\(Self.bodySuffix(responseBody, bytesMax: settings.errorBodyBytesMax))",
                targetCode: String(status.code))
        }
    }

    public func probe() async throws {
        var request = HTTPClientRequest(url: settings.probeURL)
        request.method = settings.probeMethod == "GET" ? .GET : .HEAD
        addHeaders(to: &request)
        let (status, _) = try await send(request, what: "probe \(settings.probeMethod)")
        switch status.code {
        case 401, 403, 429, 500...:
            throw AdapterError.connection("webhook probe answered \(status.code) \(status.reasonPhrase)", targetCode: String(status.code))
        default:
            return  // any other answer shows the receiver is there and lets us in
        }
    }

    public func appliedPosition() async throws -> AppliedPosition? { nil }

    /// The receiver stores no position for us: nothing to rewrite.
    public func setAppliedPosition(_ position: AppliedPosition?) async throws {}

    public func close() async {
        await dropClient()
    }

    private func dropClient() async {
        guard let client else { return }
        self.client = nil
        await client.shutdown()
    }

    // MARK: Request

    /// Most of a response body read only to keep its connection reusable.
    static let drainBytesMax = 1 << 20

    /// The client, made (and the PEM files read) when there is none: at the first call, and
    /// after `close` or a TLS failure.
    private func httpClient() throws(AdapterError) -> HTTPClient {
        if let client { return client.client }
        let tls: TLSConfiguration
        do {
            tls = try settings.tls.clientConfiguration()
        } catch {
            // A file that was there at start-up and is gone or broken now: the link suspends
            // and probes until it is fixed.
            throw AdapterError.connection("webhook \(settings.url): \(error)")
        }
        let timeout = TimeAmount.milliseconds(Int64(settings.timeoutMs))
        // A failed connection attempt fails the request at once, with its reason: the link's
        // probes are the one retry policy. (AsyncHTTPClient would otherwise retry until
        // timeout_ms and only then report the last failure, leaving no time to read a refused
        // certificate for the message.)
        var pool = HTTPClient.Configuration.ConnectionPool()
        pool.retryConnectionEstablishment = false
        let configuration = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow, timeout: .init(connect: timeout, read: timeout),
            connectionPool: pool)
        let owned = OwnedHTTPClient(HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration))
        client = owned
        return owned.client
    }

    private func addHeaders(to request: inout HTTPClientRequest) {
        request.headers.add(name: "User-Agent", value: "orgsync-webhook/0.1")
        for (name, value) in settings.headers { request.headers.replaceOrAdd(name: name, value: value) }
    }

    /// Sends and reads at most `error_body_bytes_max` (+1, to know it was cut) of the body, all
    /// within `timeout_ms`. Transport failures become `connection`, without header values.
    private func send(_ request: HTTPClientRequest, what: String) async throws -> (HTTPResponseStatus, [UInt8]) {
        let client = try httpClient()
        let deadline = NIODeadline.now() + .milliseconds(Int64(settings.timeoutMs))
        let limit = settings.errorBodyBytesMax + 1
        do {
            let response = try await client.execute(request, deadline: deadline, logger: logger)
            // Read the body to its end (so the connection can be kept alive), keeping only the
            // start of an error body; a body past `drainBytesMax` is abandoned instead.
            var body: [UInt8] = []
            let keep = (200..<300).contains(response.status.code) ? 0 : limit
            var drained = 0
            for try await chunk in response.body {
                if body.count < keep { body += chunk.readableBytesView.prefix(keep - body.count) }
                drained += chunk.readableBytes
                if drained > Self.drainBytesMax { break }
            }
            return (response.status, body)
        } catch let error as HTTPClientError
            where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout
        {
            throw AdapterError.connection("webhook \(what) \(request.url): no answer within timeout_ms=\(settings.timeoutMs)")
        } catch {
            if let failure = TLSFailure.classify(error) {
                throw await tlsFailure(failure, url: request.url, what: what)
            }
            throw AdapterError.connection("webhook \(what) \(request.url): \(String(describing: error))")
        }
    }

    /// The `connection` error of a TLS failure, its reason in words. After a verification
    /// failure, the receiver's certificate is read once more (a connection of its own, bounded by
    /// `timeout_ms` on the event loop) to tell an expired one from an unknown CA. Its own bound,
    /// not what is left of the request's: a loaded process can spend the request's time before
    /// it learns the handshake failed, and the reason would then go unnamed. The client is
    /// dropped: the next call makes a new one, which reads the PEM files again.
    private func tlsFailure(_ failure: TLSFailure, url: String, what: String) async -> AdapterError {
        await dropClient()
        let target = URL(string: url)
        let host = target?.host ?? url
        var presented: PresentedCertificate?
        if failure.reason == .certificateVerifyFailed, let target, let targetHost = target.host {
            presented = await PresentedCertificate.read(
                host: targetHost, port: target.port ?? 443, timeout: .milliseconds(Int64(settings.timeoutMs)),
                on: HTTPClient.defaultEventLoopGroup)
        }
        let nowSeconds = Int(Date().timeIntervalSince1970)
        return AdapterError.connection(
            "webhook \(what) \(url): \(failure.message(presented: presented, nowSeconds: nowSeconds, host: host, settings: settings.tls))")
    }

    // MARK: Payload

    /// `<stream>:<stream id>:<epoch>:<first>-<last>`: the same batch always gets the same key,
    /// and a batch of another stream or epoch never gets a key seen before.
    static func idempotencyKey(_ batch: EntryBatch, first: Offset, last: Offset) -> String {
        "\(batch.stream):\(batch.identity.streamID):\(batch.identity.epoch):\(first)-\(last)"
    }

    /// `{"stream","stream_id","epoch","first_offset","last_offset","entries":[…]}` with each
    /// entry's own bytes.
    static func payload(_ batch: EntryBatch) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(batch.entries.reduce(64) { $0 + $1.raw.count + 24 })
        out += Array("{\"stream\":".utf8)
        out += jsonString(batch.stream)
        out += Array(",\"stream_id\":".utf8)
        out += jsonString(batch.identity.streamID)
        out += Array(",\"epoch\":\(batch.identity.epoch)".utf8)
        out += Array(",\"first_offset\":\(batch.firstOffset?.rawValue ?? 0),\"last_offset\":\(batch.lastOffset?.rawValue ?? 0),\"entries\":[".utf8)
        for (index, entry) in batch.entries.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out += entryWithOffset(entry)
        }
        out += Array("]}".utf8)
        return out
    }

    /// The entry's object with `"offset":N` as its first member.
    static func entryWithOffset(_ entry: Entry) -> [UInt8] {
        // An entry that carries its own "offset" member would get two; send the broker's only.
        var source = entry.raw
        if entry.extra["offset"] != nil || source.isEmpty {
            var copy = entry
            copy.extra["offset"] = nil
            source = Array(copy.jsonData())
        }
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        guard let open = source.firstIndex(where: { !isSpace($0) }), source[open] == UInt8(ascii: "{") else {
            return Array("{\"offset\":\(entry.offset.rawValue)}".utf8)
        }
        let rest = source[(open + 1)...]
        let empty = rest.first(where: { !isSpace($0) }) == UInt8(ascii: "}")
        var out = Array("{\"offset\":\(entry.offset.rawValue)".utf8)
        if !empty { out.append(UInt8(ascii: ",")) }
        out += rest
        return out
    }

    static func jsonString(_ text: String) -> [UInt8] {
        let data = (try? JSONEncoder().encode(text)) ?? Data("\"\"".utf8)
        return Array(data)
    }

    /// `rejected_offset` from a JSON error body, if it names an entry of this batch.
    static func rejectedOffset(in body: [UInt8], batch: EntryBatch) -> Offset? {
        struct Body: Decodable { var rejected_offset: UInt64? }
        guard let decoded = try? JSONDecoder().decode(Body.self, from: Data(body)), let value = decoded.rejected_offset else {
            return nil
        }
        let offset = Offset(value)
        return batch.entries.contains(where: { $0.offset == offset }) ? offset : nil
    }

    /// ": <body>" cut to `bytesMax` bytes (marked when cut), or nothing for an empty body.
    static func bodySuffix(_ body: [UInt8], bytesMax: Int) -> String {
        guard !body.isEmpty, bytesMax > 0 else { return "" }
        let cut = body.count > bytesMax
        return ": " + String(decoding: body.prefix(bytesMax), as: UTF8.self) + (cut ? "…(truncated)" : "")
    }
}

/// An HTTPClient that is shut down even when its adapter is dropped without ``WebhookAdapter/close()``
/// (AsyncHTTPClient traps in debug builds on a client that was never shut down).
final class OwnedHTTPClient: Sendable {
    let client: HTTPClient
    private let shutDown = Mutex(false)

    init(_ client: HTTPClient) { self.client = client }

    func shutdown() async {
        let first = shutDown.withLock { done in
            defer { done = true }
            return !done
        }
        if first { try? await client.shutdown() }
    }

    deinit {
        let alreadyDown = shutDown.withLock { $0 }
        if !alreadyDown {
            let client = self.client
            Task { try? await client.shutdown() }
        }
    }
}
