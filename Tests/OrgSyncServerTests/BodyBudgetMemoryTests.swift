import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// Issue 12's measurement, on the real `orgsync serve`: 30 concurrent 16 MiB bodies (each a
/// valid NDJSON request) used to take the broker from ~46 MB to ~667 MB RSS. With the default
/// `inflight_body_bytes_max` (64 MiB) the peak (VmHWM) stays within the budget + 100 MiB of
/// where it started, and it returns near the start afterwards.
@Suite(.serialized) struct BodyBudgetMemoryTests {
    static func memoryKiB(_ pid: Int32, _ field: String) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let kib = line.split(separator: " ").dropFirst().first(where: { Int($0) != nil }).flatMap({ Int($0) })
        else { throw ProcessError("no \(field) in /proc/\(pid)/status") }
        return kib
    }

    @Test func thirtyConcurrentSixteenMiBBodiesStayWithinTheBudget() async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/orgsync-rss-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/c.yaml"
        try "auth: { enabled: false }\nstreams: [ { name: events } ]\n".write(toFile: config, atomically: true, encoding: .utf8)
        let broker = try await BrokerProcess.start(arguments: ["--config", config, "--data-dir", directory + "/d", "--port", "0"])
        let pid = broker.process.processIdentifier
        let url = "http://127.0.0.1:\(broker.port)/v1/streams/events/entries"
        // One small append first, so the baseline includes a warmed-up broker.
        _ = try await post(url, body: Data(#"{"org":"o","object":"L","op":"upsert","key":"w","ts":"t"}"#.utf8), contentType: "application/json")
        let startKiB = try Self.memoryKiB(pid, "VmRSS")
        let line = #"{"org":"o","object":"L","op":"upsert","key":"k","ts":"t","fields":{"Pad":"\#(String(repeating: "x", count: 16_000))"}}"# + "\n"
        let body = Data(String(repeating: line, count: (16 << 20) / line.utf8.count - 1).utf8)
        // 30 connections at once (URLSession's default is 6 per host), generous time per upload.
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpMaximumConnectionsPerHost = 30
        configuration.timeoutIntervalForRequest = 120
        let session = URLSession(configuration: configuration)
        let statuses = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<30 {
                group.addTask {
                    var request = URLRequest(url: URL(string: url)!)
                    request.httpMethod = "POST"
                    request.httpBody = body
                    request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
                    request.timeoutInterval = 120
                    guard let (_, response) = try? await session.data(for: request) else { return 0 }
                    return (response as? HTTPURLResponse)?.statusCode ?? 0
                }
            }
            var all: [Int] = []
            for await status in group { all.append(status) }
            return all
        }
        #expect(statuses.allSatisfy { $0 == 201 || $0 == 503 }, "each body is appended or refused for the budget: \(statuses)")
        #expect(statuses.contains(201))
        let peakKiB = try Self.memoryKiB(pid, "VmHWM")
        let budgetKiB = 64 << 10
        #expect(peakKiB - startKiB <= budgetKiB + 100 << 10,
                "peak RSS \(peakKiB / 1024) MiB, from \(startKiB / 1024) MiB: more than the 64 MiB budget + 100 MiB")
        // Back near the start once the bodies are gone (freed pages go back to the system),
        // waited for with a bound: the release trims in the background.
        let deadline = Date().addingTimeInterval(10)
        var endKiB = try Self.memoryKiB(pid, "VmRSS")
        while endKiB - startKiB > 64 << 10, Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
            endKiB = try Self.memoryKiB(pid, "VmRSS")
        }
        #expect(endKiB - startKiB <= 64 << 10, "RSS \(endKiB / 1024) MiB after the bodies, from \(startKiB / 1024) MiB")
        print("body budget: RSS \(startKiB / 1024) MiB → peak \(peakKiB / 1024) MiB → \(endKiB / 1024) MiB after; statuses 201×\(statuses.count { $0 == 201 }), 503×\(statuses.count { $0 == 503 })")
        #expect(await broker.terminate() == 0)
    }
}
