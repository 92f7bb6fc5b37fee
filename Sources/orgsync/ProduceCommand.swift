import ArgumentParser
import Foundation
import NIOHTTP1
import OrgSyncAPI
import OrgSyncLog
import OrgSyncPluginAPI

struct ProduceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce",
        abstract: "Append JSON-lines entries to a stream; prints the offsets they were given.",
        discussion: """
            Each non-empty line must be one entry: {"org","object","op","key","ts","fields"} \
            (op is insert, upsert or delete; other members are kept). Lines are appended in \
            batches of --batch-size; a batch is validated whole before anything of it is \
            appended, so an invalid line rejects its batch with the line number and stops \
            (earlier batches stay appended). For each appended batch one line is printed: \
            {"first_offset":N,"last_offset":M,"first_line":A,"last_line":B}, only once the \
            batch is durable. Writes the data directory directly: do not run it against a \
            stream a broker is serving (the stream lock refuses it); use --url to produce through \
            a running broker instead (token in ORGSYNC_TOKEN). With --url each batch carries an \
            Idempotency-Key derived from the input (file, line range, bytes), and a batch whose \
            request fails on the network or with a 5xx is sent again (--retries): the broker \
            appends it once, and a re-run over the same input within the broker's window appends \
            nothing again.
            """
    )

    @OptionGroup var data: DataOptions

    @Option(help: "Lines per append (1...100000).")
    var batchSize: Int = 1000

    @Argument(help: "JSON-lines file to read; '-' or nothing reads standard input.")
    var file: String?

    @Option(help: "Produce through a running broker at this URL (e.g. http://127.0.0.1:7070) instead of --data-dir.")
    var url: String?

    @Option(help: "With an https --url: PEM file of the CA that signed the broker's certificate, trusted instead of the system's (or ORGSYNC_CACERT).")
    var cacert: String?

    @Option(help: "With --url: times a batch is sent again after a network failure, a 5xx, or a 409/429 answer (0...100; backoff from 100 ms doubling to 5 s). Other 4xx answers are not retried.")
    var retries: Int = 10

    func run() async throws {
        guard (1...100_000).contains(batchSize) else {
            throw ValidationError("--batch-size must be in 1...100000")
        }
        guard (0...100).contains(retries) else { throw ValidationError("--retries must be in 0...100") }
        if cacert != nil, url == nil { throw ValidationError("--cacert needs --url (it is for an https broker)") }
        let reader: LineReader
        do { reader = try LineReader(path: file) } catch { printError("orgsync produce: \(error)"); throw ExitCodes.usage }
        let sink: any EntrySink
        if let url {
            var options = BrokerOptions()
            options.url = url
            options.cacert = cacert
            let path = file.flatMap { $0 == "-" ? nil : URL(fileURLWithPath: $0).standardizedFileURL.path }
            sink = HTTPEntrySink(client: try options.client(), stream: data.stream, sourcePath: path,
                                 retry: ProduceRetryPolicy(retriesMax: retries))
        } else {
            do {
                sink = try StreamLog.open(dataDirectory: data.absoluteDataDir, name: data.stream)
            } catch {
                printError("orgsync produce: \(error)")
                throw ExitCodes.cannotOpen
            }
        }
        let log = sink
        let progress = Progress()
        var batch: [[UInt8]] = []
        var firstLine = 0
        var produced = 0
        /// The last input line of the last appended batch (0: none yet).
        var appendedLastLine = 0
        var rejected = false
        func flush() async throws {
            guard !batch.isEmpty else { return }
            let result = try await log.append(batch, lines: firstLine...reader.lineNumber)
            printLine(#"{"first_offset":\#(result.firstOffset),"last_offset":\#(result.lastOffset),"first_line":\#(firstLine),"last_line":\#(reader.lineNumber)}"#)
            produced += batch.count
            appendedLastLine = reader.lineNumber
            batch.removeAll(keepingCapacity: true)
            progress.update("produced \(produced) entries, \(formatBytes(reader.bytesRead)) read")
        }
        do {
            while let line = reader.next() {
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                do {
                    _ = try Entry.parse(line)
                } catch {
                    progress.finish()
                    let line = reader.lineNumber
                    printError("orgsync produce: line \(line): \(error); " + Self.notAppended(
                        badLine: line, pendingFirstLine: batch.isEmpty ? nil : firstLine, appendedLastLine: appendedLastLine))
                    rejected = true
                    break
                }
                if batch.isEmpty { firstLine = reader.lineNumber }
                batch.append(line)
                if batch.count >= batchSize { try await flush() }
            }
            if !rejected { try await flush() }
        } catch {
            progress.finish()
            await log.close()
            printError("orgsync produce: append failed: \(error)")
            throw ExitCodes.problemFound
        }
        progress.finish()
        await log.close()
        printError("orgsync produce: \(produced) entries appended to \(data.stream)")
        if rejected { throw ExitCodes.problemFound }
    }
}

