import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Options of the commands that talk to a running broker.
struct BrokerOptions: ParsableArguments {
    @Option(help: "The broker's base URL (or ORGSYNC_URL).")
    var url: String = ProcessInfo.processInfo.environment["ORGSYNC_URL"] ?? "http://127.0.0.1:7070"

    @Flag(help: "Print JSON instead of text.")
    var json = false

    /// The bearer token comes from ORGSYNC_TOKEN only: a token on the command line would show
    /// in `ps` and shell history.
    var token: String? { ProcessInfo.processInfo.environment["ORGSYNC_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    func client() throws -> BrokerClient {
        guard let base = URL(string: url), base.scheme == "http" || base.scheme == "https", base.host != nil else {
            throw ValidationError("--url must be an http(s) URL, not \(url)")
        }
        return BrokerClient(base: base, token: token)
    }
}

/// A small HTTP client for the broker's JSON API.
struct BrokerClient {
    let base: URL
    let token: String?

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Sends a request; returns the body of a 2xx answer, throws the broker's error message otherwise.
    func send(_ method: String, _ path: String, body: Data? = nil, contentType: String? = nil) async throws -> Data {
        guard let url = URL(string: path, relativeTo: base) else { throw Failure(description: "bad path \(path)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.httpBody = body
        request.timeoutInterval = 60
        if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw Failure(description: "cannot reach the broker at \(base.absoluteString): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            struct ErrorBody: Decodable {
                struct Detail: Decodable { var code: String; var message: String }
                var error: Detail
            }
            if let error = try? JSONDecoder().decode(ErrorBody.self, from: data) {
                throw Failure(description: "\(status) \(error.error.code): \(error.error.message)")
            }
            throw Failure(description: "HTTP \(status)")
        }
        return data
    }

    func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        try decode(try await send("GET", path), as: type)
    }

    func decode<T: Decodable>(_ data: Data, as type: T.Type) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try decoder.decode(type, from: data)
        } catch {
            throw Failure(description: "unexpected answer from the broker: \(error)")
        }
    }
}

/// A link's status as the broker's API returns it.
struct LinkStatusResponse: Codable {
    var name: String
    var stream: String
    var state: String
    var heldDown: Bool
    var cursor: UInt64
    var endOffset: UInt64
    var lag: UInt64
    var lastError: String?
    var probeProgress: String
    var timeInStateMs: UInt64
    var suspensions: Int
    var flaps: Int
    var rejectedEntries: Int
    var deadLettersFailed: Int
    var running: Bool
}

struct SyncLogResponse: Codable {
    struct Record: Codable {
        var sequence: UInt64
        var timeMs: UInt64
        var event: String
        var reason: String
    }
    var records: [Record]
}
