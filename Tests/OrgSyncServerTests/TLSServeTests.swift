import AsyncHTTPClient
import Foundation
import NIOHTTP1
import OrgSyncTestCertificates
import OrgSyncTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `orgsync serve` with `server.tls`, as a process: certificate rotation by SIGHUP under load,
/// a bad certificate file at start, and the CLI's `--cacert`.
@Suite(.serialized) struct TLSServeTests {
    struct Setup {
        var directory: String
        var first: TestCertificates
        var second: TestCertificates
        var secondIssued: TestCertificates.Issued
        var config: String
        var certFile: String
        var keyFile: String
    }

    /// Two authorities, a certificate of the first installed where the broker reads it, and a
    /// configuration serving it on a free port with auth off (loopback).
    func setUp() throws -> Setup {
        let directory = try temporaryCertificateDirectory()
        let first = try TestCertificates(directory: directory, name: "first CA", file: "first")
        let second = try TestCertificates(directory: directory, name: "second CA", file: "second")
        let certFile = directory + "/live.pem", keyFile = directory + "/live-key.pem"
        try install(try first.issue("first", hosts: ["127.0.0.1"]), certFile: certFile, keyFile: keyFile)
        let config = directory + "/orgsync.yaml"
        try """
            auth: { enabled: false }
            server: { port: 0, tls: { cert_file: \(certFile), key_file: \(keyFile) } }
            streams:
              - name: events
            """.write(toFile: config, atomically: true, encoding: .utf8)
        return Setup(directory: directory, first: first, second: second,
                     secondIssued: try second.issue("second", hosts: ["127.0.0.1"]),
                     config: config, certFile: certFile, keyFile: keyFile)
    }

    /// What the producers saw, and when they are to stop.
    final class Tally: Sendable {
        struct Counts: Sendable {
            var acknowledged = 0
            var failures: [String] = []
        }
        let counts = Observed(Counts())
        let stopped = Mutex(false)
        var acknowledged: Int { counts.value.acknowledged }
        var failures: [String] { counts.value.failures }
        func record(_ answer: (status: Int, body: String)) {
            counts.update { counts in
                if answer.status == 201 {
                    counts.acknowledged += 1
                } else {
                    counts.failures.append("\(answer.status) \(answer.body)")
                }
            }
        }
        func record(_ error: any Error) { counts.update { $0.failures.append("\(error)") } }
        var isStopped: Bool { stopped.withLock { $0 } }
        func stop() { stopped.withLock { $0 = true } }

        /// Returns once `count` appends were acknowledged or one failed; at most 60 s.
        func waitForAcknowledged(_ count: Int) async throws {
            let counts = self.counts
            try await withTimeout(ms: 60_000, "\(count) acknowledged appends") {
                _ = try await counts.wait { $0.acknowledged >= count || !$0.failures.isEmpty }
            }
        }
    }

