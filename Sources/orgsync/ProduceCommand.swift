import ArgumentParser
import Foundation
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
            a running broker instead (token in ORGSYNC_TOKEN).
            """
    )

    @OptionGroup var data: DataOptions

    @Option(help: "Lines per append (1...100000).")
    var batchSize: Int = 1000

    @Argument(help: "JSON-lines file to read; '-' or nothing reads standard input.")
    var file: String?

    @Option(help: "Produce through a running broker at this URL (e.g. http://127.0.0.1:7070) instead of --data-dir.")
    var url: String?

    func run() async throws {
        guard (1...100_000).contains(batchSize) else {
            throw ValidationError("--batch-size must be in 1...100000")
        }
        let reader: LineReader
        do { reader = try LineReader(path: file) } catch { printError("orgsync produce: \(error)"); throw ExitCodes.usage }
        let sink: any EntrySink
        if let url {
            var options = BrokerOptions()
            options.url = url
            sink = HTTPEntrySink(client: try options.client(), stream: data.stream)
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
        var rejected = false
        func flush() async throws {
            guard !batch.isEmpty else { return }
            let result = try await log.append(batch)
            printLine(#"{"first_offset":\#(result.firstOffset),"last_offset":\#(result.lastOffset),"first_line":\#(firstLine),"last_line":\#(reader.lineNumber)}"#)
            produced += batch.count
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
                    printError("orgsync produce: line \(reader.lineNumber): \(error); its batch (lines \(max(firstLine, 1))-\(reader.lineNumber)) was not appended")
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

/// Where `produce` appends: the log directly, or a broker over HTTP.
protocol EntrySink {
    func append(_ entries: [[UInt8]]) async throws -> AppendResult
    func close() async
}

extension StreamLog: EntrySink {}

/// Appends through a running broker: one NDJSON request per batch, acknowledged once durable.
struct HTTPEntrySink: EntrySink {
    let client: BrokerClient
    let stream: String

    func append(_ entries: [[UInt8]]) async throws -> AppendResult {
        var body = Data()
        for entry in entries {
            body.append(contentsOf: entry)
            body.append(0x0A)
        }
        let data = try await client.send("POST", "/v1/streams/\(stream)/entries", body: body, contentType: "application/x-ndjson")
        struct Answer: Decodable { var firstOffset: UInt64; var lastOffset: UInt64 }
        let answer = try client.decode(data, as: Answer.self)
        return AppendResult(firstOffset: answer.firstOffset, lastOffset: answer.lastOffset)
    }

    func close() async {}
}
