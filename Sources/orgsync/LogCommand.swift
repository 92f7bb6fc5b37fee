import ArgumentParser
import Foundation
import OrgSyncLog

struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Inspect, check and repair a stream's log on disk.",
        subcommands: [VerifyCommand.self, DumpCommand.self, StatsCommand.self, RepairCommand.self]
    )
}

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every batch of a stream (CRC, lengths, offsets, payload).",
        discussion: """
            Exits 0 when the log is clean, 1 when it found damage: then it prints the damaged \
            offset range and marks the stream so that the broker refuses it until \
            `orgsync log repair` is run. A torn tail of the active segment (bytes of an append \
            that was never acknowledged) is reported but is not damage: the next open cuts it. \
            Read-only otherwise; safe next to a running broker.
            """
    )

    @OptionGroup var data: DataOptions
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func run() async throws {
        let progress = Progress()
        let summary: LogScanner.Summary
        do {
            summary = try StreamLog.verify(dataDirectory: data.absoluteDataDir, stream: data.stream) { done, total in
                progress.update("verified \(formatBytes(done)) of \(formatBytes(total))")
            }
        } catch {
            progress.finish()
            printError("orgsync log verify: \(error)")
            throw ExitCodes.cannotOpen
        }
        progress.finish()
        let seconds = max(progress.elapsedSeconds, 1e-9)
        if json {
            printLine(jsonString(VerifyOutput(summary: summary, seconds: seconds)))
        } else {
            printLine("stream \(data.stream): \(summary.segments) segments, \(summary.batches) batches, entries \(summary.startOffset)..<\(summary.endOffset)")
            printLine("stored \(formatBytes(summary.storedBytes)), raw \(formatBytes(summary.rawBytes)), inflated at \(String(format: "%.0f", Double(summary.uncompressedBytes) / seconds / 1e6)) MB/s")
            if summary.tornTailBytes > 0 {
                printLine("torn tail: \(summary.tornTailBytes) bytes after offset \(summary.endOffset) were never acknowledged; the next open cuts them")
            }
            if let problem = summary.problem {
                printLine("DAMAGED: \(problem)")
                printLine("the stream is refused until `orgsync log repair --stream \(data.stream)` (which drops offsets from \(problem.firstOffset) on)")
            } else {
                printLine("OK")
            }
        }
        if summary.problem != nil { throw ExitCodes.problemFound }
    }

    struct VerifyOutput: Encodable {
        var summary: LogScanner.Summary
        var seconds: Double
        var ok: Bool { summary.problem == nil }
        enum CodingKeys: String, CodingKey { case summary, seconds, ok }
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(summary, forKey: .summary)
            try container.encode(seconds, forKey: .seconds)
            try container.encode(ok, forKey: .ok)
        }
    }
}

