import ArgumentParser
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
            stream a broker is serving (the stream lock refuses it).
            """
    )

    @OptionGroup var data: DataOptions

    @Option(help: "Lines per append (1...100000).")
    var batchSize: Int = 1000

    @Argument(help: "JSON-lines file to read; '-' or nothing reads standard input.")
    var file: String?

    func run() async throws {
        guard (1...100_000).contains(batchSize) else {
            throw ValidationError("--batch-size must be in 1...100000")
        }
        let reader: LineReader
        do { reader = try LineReader(path: file) } catch { printError("orgsync produce: \(error)"); throw ExitCodes.usage }
        let log: StreamLog
        do {
            log = try StreamLog.open(dataDirectory: data.absoluteDataDir, name: data.stream)
        } catch {
            printError("orgsync produce: \(error)")
            throw ExitCodes.cannotOpen
        }
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
        printError("orgsync produce: \(produced) entries appended to \(data.stream); end offset \(log.endOffset)")
        if rejected { throw ExitCodes.problemFound }
    }
}
