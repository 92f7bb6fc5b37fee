import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OrgSyncAPI

/// Failover of a leased link, timed on real processes: two `orgsync serve` members on the
/// benchmark's NATS cluster share one leased link into a SQLite file. Each round SIGKILLs the
/// member running it, appends one entry through the other, and times from the kill until the
/// other member has applied that entry (its link's cursor past it): what a target sees of a
/// member's death. The killed member is started again and gets the link back (rendezvous
/// placement hands it over) before the next round.
struct ClusterFailover {
    let binary: String
    let natsURLs: [String]
    let directory: String
    let leaseMs: Int

    static let link = "failover"
    static let stream = "failover"
    /// How long a member may take to answer ready, or a link to be placed or applied, s.
    static let waitMaxSeconds: Double = 60
    static let pollIntervalMs = 20

    /// The executable next to this benchmark's (the same build), unless given.
    static func defaultBinary() -> String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("orgsync").path
    }

    final class Member {
        let node: String
        let port: Int
        let configPath: String
        let logPath: String
        var process: Process?

        init(node: String, port: Int, configPath: String, logPath: String) {
            self.node = node
            self.port = port
            self.configPath = configPath
            self.logPath = logPath
        }
    }

    /// Failover times in ns, one per round.
    func run(rounds: Int) async throws -> [UInt64] {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ValidationErrorText("no orgsync executable at \(binary): build it (swift build -c release --product orgsync) or pass --orgsync")
        }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            let times = try await timeRounds(rounds, client: client)
            try? await client.shutdown()
            return times
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func timeRounds(_ rounds: Int, client: HTTPClient) async throws -> [UInt64] {
        let members = try ["a", "b"].map { node in
            let member = Member(
                node: node, port: try LocalNATSCluster.freeLoopbackPort(),
                configPath: "\(directory)/\(node).yaml", logPath: "\(directory)/\(node).log")
            try configuration(node: node, port: member.port).write(toFile: member.configPath, atomically: true, encoding: .utf8)
            return member
        }
        defer { for member in members { stop(member) } }
        for member in members { try await start(member, client: client) }

        var times: [UInt64] = []
        var appended = 0
        for _ in 0..<rounds {
            let owner = try await waitFor("the link to run on one member") { try await running(members, client: client).first }
            guard let other = members.first(where: { $0 !== owner }) else { throw ValidationErrorText("two members, one runs the link") }
            // Applied up to here before the kill, so that what is timed is the one entry after it.
            let before = try await append(appended, through: other, client: client)
            appended += 1
            _ = try await waitFor("\(owner.node) to apply offset \(before)") { try await applied(before, on: owner, client: client) ? true : nil }
            let killedAt = nowNs()
            kill(owner)
            let after = try await append(appended, through: other, client: client)
            appended += 1
            _ = try await waitFor("\(other.node) to apply offset \(after) after \(owner.node) was killed") {
                try await applied(after, on: other, client: client) ? true : nil
            }
            times.append(nowNs() - killedAt)
            try await start(owner, client: client)
        }
        return times
    }

    func configuration(node: String, port: Int) -> String {
        """
        data_dir: \(directory)/\(node)
        server: { host: 127.0.0.1, port: \(port) }
        log: { level: notice }
        auth: { enabled: false }
        cluster: { node: \(node), nats_urls: [\(natsURLs.map { "\"\($0)\"" }.joined(separator: ", "))], replicas: 3, lease_ms: \(leaseMs) }
        streams: [ { name: \(Self.stream) } ]
        links:
          - { name: \(Self.link), stream: \(Self.stream), adapter: sqlite, settings: { path: \(directory)/target.sqlite } }

        """
    }

    func start(_ member: Member, client: HTTPClient) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", member.configPath]
        if !FileManager.default.fileExists(atPath: member.logPath) {
            guard FileManager.default.createFile(atPath: member.logPath, contents: nil) else {
                throw ValidationErrorText("cannot create \(member.logPath)")
            }
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: member.logPath))
        try log.seekToEnd()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        member.process = process
        _ = try await waitFor("member \(member.node) to be ready (its log: \(member.logPath))") {
            guard process.isRunning else { throw ValidationErrorText("member \(member.node) exited; its log: \(member.logPath)") }
            return try? await get("/health/ready", on: member, client: client).status == 200 ? true : nil
        }
    }

    func kill(_ member: Member) {
        guard let process = member.process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        member.process = nil
    }

    func stop(_ member: Member) {
        guard let process = member.process, process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// The members running the link now.
    func running(_ members: [Member], client: HTTPClient) async throws -> [Member] {
        var found: [Member] = []
        for member in members where member.process?.isRunning == true {
            if (try? await get("/v1/links/\(Self.link)", on: member, client: client).status) == 200 { found.append(member) }
        }
        return found.count == 1 ? found : []
    }

    /// Whether the member runs the link and its cursor is past `offset`.
    func applied(_ offset: UInt64, on member: Member, client: HTTPClient) async throws -> Bool {
        guard let (status, body) = try? await get("/v1/links/\(Self.link)", on: member, client: client), status == 200 else { return false }
        let link = try APIJSON.decoder().decode(LinkStatusBody.self, from: Data(body))
        return link.cursor > offset
    }

    /// Appends one entry (retrying while the member answers 503); returns its offset.
    func append(_ index: Int, through member: Member, client: HTTPClient) async throws -> UInt64 {
        let line = #"{"org":"bench","object":"Account","op":"upsert","key":"F\#(index)","ts":"2026-11-28T00:00:00Z","fields":{"Name":"failover \#(index)"}}"#
        return try await waitFor("an append through \(member.node)") {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(member.port)/v1/streams/\(Self.stream)/entries")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/x-ndjson")
            request.headers.add(name: "Idempotency-Key", value: "failover-\(index)")
            request.body = .bytes(ByteBuffer(string: line + "\n"))
            guard let response = try? await client.execute(request, timeout: .seconds(10)) else { return nil }
            let body = try await response.body.collect(upTo: 1 << 20)
            guard response.status.code == 201 else { return nil }
            return try APIJSON.decoder().decode(AppendBody.self, from: Data(Array(buffer: body))).lastOffset
        }
    }

    func get(_ path: String, on member: Member, client: HTTPClient) async throws -> (status: UInt, body: [UInt8]) {
        let response = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(member.port)\(path)"), timeout: .seconds(2))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (response.status.code, Array(buffer: body))
    }

    /// Polls `attempt` until it returns a value, at most ``waitMaxSeconds``.
    func waitFor<Value>(_ what: String, _ attempt: () async throws -> Value?) async throws -> Value {
        let deadline = nowNs() + UInt64(Self.waitMaxSeconds * 1e9)
        while nowNs() < deadline {
            if let value = try await attempt() { return value }
            try await Task.sleep(for: .milliseconds(Self.pollIntervalMs))
        }
        throw ValidationErrorText("timed out after \(Int(Self.waitMaxSeconds)) s waiting for \(what)")
    }
}
