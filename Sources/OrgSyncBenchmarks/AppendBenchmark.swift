#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import Logging
import OrgSyncLog
import Synchronization

struct AppendBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "append",
        abstract: "Durable append: disk and zlib limits, then orgsync with 1/8/64 producers; restart and verify rates.",
        discussion: """
            Measures in one run: (1) the disk's append-4KiB+fdatasync rate and p50/p99 in the data \
            directory's filesystem, (2) zlib level-1 compress and inflate rates of the workload on one \
            core (batches of 128 entries), (3) orgsync durable appends (fsync policy always) for every \
            producers × batch combination: entries/s, MB/s, ack p50/p99, compression ratio, (4) open \
            (recovery) time after an unclean stop for a small and a large log, (5) `log verify` rate, \
            (6) 1 producer × 1 entry per append without and with preset dictionaries (stored ratio \
            and rate, alternated A-B-B-A). Prints a Markdown table; --json prints RESULT lines only.
            """
    )

    @OptionGroup var workload: WorkloadOptions
    @Option(help: "Scratch directory on the filesystem to measure (default: a new temp dir, removed at the end).")
    var dataDir: String?
    @Option(help: "Seconds per append scenario.") var seconds: Double = 5
    @Option(help: "Comma-separated producer counts.") var producers: String = "1,8,64"
    @Option(help: "Comma-separated entries per append.") var batches: String = "1,100"
    @Option(name: .customLong("restart-mib"), help: "Log sizes for the restart measurement, MiB.") var restartMiB: String = "100,2048"
    @Flag(help: "Skip the restart and verify measurements (they write ~2 GiB).") var skipRestart = false
    @Flag(help: "Print RESULT lines (one JSON object each) instead of the Markdown table.") var json = false
    @Flag(help: "Only the 1-producer rows (to set beside peers measured with one producer).") var compare = false
    @Flag(help: "Only the preset-dictionary comparison (1 producer × 1 entry, without and with).") var dictionaryOnly = false

    func run() async throws {
        bootstrapBenchmarkLogging()
        let (workload, source) = try self.workload.entries()
        let scratch = try dataDir ?? makeTempDir()
        defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: scratch) } }
        let producerCounts = compare ? [1] : producers.split(separator: ",").compactMap { Int($0) }
        let batchSizes = batches.split(separator: ",").compactMap { Int($0) }
        var out = Report()
        let meanBytes = Double(byteCount(workload)) / Double(workload.count)
        out.header.append("workload: \(workload.count) entries (\(source)), mean \(fmt(meanBytes)) B; zlib \(Zlib.version); \(ProcessInfo.processInfo.activeProcessorCount) cores; load \(loadAverage())")

        if dictionaryOnly {
            out.dictionary = try await measureDictionary(workload, directory: scratch)
            print(out.markdown())
            return
        }
        if !compare {
            let disk = try measureDisk(directory: scratch)
            out.limits.append("| disk: append 4 KiB + fdatasync | \(fmt(disk.rate, 0))/s | p50 \(fmt(disk.p50, 3)) ms, p99 \(fmt(disk.p99, 3)) ms |")
            out.diskP99 = disk.p99
            let z = measureZlib(workload)
            out.limits.append("| zlib level 1 compress, 128-entry batches, one core | \(fmt(z.compressMBs)) MB/s | \(fmt(z.compressMBs * 1e6 / meanBytes, 0)) entries/s, ratio \(fmt(z.ratio, 2))× |")
            out.limits.append("| zlib inflate, same batches, one core | \(fmt(z.inflateMBs)) MB/s | of uncompressed output |")
            out.zlibCompressMBs = z.compressMBs
            out.zlibInflateMBs = z.inflateMBs
        }

        for producerCount in producerCounts {
            for batch in batchSizes {
                let row = try await measureAppend(workload, directory: scratch, producers: producerCount, batch: batch)
                out.rows.append(row)
                if json { print(resultLine(row)) }
            }
        }
        if !compare {
            // What idempotency keys cost: the same scenario without and with a unique key per append.
            for producerCount in [1, 64] {
                let plain = try await measureAppend(workload, directory: scratch, producers: producerCount, batch: 100)
                let keyed = try await measureAppend(workload, directory: scratch, producers: producerCount, batch: 100, keyed: true)
                out.keyRows.append((plain, keyed))
                if json { print(resultLine(plain)); print(resultLine(keyed)) }
            }
        }
        if !compare {
            out.dictionary = try await measureDictionary(workload, directory: scratch)
        }
        if !skipRestart && !compare {
            let sizes = restartMiB.split(separator: ",").compactMap { Int($0) }
            for size in sizes {
                let restart = try await measureRestart(workload, directory: scratch, sizeMiB: size)
                out.restarts.append(restart)
            }
            let verify = try await measureVerify(workload, directory: scratch)
            out.verifyMBs = verify
        }
        if !json { print(out.markdown()) }
    }

    // MARK: Disk

    func measureDisk(directory: String) throws -> (rate: Double, p50: Double, p99: Double) {
        let path = directory + "/disk-probe"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ValidationErrorText("cannot create \(path)") }
        defer {
            close(fd)
            unlink(path)
        }
        let block = [UInt8](repeating: 0x5A, count: 4096)
        var latencies: [UInt64] = []
        let start = nowNs()
        var position: off_t = 0
        while nowNs() - start < 3_000_000_000 && latencies.count < 20_000 {
            let t0 = nowNs()
            _ = block.withUnsafeBytes { pwrite(fd, $0.baseAddress, 4096, position) }
            fdatasync(fd)
            latencies.append(nowNs() - t0)
            position += 4096
        }
        let elapsed = Double(nowNs() - start) / 1e9
        latencies.sort()
        return (Double(latencies.count) / elapsed, percentileMs(latencies, 50), percentileMs(latencies, 99))
    }

    // MARK: zlib

    func measureZlib(_ workload: [[UInt8]]) -> (compressMBs: Double, inflateMBs: Double, ratio: Double) {
        var payloads: [[UInt8]] = []
        var chunk: [UInt8] = []
        for (i, entry) in workload.enumerated() {
            chunk.append(contentsOf: entry)
            chunk.append(0x0A)
            if i % 128 == 127 {
                payloads.append(chunk)
                chunk = []
            }
        }
        var compressed: [[UInt8]] = []
        var inBytes = 0
        var outBytes = 0
        let c0 = threadCPUNs()
        for payload in payloads {
            let packed = (try? Zlib.compress(payload, level: 1)) ?? []
            inBytes += payload.count
            outBytes += packed.count
            compressed.append(packed)
        }
        let compressNs = threadCPUNs() - c0
        let d0 = threadCPUNs()
        var inflated = 0
        for (packed, payload) in zip(compressed, payloads) {
            inflated += ((try? Zlib.decompress(packed, expectedCount: payload.count)) ?? []).count
        }
        let inflateNs = threadCPUNs() - d0
        return (Double(inBytes) / (Double(compressNs) / 1e9) / 1e6, Double(inflated) / (Double(inflateNs) / 1e9) / 1e6,
                Double(inBytes) / Double(max(outBytes, 1)))
    }

    // MARK: Append

    /// - Parameter keyed: every append carries a unique idempotency key.
    /// - Parameter dictionaries: segments get preset dictionaries (the default); false turns them off.
    func measureAppend(
        _ workload: [[UInt8]], directory: String, producers: Int, batch: Int, keyed: Bool = false, dictionaries: Bool = true
    ) async throws -> ResultRow {
        let dataDir = directory + "/append-p\(producers)-b\(batch)" + (keyed ? "-keys" : "") + (dictionaries ? "" : "-nodict")
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        var configuration = LogConfiguration()
        if !dictionaries { configuration.dictionaryBytesMax = 0 }
        let log = try StreamLog.open(dataDirectory: dataDir, name: "bench", configuration: configuration)
        let next = Counter()
        let keys = Counter()
        let batches = workloadBatches(workload, size: batch)
        let run = try await runClosedLoop(producers: producers, seconds: seconds) { _ in
            {
                let slice = batches[next.next() % batches.count]
                if keyed {
                    _ = try await log.append(slice, idempotencyKey: "bench-\(keys.next())")
                } else {
                    _ = try await log.append(slice)
                }
                return (slice.count, byteCount(slice))
            }
        }
        await log.close()
        let info = log.info()
        var codedRaw: Int64 = 0
        var codedStored: Int64 = 0
        let summary = try LogScanner(dataDirectory: dataDir, stream: "bench").scan(visit: { batch in
            if batch.header.codec == .zlibDictionary {
                codedRaw += batch.header.entryBytes
                codedStored += Int64(batch.header.batchLength)
            }
            return true
        })
        _ = info
        return ResultRow(
            mode: "append p\(producers) b\(batch)" + (keyed ? " keys" : "") + (dictionaries ? "" : " no-dictionary"), batch: batch, durable: true,
            entries_per_s: run.entriesPerSecond, p50_ms: run.latencyMs(percentile: 50), p99_ms: run.latencyMs(percentile: 99),
            producers: producers, mb_per_s: run.megabytesPerSecond, compression_ratio: summary.compressionRatio,
            dictionary_coded_ratio: codedStored > 0 ? Double(codedRaw) / Double(codedStored) : nil)
    }

    // MARK: Preset dictionary

    /// What preset dictionaries do for 1 producer × 1 entry per append: stored ratio (entry
    /// bytes / bytes on disk, headers included) and rate, without and with, measured A-B-B-A so
    /// that a drift in the machine's load (other builds) falls on both alike.
    struct DictionaryComparison {
        var without: [ResultRow] = []
        var with: [ResultRow] = []
        /// Thread CPU to encode one single-entry batch, µs: plain zlib level 1 (as the log
        /// configures it) and codec 2 (primed deflater copied per batch).
        var encodePlainMicros = 0.0
        var encodeDictionaryMicros = 0.0

        static func mean(_ rows: [ResultRow], _ value: (ResultRow) -> Double) -> Double {
            rows.isEmpty ? 0 : rows.map(value).reduce(0, +) / Double(rows.count)
        }
    }

    func measureDictionary(_ workload: [[UInt8]], directory: String) async throws -> DictionaryComparison {
        var comparison = DictionaryComparison()
        (comparison.encodePlainMicros, comparison.encodeDictionaryMicros) = try measureSingleEntryEncode(workload)
        for dictionaries in [false, true, true, false] {
            let row = try await measureAppend(workload, directory: directory, producers: 1, batch: 1, dictionaries: dictionaries)
            if dictionaries { comparison.with.append(row) } else { comparison.without.append(row) }
            if json { print(resultLine(row)) }
        }
        return comparison
    }

    /// CPU per single-entry batch encoded by the flusher, without and with a dictionary cut as
    /// the log cuts one (the 32 KiB of framed entries before those encoded, most recent last).
    func measureSingleEntryEncode(_ workload: [[UInt8]]) throws -> (plain: Double, dictionary: Double) {
        let defaults = LogConfiguration()
        let trainCount = 1_000
        var sample: [UInt8] = []
        for entry in workload.prefix(trainCount) {
            sample.append(contentsOf: withUnsafeBytes(of: UInt32(entry.count).littleEndian, Array.init))
            sample.append(contentsOf: entry)
        }
        let deflater = try Zlib.PresetDeflater(
            dictionary: Zlib.PresetDictionary(Array(sample.suffix(defaults.dictionaryBytesMax))), level: defaults.dictionaryCompressionLevel)
        let entries = Array(workload.dropFirst(trainCount).prefix(20_000))
        var output: [UInt8] = []
        var scratch: [UInt8] = []
        func run(_ dictionary: Zlib.PresetDeflater?) throws -> Double {
            let start = threadCPUNs()
            for entry in entries {
                output.removeAll(keepingCapacity: true)
                try RecordBatchCodec.encode(entries: CollectionOfOne(entry), baseOffset: 0, timestampMs: 0,
                                            compressionLevel: defaults.compressionLevel, into: &output, scratch: &scratch,
                                            dictionary: dictionary)
            }
            return Double(threadCPUNs() - start) / 1e3 / Double(max(entries.count, 1))
        }
        _ = try run(nil)  // warm up
        let plain = try run(nil)
        let coded = try run(deflater)
        return (plain, coded)
    }

    // MARK: Restart

    struct Restart {
        var sizeMiB: Int
        var storedBytes: Int64
        var openMs: Double
        var scannedBytes: Int64
    }

    /// Builds a log of about `sizeMiB` on disk (uncompressed, to write it fast), leaves it
    /// without a clean close (as after SIGKILL: pre-written tail, index not flushed at close),
    /// then times `StreamLog.open` (recovery), median of 5.
    func measureRestart(_ workload: [[UInt8]], directory: String, sizeMiB: Int) async throws -> Restart {
        let dataDir = directory + "/restart-\(sizeMiB)"
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        var config = LogConfiguration()
        config.compressionLevel = nil
        do {
            let log = try StreamLog.open(dataDirectory: dataDir, name: "bench", configuration: config)
            let target = Int64(sizeMiB) << 20
            var index = 0
            let chunk = 20_000
            while log.info().storedBytes < target {
                var slice: [[UInt8]] = []
                slice.reserveCapacity(chunk)
                for _ in 0..<chunk {
                    slice.append(workload[index % workload.count])
                    index += 1
                }
                _ = try await log.append(slice)
            }
            // Dropped without close(): like a killed process.
        }
        var times: [Double] = []
        var stored: Int64 = 0
        var scanned: Int64 = 0
        for _ in 0..<5 {
            let t0 = nowNs()
            let log = try StreamLog.open(dataDirectory: dataDir, name: "bench", configuration: config)
            times.append(Double(nowNs() - t0) / 1e6)
            stored = log.info().storedBytes
            scanned = log.recovery.scannedBytes
        }
        times.sort()
        return Restart(sizeMiB: sizeMiB, storedBytes: stored, openMs: times[2], scannedBytes: scanned)
    }

    // MARK: Verify

    /// `log verify` (full scan: CRC + inflate + framing) over a compressed log of the workload,
    /// in MB/s of uncompressed payload.
    func measureVerify(_ workload: [[UInt8]], directory: String) async throws -> Double {
        let dataDir = directory + "/verify"
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        do {
            let log = try StreamLog.open(dataDirectory: dataDir, name: "bench")
            var index = 0
            while index < 400_000 {
                let slice = (0..<1000).map { workload[($0 + index) % workload.count] }
                _ = try await log.append(slice)
                index += 1000
            }
            await log.close()
        }
        let c0 = threadCPUNs()
        let summary = try StreamLog.verify(dataDirectory: dataDir, stream: "bench")
        let seconds = Double(threadCPUNs() - c0) / 1e9
        return Double(summary.uncompressedBytes) / seconds / 1e6
    }

    // MARK: Report

    struct Report {
        var header: [String] = []
        var limits: [String] = []
        var rows: [ResultRow] = []
        /// The same scenario without and with an idempotency key per append.
        var keyRows: [(plain: ResultRow, keyed: ResultRow)] = []
        var restarts: [Restart] = []
        var verifyMBs: Double?
        var dictionary: DictionaryComparison?
        var diskP99: Double?
        var zlibCompressMBs: Double?
        var zlibInflateMBs: Double?

        func markdown() -> String {
            var lines: [String] = []
            lines += header.map { "<!-- \($0) -->" }
            if !limits.isEmpty {
                lines.append("| limit (same run) | rate | detail |")
                lines.append("| --- | --- | --- |")
                lines += limits
                lines.append("")
            }
            lines.append("| orgsync durable append | producers | entries/append | entries/s | MB/s | ack p50 ms | ack p99 ms | ratio | vs zlib-1 core | p99 / disk p99 |")
            lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for row in rows {
                let ofZlib = zlibCompressMBs.map { fmt(row.mb_per_s / $0 * 100, 0) + " %" } ?? "-"
                let ofDisk = diskP99.map { fmt(row.p99_ms / $0, 1) + "×" } ?? "-"
                lines.append("| \(row.mode) | \(row.producers) | \(row.batch) | \(fmt(row.entries_per_s, 0)) | \(fmt(row.mb_per_s)) | \(fmt(row.p50_ms, 3)) | \(fmt(row.p99_ms, 3)) | \(fmt(row.compression_ratio ?? 0, 2))× | \(ofZlib) | \(ofDisk) |")
            }
            if !keyRows.isEmpty {
                lines.append("")
                lines.append("| idempotency keys (same run) | producers | entries/append | entries/s without | entries/s with a key per append | with / without | ack p99 ms without / with |")
                lines.append("| --- | --- | --- | --- | --- | --- | --- |")
                for (plain, keyed) in keyRows {
                    let ratio = plain.entries_per_s > 0 ? keyed.entries_per_s / plain.entries_per_s : 0
                    lines.append("| append | \(plain.producers) | \(plain.batch) | \(fmt(plain.entries_per_s, 0)) | \(fmt(keyed.entries_per_s, 0)) | \(fmt(ratio, 2))× | \(fmt(plain.p99_ms, 3)) / \(fmt(keyed.p99_ms, 3)) |")
                }
            }
            if let dictionary {
                typealias Comparison = DictionaryComparison
                let ratioWithout = Comparison.mean(dictionary.without) { $0.compression_ratio ?? 0 }
                let ratioWith = Comparison.mean(dictionary.with) { $0.compression_ratio ?? 0 }
                let rateWithout = Comparison.mean(dictionary.without) { $0.entries_per_s }
                let rateWith = Comparison.mean(dictionary.with) { $0.entries_per_s }
                lines.append("")
                let codedRatio = Comparison.mean(dictionary.with) { $0.dictionary_coded_ratio ?? 0 }
                lines.append("| preset dictionary, 1 producer × 1 entry/append (same run, A-B-B-A, mean of 2 each) | stored ratio, whole stream | stored ratio, codec-2 batches | entries/s | ack p50 ms | ack p99 ms |")
                lines.append("| --- | --- | --- | --- | --- | --- |")
                lines.append("| without (plain zlib, level 1) | \(fmt(ratioWithout, 2))× | - | \(fmt(rateWithout, 0)) | \(fmt(Comparison.mean(dictionary.without) { $0.p50_ms }, 3)) | \(fmt(Comparison.mean(dictionary.without) { $0.p99_ms }, 3)) |")
                let defaults = LogConfiguration()
                lines.append("| with (codec 2, \(defaults.dictionaryBytesMax / 1024) KiB dictionary, level \(defaults.dictionaryCompressionLevel)) | \(fmt(ratioWith, 2))× | \(fmt(codedRatio, 2))× | \(fmt(rateWith, 0)) | \(fmt(Comparison.mean(dictionary.with) { $0.p50_ms }, 3)) | \(fmt(Comparison.mean(dictionary.with) { $0.p99_ms }, 3)) |")
                let rateChange = rateWithout > 0 ? (rateWith / rateWithout - 1) * 100 : 0
                let ratioGain = ratioWithout > 0 ? ratioWith / ratioWithout : 0
                lines.append("| with / without | \(fmt(ratioGain, 2))× | | \(rateChange >= 0 ? "+" : "")\(fmt(rateChange, 1)) % | | |")
                lines.append("")
                lines.append("Encoding one single-entry batch, thread CPU: plain zlib \(fmt(dictionary.encodePlainMicros, 1)) µs, codec 2 \(fmt(dictionary.encodeDictionaryMicros, 1)) µs.")
                lines.append("")
                lines.append("A new stream stores its first 4 KiB of entries without a dictionary (the sample the first is cut from), and its first dictionaries are smaller (4, 8, 16 KiB, a segment each); the codec-2 column is the ratio of the batches that had one.")
            }
            if !restarts.isEmpty {
                lines.append("")
                lines.append("| restart after unclean stop | log on disk | open (recovery) ms, median of 5 | bytes scanned |")
                lines.append("| --- | --- | --- | --- |")
                for r in restarts {
                    lines.append("| \(r.sizeMiB) MiB log | \(fmt(Double(r.storedBytes) / 1048576, 0)) MiB | \(fmt(r.openMs, 2)) | \(r.scannedBytes) |")
                }
            }
            if let verifyMBs {
                lines.append("")
                let ofInflate = zlibInflateMBs.map { " (\(fmt(verifyMBs / $0 * 100, 0)) % of zlib inflate \(fmt($0)) MB/s)" } ?? ""
                lines.append("`log verify`: \(fmt(verifyMBs)) MB/s of uncompressed payload on one core\(ofInflate)")
            }
            return lines.joined(separator: "\n")
        }
    }
}

func makeTempDir() throws -> String {
    let path = FileManager.default.temporaryDirectory.path + "/orgsync-bench-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func loadAverage() -> String {
    var loads = [Double](repeating: 0, count: 3)
    guard getloadavg(&loads, 3) == 3 else { return "?" }
    return loads.map { fmt($0, 2) }.joined(separator: " ")
}

/// A shared counter for producer tasks.
final class Counter: Sendable {
    let value = Atomic<Int>(0)

    /// 0, 1, 2, … across every producer sharing the counter.
    func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}
