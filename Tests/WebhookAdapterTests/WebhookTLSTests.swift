import OrgSyncTestHTTP
import OrgSyncTestSupport
import Foundation
import NIOHTTP1
import NIOSSL
import OrgSyncPluginAPI
import OrgSyncTestCertificates
@testable import WebhookAdapter
import Testing

/// Runs `body` with a new test CA in a directory of its own, removed afterwards.
func withCertificates(_ body: (TestCertificates) async throws -> Void) async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("orgsync-webtls-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    try await body(TestCertificates(directory: directory))
}

extension ServerTLS {
    init(_ issued: TestCertificates.Issued, clientCAFile: String? = nil) {
        self.init(certificateFile: issued.certificateFile, keyFile: issued.keyFile, clientCAFile: clientCAFile)
    }
}

extension WebhookTLSSettings {
    init(clientCertificate issued: TestCertificates.Issued, caFile: String) {
        self.init(caFile: caFile, certificateFile: issued.certificateFile, keyFile: issued.keyFile)
    }
}

/// A batch of one entry, offset 1: its Idempotency-Key is `events:test:1:1-1`.
let oneEntryBatch = EntryBatch(stream: "events", identity: StreamIdentity(streamID: "test", epoch: 1), entries: [entry(1, "a")])

let answerOK: @Sendable (RecordedRequest) -> Reply? = { _ in Reply(status: .ok) }

@Suite struct WebhookTLSTests {
    @Test func httpsWithTheCAFileAppliesTheBatch() async throws {
        try await withCertificates { certificates in
            let receiverCertificate = try certificates.issue("receiver", hosts: ["127.0.0.1"])
            try await withReceiver(
                serverTLS: ServerTLS(receiverCertificate), tls: WebhookTLSSettings(caFile: certificates.caFile), respond: answerOK
            ) { adapter, receiver in
                #expect(receiver.url.hasPrefix("https://"))
                try await adapter.apply(oneEntryBatch)
                #expect(receiver.requests.map(\.method) == [.POST])
                #expect(receiver.requests.first?.headers["Idempotency-Key"] == ["events:test:1:1-1"])
                try await adapter.probe()
                #expect(receiver.requests.map(\.method) == [.POST, .HEAD])
            }
        }
    }

    @Test func withoutTheCAFileTheSystemRootsRefuseAPrivateCA() async throws {
        let secret = "Bearer tls-s3cret-\(UInt32.random(in: 0...UInt32.max))"
        let logs = CapturedLogs()
        try await withCertificates { certificates in
            let receiverCertificate = try certificates.issue("receiver", hosts: ["127.0.0.1"])
            try await withReceiver(
                headers: ["Authorization": secret], logs: logs, serverTLS: ServerTLS(receiverCertificate), respond: answerOK
            ) { adapter, receiver in
                let error = await adapterError { try await adapter.apply(oneEntryBatch) }
                #expect(error?.kind == .connection)
                #expect(error?.message.contains("webhook POST \(receiver.url): TLS: certificate verify failed: unknown CA") == true, "\(String(describing: error))")
                #expect(error?.message.contains("the system's trust roots") == true)
                #expect(receiver.requests.isEmpty, "nothing was sent before the certificate was checked")
                #expect(error.map { !$0.description.contains(secret) } == true)
                #expect(!logs.lines.contains { $0.contains("s3cret") })
            }
        }
    }

    @Test func aCertificateForAnotherHostNameIsRefused() async throws {
        try await withCertificates { certificates in
            let receiverCertificate = try certificates.issue("elsewhere", hosts: ["elsewhere.example"])
            try await withReceiver(
                serverTLS: ServerTLS(receiverCertificate), tls: WebhookTLSSettings(caFile: certificates.caFile), respond: answerOK
            ) { adapter, receiver in
                let error = await adapterError { try await adapter.apply(oneEntryBatch) }
                #expect(error?.kind == .connection)
                #expect(error?.message.contains("TLS: host name does not match the certificate (127.0.0.1)") == true, "\(String(describing: error))")
                #expect(receiver.requests.isEmpty)
            }
        }
    }