    @Test func sighupRotatesTheCertificateUnderLoadAndDropsNoRequest() async throws {
        let setup = try setUp()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        let broker = try await BrokerProcess.start(arguments: ["--config", setup.config, "--data-dir", setup.directory + "/state"])
        let url = "https://127.0.0.1:\(broker.port)/v1/streams/events/entries"
        let bothAuthorities = [setup.first.caFile, setup.second.caFile]
        let tally = Tally()
        try await withThrowingTaskGroup(of: Void.self) { producers in
            // Two producers on kept-alive connections, two opening a connection per request.
            for producer in 0..<4 {
                producers.addTask {
                    var i = 0
                    func one(_ client: HTTPClient) async {
                        i += 1
                        do {
                            tally.record(try await call(client, .POST, url, body: entryJSON(producer * 1_000_000 + i)))
                        } catch {
                            tally.record(error)
                        }
                    }
                    if producer < 2 {
                        try await withTLSClient(trusting: bothAuthorities) { client in
                            while !tally.isStopped { await one(client) }
                        }
                    } else {
                        while !tally.isStopped {
                            try await withTLSClient(trusting: bothAuthorities) { client in await one(client) }
                        }
                    }
                }
            }
            do {
                try await tally.waitForAcknowledged(40)
                let secondOnly = await errorOf {
                    _ = try await withTLSClient(trusting: [setup.second.caFile]) { try await call($0, .GET, "https://127.0.0.1:\(broker.port)/health/live") }
                }
                #expect(isTLSFailure(secondOnly), "before the rotation: \(String(describing: secondOnly))")

                try install(setup.secondIssued, certFile: setup.certFile, keyFile: setup.keyFile)
                kill(broker.process.processIdentifier, SIGHUP)
                let deadline = ContinuousClock.now + .seconds(30)
                while !broker.standardError.contains("TLS certificate reloaded") {
                    guard ContinuousClock.now < deadline, broker.process.isRunning else {
                        throw ProcessError("no reload after SIGHUP: \(broker.standardError)")
                    }
                    try await Task.sleep(for: .milliseconds(10))
                }
                let reloadedAt = tally.acknowledged
                let health = try await withTLSClient(trusting: [setup.second.caFile]) {
                    try await call($0, .GET, "https://127.0.0.1:\(broker.port)/health/live")
                }
                #expect(health.status == 200, "after the rotation a new connection gets the second CA's certificate")
                let firstOnly = await errorOf {
                    _ = try await withTLSClient(trusting: [setup.first.caFile]) { try await call($0, .GET, "https://127.0.0.1:\(broker.port)/health/live") }
                }
                #expect(isTLSFailure(firstOnly), "after the rotation: \(String(describing: firstOnly))")
                try await tally.waitForAcknowledged(reloadedAt + 40)
            } catch {
                tally.stop()
                throw error
            }
            tally.stop()
            try await producers.waitForAll()
        }
        #expect(tally.failures.isEmpty, "\(tally.failures.prefix(5))")
        // Every acknowledged append is in the stream, and nothing else.
        let stream = try await withTLSClient(trusting: [setup.second.caFile]) {
            try await call($0, .GET, "https://127.0.0.1:\(broker.port)/v1/streams/events")
        }
        #expect(stream.body.contains(#""end_offset":\#(tally.acknowledged)"#), "\(stream.body), acknowledged \(tally.acknowledged)")
        #expect(await broker.terminate() == 0)
    }

    @Test func theCLITalksToAnHTTPSBrokerWithCacert() async throws {
        let setup = try setUp()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        let broker = try await BrokerProcess.start(arguments: ["--config", setup.config, "--data-dir", setup.directory + "/state"])
        let url = "https://127.0.0.1:\(broker.port)"
        let trusted = try await CommandLineTests.run(["status", "--url", url, "--cacert", setup.first.caFile])
        #expect(trusted.status == 0, "\(trusted.standardError)")
        let untrusted = try await CommandLineTests.run(["status", "--url", url])
        #expect(untrusted.status != 0)
        #expect(untrusted.standardError.contains("TLS"), "\(untrusted.standardError)")
        let wrongCA = try await CommandLineTests.run(["status", "--url", url, "--cacert", setup.second.caFile])
        #expect(wrongCA.status != 0)
        let input = (1...3).map { entryJSON($0) }.joined(separator: "\n") + "\n"
        let produced = try await CommandLineTests.run(
            ["produce", "--url", url, "--cacert", setup.first.caFile, "--stream", "events", "-"], input: input)
        #expect(produced.status == 0, "\(produced.standardError)")
        let plainURL = try await CommandLineTests.run(["status", "--url", "http://127.0.0.1:\(broker.port)", "--cacert", setup.first.caFile])
        #expect(plainURL.status != 0)
        #expect(plainURL.standardError.contains("--cacert"), "\(plainURL.standardError)")
        let stream = try await withTLSClient(trusting: [setup.first.caFile]) { try await call($0, .GET, url + "/v1/streams/events") }
        #expect(stream.body.contains(#""end_offset":3"#), "\(stream.body)")
        #expect(await broker.terminate() == 0)
    }

    @Test func aCertificateFileThatCannotBeReadStopsStartupNamingIt() async throws {
        let setup = try setUp()
        defer { try? FileManager.default.removeItem(atPath: setup.directory) }
        try FileManager.default.removeItem(atPath: setup.certFile)
        let outcome = try await CommandLineTests.run(["serve", "--config", setup.config, "--data-dir", setup.directory + "/state"])
        #expect(outcome.status == 2)
        #expect(outcome.standardError.contains("server.tls.cert_file"), "\(outcome.standardError)")
        #expect(outcome.standardError.contains(setup.certFile), "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: setup.directory + "/state/streams"), "nothing opened")
    }
}
