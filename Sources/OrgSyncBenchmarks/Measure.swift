#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// Warnings and errors to standard error, nothing below: a benchmark's output is its table.
func bootstrapBenchmarkLogging() {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .warning
        return handler
    }
}

/// Monotonic nanoseconds.
func nowNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// CPU time of the calling thread, nanoseconds (for "one core" rates).
func threadCPUNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Percentile (0...100) of latencies in nanoseconds, returned in milliseconds.
func percentileMs(_ sorted: [UInt64], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let index = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
    return Double(sorted[index]) / 1e6
}

func fmt(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }

/// Workload lines (JSON), as bytes.
/// The first `count` lines of a JSON-lines file (empty lines skipped).
func loadWorkload(_ path: String, count: Int) throws -> [[UInt8]] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ValidationErrorText("cannot read workload \(path)")
    }
    let lines = data.split(separator: 0x0A, omittingEmptySubsequences: true).prefix(count).map { Array($0) }
    guard !lines.isEmpty else { throw ValidationErrorText("workload \(path) is empty") }
    return lines
}

struct ValidationErrorText: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One row of a benchmark table, also printed as a RESULT line (JSON).
struct ResultRow: Encodable {
    var system = "orgsync"
    var mode: String
    var batch: Int
    var durable: Bool
    var entries_per_s: Double
    var p50_ms: Double
    var p99_ms: Double
    var producers: Int
    var mb_per_s: Double
    var compression_ratio: Double?
    /// The ratio of the batches coded with a preset dictionary alone (codec 2): the stream's
    /// ratio once its first dictionary exists. Nil when none were written.
    var dictionary_coded_ratio: Double? = nil
}

func resultLine(_ row: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let json = (try? encoder.encode(row)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    return "RESULT " + json
}

/// What closed-loop producers did: every call's latency, the entries and bytes they carried,
/// and the wall time from the first call to the last answer.
struct ClosedLoopRun {
    /// Latencies of every call, nanoseconds, sorted.
    var latenciesNs: [UInt64]
    var entries: Int
    var bytes: Int
    var elapsedSeconds: Double

    var entriesPerSecond: Double { Double(entries) / elapsedSeconds }
    var megabytesPerSecond: Double { Double(bytes) / elapsedSeconds / 1e6 }
    func latencyMs(percentile p: Double) -> Double { percentileMs(latenciesNs, p) }
}

/// Runs `producers` tasks, each making calls back to back until `seconds` are over (a call
/// under way then finishes). `makeProducer(i)` gives producer `i` its call, which returns the
/// entries and bytes it carried; each call is timed whole.
func runClosedLoop(
    producers: Int, seconds: Double,
    makeProducer: (Int) throws -> @Sendable () async throws -> (entries: Int, bytes: Int)
) async throws -> ClosedLoopRun {
    let calls = try (0..<producers).map(makeProducer)
    let deadline = nowNs() + UInt64(seconds * 1e9)
    let start = nowNs()
    let results = try await withThrowingTaskGroup(of: ([UInt64], Int, Int).self) { group in
        for call in calls {
            group.addTask {
                var latencies: [UInt64] = []
                var entries = 0
                var bytes = 0
                while nowNs() < deadline {
                    let t0 = nowNs()
                    let carried = try await call()
                    latencies.append(nowNs() - t0)
                    entries += carried.entries
                    bytes += carried.bytes
                }
                return (latencies, entries, bytes)
            }
        }
        var all: [([UInt64], Int, Int)] = []
        for try await result in group { all.append(result) }
        return all
    }
    return ClosedLoopRun(
        latenciesNs: results.flatMap(\.0).sorted(), entries: results.reduce(0) { $0 + $1.1 }, bytes: results.reduce(0) { $0 + $1.2 },
        elapsedSeconds: Double(nowNs() - start) / 1e9)
}

/// The workload cut into batches of `size` entries, in order (a short tail left out); the
/// whole workload as one batch when it holds fewer. Cut once, before a run: a producer's call
/// then picks one, and its timing holds the append alone.
func workloadBatches(_ workload: [[UInt8]], size: Int) -> [[[UInt8]]] {
    guard workload.count >= size else { return [workload] }
    return stride(from: 0, to: workload.count - size + 1, by: size).map { Array(workload[$0..<($0 + size)]) }
}

/// The bytes of a batch of entries.
func byteCount(_ entries: [[UInt8]]) -> Int { entries.reduce(0) { $0 + $1.count } }