extension ProduceCommand {
    /// Which lines a bad line left out, exactly: the unsent lines of its batch (if any were read
    /// before it), the bad line itself and everything after it; and which lines were appended.
    static func notAppended(badLine: Int, pendingFirstLine: Int?, appendedLastLine: Int) -> String {
        let first = pendingFirstLine ?? badLine
        let notAppended = "lines \(first) to the end of the input were not appended"
        guard appendedLastLine > 0 else { return notAppended + " (nothing was appended)" }
        let appended = appendedLastLine == 1 ? "line 1 was" : "lines 1-\(appendedLastLine) were"
        return notAppended + " (\(appended))"
    }
}

/// Where `produce` appends: the log directly, or a broker over HTTP.
protocol EntrySink {
    /// Appends the entries read from input lines `lines`.
    func append(_ entries: [[UInt8]], lines: ClosedRange<Int>) async throws -> AppendResult
    func close() async
}

extension StreamLog: EntrySink {
    /// Straight into the log: nothing to retry, and a second run appends again (as before).
    func append(_ entries: [[UInt8]], lines: ClosedRange<Int>) async throws -> AppendResult {
        try await append(entries)
    }
}

/// When `produce --url` sends a batch again. A pure value: the sink performs the waits.
/// Network failures and 5xx answers are retried (the Idempotency-Key makes that safe), with
/// exponential backoff from `backoffBaseMs` capped at `backoffCapMs`, at most `retriesMax`
/// times; any other 4xx answer is final (the request itself is wrong).
struct ProduceRetryPolicy: Equatable {
    var retriesMax: Int
    var backoffBaseMs = 100
    var backoffCapMs = 5_000

    enum Failure: Equatable {
        case network
        case status(Int)
    }

    enum Action: Equatable {
        case retry(afterMs: Int)
        case giveUp
    }

    /// What to do after request number `attempt` (1 for the first) failed with `failure`.
    func next(after failure: Failure, attempt: Int) -> Action {
        let retryable = switch failure {
        case .network: true
        // 409 on the append route: the first request with this key is still being written;
        // 429: the broker asks to slow down. Both answer the same key later.
        case .status(let status): (500...599).contains(status) || status == 409 || status == 429
        }
        guard retryable, attempt >= 1, attempt <= retriesMax else { return .giveUp }
        return .retry(afterMs: min(backoffCapMs, backoffBaseMs << min(attempt - 1, 16)))
    }
}

/// Appends through a running broker: one NDJSON request per batch, acknowledged once durable.
/// Each batch carries an Idempotency-Key derived from the input, so a retry (or a re-run)
/// appends it once; a replayed answer (`Idempotent-Replayed: true`) has the first offsets.
struct HTTPEntrySink: EntrySink {
    let client: BrokerClient
    let stream: String
    /// The input file (absolute), or nil for standard input.
    let sourcePath: String?
    let retry: ProduceRetryPolicy

    /// `produce-[<crc32 of the path>-]<first line>-<last line>-<hash of the entries>`: the
    /// same input always gives the same key, different batches different keys.
    static func idempotencyKey(sourcePath: String?, lines: ClosedRange<Int>, entries: [[UInt8]]) -> String {
        func hex<T: FixedWidthInteger>(_ value: T) -> String {
            let digits = String(value, radix: 16)
            return String(repeating: "0", count: max(0, T.bitWidth / 4 - digits.count)) + digits
        }
        let fingerprint = EntriesFingerprint(entries: entries)
        let pathPart = sourcePath.map { hex(Zlib.crc32(Array($0.utf8))) + "-" } ?? ""
        return "produce-\(pathPart)\(lines.lowerBound)-\(lines.upperBound)-\(hex(fingerprint.hash))"
    }

    func append(_ entries: [[UInt8]], lines: ClosedRange<Int>) async throws -> AppendResult {
        var body = Data()
        for entry in entries {
            body.append(contentsOf: entry)
            body.append(0x0A)
        }
        let key = HTTPEntrySink.idempotencyKey(sourcePath: sourcePath, lines: lines, entries: entries)
        let path = APIRoutes.entries.path(["stream": stream])
        let headers = [("Content-Type", "application/x-ndjson"), ("Idempotency-Key", key)]
        var attempt = 0
        while true {
            attempt += 1
            let failure: ProduceRetryPolicy.Failure
            let message: String
            do {
                let (status, data) = try await client.exchange(.POST, path, body: body, headers: headers)
                if (200..<300).contains(status) {
                    struct Answer: Decodable { var firstOffset: UInt64; var lastOffset: UInt64 }
                    let answer = try client.decode(data, as: Answer.self)
                    return AppendResult(firstOffset: answer.firstOffset, lastOffset: answer.lastOffset)
                }
                failure = .status(status)
                message = BrokerClient.describe(status: status, body: data)
            } catch let error as BrokerClient.Failure where error.isTransport {
                failure = .network
                message = error.description
            }
            switch retry.next(after: failure, attempt: attempt) {
            case .giveUp:
                throw BrokerClient.Failure(description: attempt > 1 ? "\(message) (after \(attempt) attempts)" : message)
            case .retry(let afterMs):
                printError("orgsync produce: lines \(lines.lowerBound)-\(lines.upperBound): \(message); retrying in \(afterMs) ms")
                try await Task.sleep(for: .milliseconds(afterMs))
            }
        }
    }

    func close() async {}
}