    @Test func anExpiredCertificateIsRefusedNamingItsEnd() async throws {
        try await withCertificates { certificates in
            let receiverCertificate = try certificates.issue("receiver", hosts: ["127.0.0.1"], validity: .expired)
            try await withReceiver(
                serverTLS: ServerTLS(receiverCertificate), tls: WebhookTLSSettings(caFile: certificates.caFile), respond: answerOK
            ) { adapter, receiver in
                let error = await adapterError { try await adapter.apply(oneEntryBatch) }
                #expect(error?.kind == .connection)
                #expect(error?.message.contains("TLS: certificate expired (not valid after ") == true, "\(String(describing: error))")
                #expect(receiver.requests.isEmpty)
            }
        }
    }

    @Test func aReceiverThatRequiresAClientCertificateTakesTheOneFromCertFileAndKeyFile() async throws {
        try await withCertificates { certificates in
            let receiverCertificate = try certificates.issue("receiver", hosts: ["127.0.0.1"])
            let clientCertificate = try certificates.issue("client")
            let otherCA = try TestCertificates(directory: certificates.directory, name: "another CA", file: "another")
            let strangerCertificate = try otherCA.issue("stranger")
            let serverTLS = ServerTLS(receiverCertificate, clientCAFile: certificates.caFile)
            try await withReceiver(
                serverTLS: serverTLS, tls: WebhookTLSSettings(clientCertificate: clientCertificate, caFile: certificates.caFile), respond: answerOK
            ) { adapter, receiver in
                try await adapter.apply(oneEntryBatch)
                #expect(receiver.requests.map(\.method) == [.POST])
                #expect(receiver.requests.first?.headers["Idempotency-Key"] == ["events:test:1:1-1"])
            }
            try await withReceiver(
                serverTLS: serverTLS, tls: WebhookTLSSettings(caFile: certificates.caFile), respond: answerOK
            ) { adapter, receiver in
                let error = await adapterError { try await adapter.apply(oneEntryBatch) }
                #expect(error?.kind == .connection)
                #expect(error?.message.contains("TLS: the receiver requires a client certificate; set cert_file and key_file") == true, "\(String(describing: error))")
                #expect(receiver.requests.isEmpty)
            }
            try await withReceiver(
                serverTLS: serverTLS, tls: WebhookTLSSettings(clientCertificate: strangerCertificate, caFile: certificates.caFile), respond: answerOK
            ) { adapter, receiver in
                let error = await adapterError { try await adapter.apply(oneEntryBatch) }
                #expect(error?.kind == .connection)
                #expect(
                    error?.message.contains("TLS: the receiver refused the client certificate (cert_file=\(strangerCertificate.certificateFile))") == true,
                    "\(String(describing: error))")
                #expect(receiver.requests.isEmpty)
            }
        }
    }

    @Test func insecureSkipVerifyReachesAnUntrustedReceiverAndWarnsWhenTheAdapterStarts() async throws {
        let logs = CapturedLogs()
        try await withCertificates { certificates in
            // Neither the CA nor the host name would pass verification.
            let receiverCertificate = try certificates.issue("elsewhere", hosts: ["elsewhere.example"])
            try await withReceiver(
                logs: logs, serverTLS: ServerTLS(receiverCertificate), tls: WebhookTLSSettings(insecureSkipVerify: true), respond: answerOK
            ) { adapter, receiver in
                #expect(logs.lines.isEmpty, "made, not started yet")
                try await adapter.open()
                try await adapter.apply(oneEntryBatch)
                #expect(receiver.requests.map(\.method) == [.HEAD, .POST])
                #expect(receiver.requests.last?.headers["Idempotency-Key"] == ["events:test:1:1-1"])
                let warnings = logs.lines.filter { $0.hasPrefix("warning ") }
                #expect(warnings.count == 1, "\(logs.lines)")
                #expect(warnings.first?.contains("webhook \(receiver.url): insecure_skip_verify is true") == true)
                await adapter.close()
                try await adapter.open()
                #expect(logs.lines.filter { $0.hasPrefix("warning ") }.count == 1, "once per adapter, not at every reopen")
            }
        }
    }

    @Test func theNextProbeReachesAReceiverWhoseCertificateWasReplaced() async throws {
        try await withCertificates { certificates in
            let expired = try certificates.issue("expired", hosts: ["127.0.0.1"], validity: .expired)
            let renewed = try certificates.issue("renewed", hosts: ["127.0.0.1"])
            try await withReceiver(
                serverTLS: ServerTLS(expired), tls: WebhookTLSSettings(caFile: certificates.caFile), respond: answerOK
            ) { adapter, receiver in
                let error = await adapterError { try await adapter.probe() }
                #expect(error?.kind == .connection)
                #expect(error?.message.contains("webhook probe HEAD \(receiver.url)/probe: TLS: certificate expired") == true, "\(String(describing: error))")
                try receiver.useTLS(ServerTLS(renewed))
                try await adapter.probe()
                try await adapter.apply(oneEntryBatch)
                #expect(receiver.requests.map(\.method) == [.HEAD, .POST])
            }
        }
    }

    @Test func aReplacedCAFileIsReadAgainAfterAFailure() async throws {
        try await withCertificates { certificates in
            let receiverCertificate = try certificates.issue("receiver", hosts: ["127.0.0.1"])
            let otherCA = try TestCertificates(directory: certificates.directory, name: "another CA", file: "another")
            let trusted = certificates.directory + "/trusted.pem"
            try Data(otherCA.caPEM.utf8).write(to: URL(fileURLWithPath: trusted))
            try await withReceiver(
                serverTLS: ServerTLS(receiverCertificate), tls: WebhookTLSSettings(caFile: trusted), respond: answerOK
            ) { adapter, receiver in
                let error = await adapterError { try await adapter.probe() }
                #expect(error?.message.contains("TLS: certificate verify failed: unknown CA (ca_file=\(trusted))") == true, "\(String(describing: error))")
                try Data(certificates.caPEM.utf8).write(to: URL(fileURLWithPath: trusted))
                try await adapter.probe()
                #expect(receiver.requests.map(\.method) == [.HEAD])
            }
        }
    }

    @Test func tlsSettingsThatCannotWorkStopStartUpNamingTheSettingAndThePath() async throws {
        try await withCertificates { certificates in
            let directory = certificates.directory
            let client = try certificates.issue("client")
            let other = try certificates.issue("other")
            let garbage = directory + "/garbage.pem"
            try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: garbage))
            let https = "https://127.0.0.1:1/hook"
            func problem(_ settings: [String: String]) -> AdapterConfigurationError? {
                let configuration = AdapterConfiguration(linkName: "l", streamName: "s", settings: settings, dataDirectory: directory)
                do {
                    _ = try WebhookAdapterFactory().makeAdapter(configuration)
                    return nil
                } catch let error as AdapterConfigurationError {
                    return error
                } catch {
                    Issue.record("expected an AdapterConfigurationError, got \(error)")
                    return nil
                }
            }
            let plainURL = problem(["url": "http://127.0.0.1:1/hook", "ca_file": certificates.caFile])
            #expect(plainURL?.setting == "ca_file")
            #expect(plainURL?.problem.contains("https:// only, but url is http://127.0.0.1:1/hook") == true)
            let plainProbe = problem(["url": https, "probe_url": "http://127.0.0.1:1/probe", "insecure_skip_verify": "true"])
            #expect(plainProbe?.setting == "insecure_skip_verify")
            #expect(plainProbe?.problem.contains("probe_url is http://") == true)
            let missing = problem(["url": https, "ca_file": directory + "/missing.pem"])
            #expect(missing?.setting == "ca_file")
            #expect(missing?.problem == "names \(directory)/missing.pem, which does not exist")
            let unparsable = problem(["url": https, "ca_file": garbage])
            #expect(unparsable?.setting == "ca_file")
            #expect(unparsable?.problem == "\(garbage) holds no PEM certificate")
            let keyAsCertificate = problem(["url": https, "cert_file": client.keyFile, "key_file": client.keyFile])
            #expect(keyAsCertificate?.setting == "cert_file")
            #expect(problem(["url": https, "cert_file": client.certificateFile])?.setting == "key_file")
            #expect(problem(["url": https, "key_file": client.keyFile])?.setting == "cert_file")
            let certificateAsKey = problem(["url": https, "cert_file": client.certificateFile, "key_file": client.certificateFile])
            #expect(certificateAsKey?.setting == "key_file")
            #expect(certificateAsKey?.problem.contains("holds no usable PEM private key") == true)
            let wrongKey = problem(["url": https, "cert_file": client.certificateFile, "key_file": other.keyFile])
            #expect(wrongKey?.setting == "key_file")
            #expect(wrongKey?.problem.contains("is not the private key of the certificate in cert_file \(client.certificateFile)") == true)
            #expect(problem(["url": https, "insecure_skip_verify": "yes"])?.setting == "insecure_skip_verify")
            #expect(problem(["url": https, "insecure_skip_verify": "true", "ca_file": certificates.caFile])?.setting == "ca_file")
            #expect(problem(["url": "http://127.0.0.1:1/hook", "insecure_skip_verify": "false"]) == nil, "false changes nothing")

            // Relative paths resolve against the data directory; the description shows paths only.
            let caName = String(certificates.caFile.dropFirst(directory.count + 1))
            let configuration = AdapterConfiguration(
                linkName: "l", streamName: "s",
                settings: ["url": https, "ca_file": caName, "cert_file": client.certificateFile, "key_file": client.keyFile],
                dataDirectory: directory)
            let adapter = try #require(try WebhookAdapterFactory().makeAdapter(configuration) as? WebhookAdapter)
            #expect(adapter.settings.tls == WebhookTLSSettings(clientCertificate: client, caFile: certificates.caFile))
            #expect(adapter.settings.description.contains("ca_file=\(certificates.caFile) cert_file=\(client.certificateFile) key_file=\(client.keyFile)"))
            #expect(!adapter.settings.description.contains("PRIVATE KEY"))
        }
    }

    @Test func aFileGoneAfterStartUpIsAConnectionFailureNamingIt() async throws {
        let adapter = WebhookAdapter(
            streamName: "events",
            settings: WebhookAdapterSettings(url: "https://127.0.0.1:1/hook", tls: WebhookTLSSettings(caFile: "/nonexistent/ca.pem")))
        let error = await adapterError { try await adapter.probe() }
        #expect(error?.kind == .connection)
        #expect(error?.message == "webhook https://127.0.0.1:1/hook: setting \"ca_file\" names /nonexistent/ca.pem, which does not exist")
        await adapter.close()
    }

    @Test func aVerificationFailureIsNamedFromThePresentedCertificate() {
        let failure = TLSFailure(reason: .certificateVerifyFailed, detail: "library text")
        let tls = WebhookTLSSettings(caFile: "/etc/orgsync/ca.pem")
        let now = 1_800_000_000  // 2027-01-15T08:00:00Z
        func words(_ presented: PresentedCertificate?) -> String {
            failure.words(presented: presented, nowSeconds: now, host: "hooks.example", settings: tls)
        }
        #expect(words(PresentedCertificate(notValidBeforeSeconds: now - 200, notValidAfterSeconds: now - 100))
            == "certificate expired (not valid after 2027-01-15T07:58:20Z)")
        #expect(words(PresentedCertificate(notValidBeforeSeconds: now + 100, notValidAfterSeconds: now + 200))
            == "certificate not yet valid (not valid before 2027-01-15T08:01:40Z)")
        #expect(words(PresentedCertificate(notValidBeforeSeconds: now - 100, notValidAfterSeconds: now + 100))
            == "certificate verify failed: unknown CA (ca_file=/etc/orgsync/ca.pem)")
        #expect(words(nil) == "certificate verify failed: unknown CA, expired or not yet valid (trusted: ca_file=/etc/orgsync/ca.pem)")
        #expect(failure.message(presented: nil, nowSeconds: now, host: "hooks.example", settings: tls).hasSuffix(" [library text]"))
        let hostName = TLSFailure.classify(NIOSSLExtraError.failedToValidateHostname)
        #expect(hostName?.reason == .hostNameMismatch)
        #expect(hostName?.words(presented: nil, nowSeconds: now, host: "hooks.example", settings: tls)
            == "host name does not match the certificate (hooks.example)")
        #expect(TLSFailure.classify(NIOSSLError.handshakeFailed(.sslError([])))?.reason == .other)
        #expect(TLSFailure.classify(CancellationError()) == nil, "not a TLS failure")
    }
}
