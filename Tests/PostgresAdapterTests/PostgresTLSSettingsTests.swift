import Foundation
import OrgSyncPluginAPI
import OrgSyncTestCertificates
@testable import PostgresAdapter
import Testing

/// `sslmode` and its files as settings, without a server: what parses, what is refused at
/// start (naming the setting), and the words a TLS failure is reported in.
@Suite struct PostgresTLSSettingsTests {
    func configuration(_ tls: [String: String], dataDirectory: String = "/var/lib/orgsync") -> AdapterConfiguration {
        AdapterConfiguration(
            linkName: "l", streamName: "s", settings: ["user": "u", "database": "d"].merging(tls) { $1 }, dataDirectory: dataDirectory)
    }

    func problem(_ tls: [String: String]) -> AdapterConfigurationError? {
        do {
            _ = try PostgresAdapterSettings(configuration(tls), environment: [:])
            return nil
        } catch {
            return error
        }
    }

    @Test func everySSLModeParsesAndTheDefaultIsPrefer() throws {
        #expect(try PostgresAdapterSettings(configuration([:]), environment: [:]).tls == PostgresTLSSettings(mode: .prefer))
        for mode in PostgresTLSSettings.Mode.allCases where mode != .verifyCA {
            #expect(try PostgresAdapterSettings(configuration(["sslmode": mode.rawValue]), environment: [:]).tls.mode == mode)
        }
        let verifyCA = try PostgresAdapterSettings(configuration(["sslmode": "verify-ca", "sslrootcert": "tls/ca.pem"]), environment: [:])
        #expect(verifyCA.tls == PostgresTLSSettings(mode: .verifyCA, rootCertificateFile: "/var/lib/orgsync/tls/ca.pem"), "relative to the data directory")
        #expect(verifyCA.description.contains("sslmode=verify-ca sslrootcert=/var/lib/orgsync/tls/ca.pem"))
        #expect(problem(["sslmode": "allow"])?.setting == "sslmode")
        #expect(problem(["sslmode": "VERIFY-FULL"])?.setting == "sslmode", "libpq's values are lower case")
    }

    @Test func settingsThatDoNotFitTogetherNameTheSettingAtStart() {
        #expect(problem(["sslmode": "require", "sslrootcert": "/ca.pem"])?.setting == "sslrootcert", "require never reads it")
        #expect(problem(["sslrootcert": "/ca.pem"])?.setting == "sslrootcert", "nor does the default, prefer")
        #expect(problem(["sslmode": "verify-ca"])?.setting == "sslrootcert", "verify-ca needs its own CA")
        #expect(problem(["sslmode": "verify-full"]) == nil, "verify-full may use the system's trust store")
        #expect(problem(["sslmode": "require", "sslcert": "/c.pem"])?.setting == "sslkey")
        #expect(problem(["sslmode": "require", "sslkey": "/k.pem"])?.setting == "sslcert")
        #expect(problem(["sslmode": "disable", "sslcert": "/c.pem", "sslkey": "/k.pem"])?.setting == "sslcert")
        #expect(problem(["sslmode": "require", "sslcert": "../c.pem", "sslkey": "/k.pem"])?.setting == "sslcert", "a relative path stays in the data directory")
        #expect(problem(["sslmode": "require", "sslcert": "/c.pem", "sslkey": "/k.pem"]) == nil)
    }

