import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import OrgSyncTestSupport

/// The real `orgsync` executable (ORGSYNC_BIN, or the one built next to the tests): exit codes
/// and messages an operator sees (issue 12).
@Suite struct CommandLineTests {
    struct Outcome: Sendable {
        var status: Int32
        var standardError: String
        var standardOutput: String
    }

    /// Runs `orgsync arguments…` with `input` on stdin; waits at most `timeoutSeconds` for it to
    /// exit (then kills it and fails). Output goes to files, not pipes: a child that fills one
    /// pipe while we drain the other, or that never exits, cannot hang the test.
    static func run(_ arguments: [String], input: String = "", directory: String? = nil, timeoutSeconds: Int = 60) async throws -> Outcome {
        try await offThePool { try runNow(arguments, input: input, directory: directory, timeoutSeconds: timeoutSeconds) }
    }

    private static func runNow(_ arguments: [String], input: String, directory: String?, timeoutSeconds: Int) throws -> Outcome {
        let scratch = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let inputPath = scratch + "/stdin", outputPath = scratch + "/stdout", errorPath = scratch + "/stderr"
        try Data(input.utf8).write(to: URL(fileURLWithPath: inputPath))
        for path in [outputPath, errorPath] { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try orgsyncExecutable())
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.standardInput = FileHandle(forReadingAtPath: inputPath)
        process.standardOutput = FileHandle(forWritingAtPath: outputPath)
        process.standardError = FileHandle(forWritingAtPath: errorPath)
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        guard exited.wait(timeout: .now() + .seconds(timeoutSeconds)) == .success else {
            kill(process.processIdentifier, SIGKILL)
            _ = exited.wait(timeout: .now() + .seconds(10))
            throw ProcessError("orgsync \(arguments.joined(separator: " ")) did not exit within \(timeoutSeconds) s")
        }
        let output = (try? Data(contentsOf: URL(fileURLWithPath: outputPath))) ?? Data()
        let errors = (try? Data(contentsOf: URL(fileURLWithPath: errorPath))) ?? Data()
        return Outcome(status: process.terminationStatus, standardError: String(decoding: errors, as: UTF8.self),
                       standardOutput: String(decoding: output, as: UTF8.self))
    }

    static func temporaryDirectory() throws -> String { try makeTemporaryDirectory("orgsync-cli") }

    /// The README says usage errors exit 2; ArgumentParser's default was 64.
    @Test(arguments: [["produce", "--batch-size", "0", "-"], ["serve", "--no-such-option"], ["no-such-command"],
                      ["cursor", "set"], ["produce", "--batch-size", "many"]])
    func usageErrorsExit2(arguments: [String]) async throws {
        let outcome = try await Self.run(arguments)
        #expect(outcome.status == 2, "orgsync \(arguments.joined(separator: " ")): exit \(outcome.status): \(outcome.standardError)")
        #expect(!outcome.standardError.isEmpty, "a usage error says what is wrong")
    }

    @Test func helpStillExits0() async throws {
        let outcome = try await Self.run(["--help"])
        #expect(outcome.status == 0)
        #expect(outcome.standardOutput.contains("USAGE"))
    }

    /// With --batch-size 3 and a bad line 7, lines 1-6 were appended: say so, and that 7 on were not.
    @Test func produceSaysExactlyWhichLinesWereNotAppended() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let good = (1...6).map { #"{"org":"o","object":"Lead","op":"upsert","key":"k\#($0)","ts":"t"}"# }
        let input = (good + ["{not json", good[0]]).joined(separator: "\n") + "\n"
        let outcome = try await Self.run(["produce", "--data-dir", directory, "--batch-size", "3", "-"], input: input)
        #expect(outcome.status == 1)
        #expect(outcome.standardError.contains("line 7:"), "\(outcome.standardError)")
        #expect(outcome.standardError.contains("lines 7 to the end of the input were not appended (lines 1-6 were)"),
                "\(outcome.standardError)")
        #expect(!outcome.standardError.contains("4-7"), "\(outcome.standardError)")
        #expect(outcome.standardOutput.split(separator: "\n").count == 2, "two batches acknowledged")

        let partial = try await Self.run(["produce", "--data-dir", directory + "/b", "--batch-size", "5", "-"], input: input)
        #expect(partial.standardError.contains("lines 6 to the end of the input were not appended (lines 1-5 were)"),
                "\(partial.standardError)")
    }

    /// host: 0.0.0.0 with auth off: refused, exit 2, naming the field; nothing is opened.
    @Test func serveRefusesARemoteHostWithAuthOff() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/orgsync.yaml"
        try "auth: { enabled: false }\nserver: { host: 0.0.0.0, port: 0 }\n".write(toFile: config, atomically: true, encoding: .utf8)
        let outcome = try await Self.run(["serve", "--config", config, "--data-dir", directory + "/state"])
        #expect(outcome.status == 2)
        #expect(outcome.standardError.contains("server.host"), "\(outcome.standardError)")
        #expect(outcome.standardError.contains("allow_unauthenticated_remote"), "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/state/streams"))

        try "auth: { enabled: false }\nserver: { port: 0 }\n".write(toFile: config, atomically: true, encoding: .utf8)
        let overridden = try await Self.run(["serve", "--config", config, "--data-dir", directory + "/state", "--host", "0.0.0.0"])
        #expect(overridden.status == 2, "--host passes the same check")
        #expect(overridden.standardError.contains("server.host"), "\(overridden.standardError)")
    }

    @Test func serveNamesTheFileLineAndColumnOfAYAMLError() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/bad.yaml"
        try "auth:\n  enabled: false\nserver: { port: 0\n".write(toFile: config, atomically: true, encoding: .utf8)
        let outcome = try await Self.run(["serve", "--config", config, "--data-dir", directory + "/state"])
        #expect(outcome.status == 2)
        #expect(outcome.standardError.range(of: #"bad\.yaml:\d+:\d+: not valid YAML"#, options: .regularExpression) != nil,
                "\(outcome.standardError)")
    }

    @Test func serveRefusesAnUnknownAdapterSetting() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/orgsync.yaml"
        try """
        auth: { enabled: false }
        server: { port: 0 }
        links: [ { name: demo, stream: events, adapter: sqlite, settings: { path: demo.sqlite, primary_kye: org_key } } ]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let outcome = try await Self.run(["serve", "--config", config, "--data-dir", directory + "/state"])
        #expect(outcome.status == 2)
        #expect(outcome.standardError.contains("links[0].settings.primary_kye"), "\(outcome.standardError)")
    }
}