struct DumpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Write a stream's entries as JSON lines with their offsets.",
        discussion: """
            One line per entry: {"offset":N,"timestamp_ms":T,"entry":{…the entry as appended…}}. \
            Stops with exit code 1 at damaged data, after printing everything before it.
            """
    )

    @OptionGroup var data: DataOptions
    @Option(help: "First offset to dump.") var from: UInt64 = 0
    @Option(help: "Most entries to dump (default: all).") var count: UInt64?

    func run() async throws {
        let scanner: LogScanner
        do {
            scanner = try LogScanner(dataDirectory: data.absoluteDataDir, stream: data.stream)
        } catch {
            printError("orgsync log dump: \(error)")
            throw ExitCodes.cannotOpen
        }
        let progress = Progress()
        var written: UInt64 = 0
        let limit = count ?? UInt64.max
        var out: [UInt8] = []
        out.reserveCapacity(1 << 20)
        let summary = try scanner.scan(from: from, progress: { done, total in
            progress.update("dumped \(written) entries, \(formatBytes(done)) of \(formatBytes(total))")
        }) { batch in
            for (i, range) in batch.ranges.enumerated() {
                let offset = batch.header.baseOffset + UInt64(i)
                guard offset >= from else { continue }
                guard written < limit else { return false }
                out.append(contentsOf: #"{"offset":\#(offset),"timestamp_ms":\#(batch.header.firstTimestampMs),"entry":"#.utf8)
                out.append(contentsOf: batch.payload[range])
                out.append(contentsOf: "}\n".utf8)
                written += 1
            }
            if out.count > 1 << 19 { flushOut(&out) }
            return written < limit
        }
        flushOut(&out)
        progress.finish()
        if let problem = summary.problem {
            printError("orgsync log dump: stopped at damaged data: \(problem)")
            throw ExitCodes.problemFound
        }
    }

    private func flushOut(_ out: inout [UInt8]) {
        guard !out.isEmpty else { return }
        writeAll(1, String(decoding: out, as: UTF8.self))
        out.removeAll(keepingCapacity: true)
    }
}

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show a stream's segments, entries, stored and raw bytes, compression ratio, cursors."
    )

    @OptionGroup var data: DataOptions
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func run() async throws {
        let progress = Progress()
        let summary: LogScanner.Summary
        var segments: [(name: String, bytes: Int64)] = []
        var cursors: [String: UInt64] = [:]
        do {
            let scanner = try LogScanner(dataDirectory: data.absoluteDataDir, stream: data.stream)
            summary = try scanner.scan { done, total in progress.update("scanned \(formatBytes(done)) of \(formatBytes(total))") }
            let files = try FileManager.default.contentsOfDirectory(atPath: scanner.directory).filter { $0.hasSuffix(".log") }.sorted()
            for name in files {
                let attributes = try FileManager.default.attributesOfItem(atPath: scanner.directory + "/" + name)
                segments.append((name, (attributes[.size] as? NSNumber)?.int64Value ?? 0))
            }
            cursors = try readCursors(directory: scanner.directory)
        } catch {
            progress.finish()
            printError("orgsync log stats: \(error)")
            throw ExitCodes.cannotOpen
        }
        progress.finish()
        let ratio = summary.compressionRatio
        if json {
            let output = StatsOutput(
                stream: data.stream, segments: summary.segments, batches: summary.batches, entries: summary.entries,
                startOffset: summary.startOffset, endOffset: summary.endOffset, storedBytes: summary.storedBytes,
                rawBytes: summary.rawBytes, compressionRatio: ratio, cursors: cursors, damaged: summary.problem?.description)
            printLine(jsonString(output))
        } else {
            printLine("stream      \(data.stream)")
            printLine("offsets     \(summary.startOffset)..<\(summary.endOffset) (\(summary.entries) entries)")
            printLine("segments    \(summary.segments), batches \(summary.batches)")
            printLine("stored      \(formatBytes(summary.storedBytes)) (\(summary.storedBytes) B)")
            printLine("raw         \(formatBytes(summary.rawBytes)) (\(summary.rawBytes) B)")
            printLine("ratio       \(String(format: "%.2f", ratio))×")
            for segment in segments { printLine("  \(segment.name)  \(formatBytes(segment.bytes))") }
            for (name, offset) in cursors.sorted(by: { $0.key < $1.key }) {
                printLine("cursor      \(name) at \(offset) (lag \(summary.endOffset > offset ? summary.endOffset - offset : 0))")
            }
            if let problem = summary.problem { printLine("DAMAGED     \(problem)") }
        }
        if summary.problem != nil { throw ExitCodes.problemFound }
    }

    struct StatsOutput: Encodable {
        var stream: String
        var segments: Int
        var batches: Int
        var entries: UInt64
        var startOffset: UInt64
        var endOffset: UInt64
        var storedBytes: Int64
        var rawBytes: Int64
        var compressionRatio: Double
        var cursors: [String: UInt64]
        var damaged: String?
    }
}

struct RepairCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Cut a damaged stream at its first bad batch so the broker serves it again.",
        discussion: """
            Drops every entry from the first damaged batch on (the offsets are printed) and \
            clears the mark left by `log verify`. Entries after the damage are lost: copy the \
            stream directory first if you may want them. Stop the broker first (the stream lock \
            refuses a repair while the stream is open). Needs --yes.
            """
    )

    @OptionGroup var data: DataOptions
    @Flag(help: "Confirm that entries from the damage on may be dropped.") var yes = false

    func run() async throws {
        guard yes else {
            printError("orgsync log repair: this drops entries; run `orgsync log verify` to see which, then add --yes")
            throw ExitCodes.usage
        }
        do {
            let directory = StreamLog.streamDirectory(dataDirectory: data.absoluteDataDir, name: data.stream)
            let lock = try PosixStorage().lockFile(directory + "/LOCK")
            let report = try StreamLog.repair(dataDirectory: data.absoluteDataDir, stream: data.stream)
            _ = lock
            printLine(report.description)
        } catch {
            printError("orgsync log repair: \(error)")
            throw ExitCodes.cannotOpen
        }
    }
}

/// Cursor files of a stream, read without opening the stream (no lock needed).
func readCursors(directory: String) throws -> [String: UInt64] {
    let cursorDirectory = directory + "/cursors"
    guard FileManager.default.fileExists(atPath: cursorDirectory) else { return [:] }
    return try CursorStore.readAll(directory: cursorDirectory)
}

func jsonString(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    guard let data = try? encoder.encode(value) else { return "{}" }
    return String(decoding: data, as: UTF8.self)
}