    /// The factory reads the files when the adapter is made: a missing, empty or mismatched
    /// file stops start-up naming its setting, and the key's content is never in the message.
    @Test func missingOrBadFilesStopStartNamingTheSetting() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("orgsync-tls-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(directory: directory)
        let client = try certificates.issue("client")
        let other = try certificates.issue("other")
        let notPEM = directory + "/not.pem"
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: notPEM))

        func failure(_ tls: [String: String]) -> AdapterConfigurationError? {
            do {
                _ = try PostgresAdapterFactory(environment: { [:] }).makeAdapter(configuration(tls, dataDirectory: directory))
                return nil
            } catch let error as AdapterConfigurationError {
                return error
            } catch {
                Issue.record("expected an AdapterConfigurationError, got \(error)")
                return nil
            }
        }
        let missing = failure(["sslmode": "verify-full", "sslrootcert": "nowhere.pem"])
        #expect(missing?.setting == "sslrootcert")
        #expect(missing?.problem == "names \(directory)/nowhere.pem, which does not exist")
        #expect(failure(["sslmode": "verify-ca", "sslrootcert": notPEM])?.problem.contains("holds no PEM certificate") == true)
        #expect(failure(["sslmode": "require", "sslcert": notPEM, "sslkey": client.keyFile])?.setting == "sslcert")
        let badKey = failure(["sslmode": "require", "sslcert": client.certificateFile, "sslkey": client.certificateFile])
        #expect(badKey?.setting == "sslkey")
        #expect(badKey?.problem.contains("holds no unencrypted PEM private key") == true)
        let mismatch = failure(["sslmode": "require", "sslcert": client.certificateFile, "sslkey": other.keyFile])
        #expect(mismatch?.setting == "sslkey")
        #expect(mismatch?.problem.contains("is not the private key of the certificate in sslcert=\(client.certificateFile)") == true, "\(String(describing: mismatch))")
        #expect(mismatch.map { !$0.description.contains(other.keyPEM) } == true)
        #expect(failure(["sslmode": "verify-ca", "sslrootcert": certificates.caFile, "sslcert": client.certificateFile, "sslkey": client.keyFile]) == nil)
        #expect(failure([:]) == nil, "the default needs no file")
    }

    @Test func aCertificateThatFailsVerificationIsReportedByWhatItsDatesSay() {
        let settings = PostgresTLSSettings(mode: .verifyFull, rootCertificateFile: "/etc/orgsync/ca.pem")
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        func message(_ validity: PostgresServerCertificate.Validity?) -> String {
            PostgresTLSFailure.certificateVerifyFailed.message(settings: settings, host: "db.example", serverCertificate: validity, now: now)
        }
        let expired = PostgresServerCertificate.Validity(notValidBefore: now - 86_400 * 2, notValidAfter: now - 86_400)
        #expect(message(expired) == "TLS: certificate verify failed: the server's certificate expired at 2027-01-14T08:00:00Z")
        let early = PostgresServerCertificate.Validity(notValidBefore: now + 60, notValidAfter: now + 86_400)
        #expect(message(early) == "TLS: certificate verify failed: the server's certificate is not valid before 2027-01-15T08:01:00Z")
        let current = PostgresServerCertificate.Validity(notValidBefore: now - 60, notValidAfter: now + 86_400)
        #expect(message(current) == "TLS: certificate verify failed: unknown CA: the server's certificate is not signed by a CA in sslrootcert=/etc/orgsync/ca.pem")
        #expect(message(nil).contains("expired, not yet valid, or not signed by a CA in sslrootcert=/etc/orgsync/ca.pem"))
        let hostName = PostgresTLSFailure.hostNameMismatch.message(settings: settings, host: "10.1.2.3", serverCertificate: nil, now: now)
        #expect(hostName.hasPrefix("TLS: host name 10.1.2.3 does not match the server's certificate"))
        let refused = PostgresTLSFailure.handshakeFailed(reason: "TLSV1_ALERT_UNKNOWN_CA")
            .message(settings: settings, host: "db.example", serverCertificate: nil, now: now)
        #expect(refused == "TLS: handshake failed: TLSV1_ALERT_UNKNOWN_CA (the server wants a client certificate: set sslcert and sslkey)")
    }

    @Test func boringSSLReasonNamesAreReadFromTheirDescriptions() {
        #expect(PostgresTLSFailure.reasonName(
            "Error: 268435581 error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED at /x/handshake.cc:363")
            == "CERTIFICATE_VERIFY_FAILED")
        #expect(PostgresTLSFailure.reasonName("Error:  EOF during handshake") == "EOF during handshake")
    }
}
