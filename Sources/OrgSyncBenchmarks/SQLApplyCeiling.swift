import Foundation

/// The apply ceilings of `ceilings/sql_apply_ceiling.py`, run on the very entries the adapter
/// applied, in the same run: what a good client of the database (Python's sqlite3 `executemany`;
/// psycopg 3 in pipeline mode, entry by entry and set-based) does on this machine. An adapter's
/// rate is quoted as a share of the best of them.
struct SQLApplyCeiling {
    /// A Python 3 that has psycopg 3 for the PostgreSQL modes.
    var python: String
    var batchSize: Int

    struct Measurement: Sendable {
        var mode: String
        var entriesPerSecond: Double
        /// Rows in the target tables afterwards (held against the adapter's, so that both
        /// wrote the same records).
        var rowCount: Int64
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The script, next to this file in the source tree (benchmarks run from a clone).
    static var scriptPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("ceilings/sql_apply_ceiling.py").path
    }

    /// Runs `modes` (`sqlite`, `pg-rows`, `pg-json`) on `lines`; PostgreSQL through the libpq
    /// environment in `environment` (PGHOST …), which keeps the password off the command line.
    func measure(_ lines: [[UInt8]], modes: [String], environment: [String: String] = [:]) throws -> [Measurement] {
        let directory = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let input = directory + "/workload.jsonl"
        var bytes: [UInt8] = []
        bytes.reserveCapacity(lines.reduce(0) { $0 + $1.count + 1 })
        for line in lines {
            bytes += line
            bytes.append(UInt8(ascii: "\n"))
        }
        try Data(bytes).write(to: URL(fileURLWithPath: input))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, Self.scriptPath, "--input", input, "--batch", String(batchSize), "--modes", modes.joined(separator: ",")]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Read both to the end before waiting: a full pipe would stop the script.
        let errorText = ErrorTextReader(errors.fileHandleForReading)
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let stderr = errorText.text()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(python) \(Self.scriptPath) exited with \(process.terminationStatus): \(stderr.suffix(600))")
        }
        return Self.parse(String(decoding: outputData, as: UTF8.self))
    }

    /// The `RESULT {json}` lines of the script's output.
    static func parse(_ output: String) -> [Measurement] {
        output.split(separator: "\n").compactMap { line -> Measurement? in
            guard line.hasPrefix("RESULT "),
                let object = try? JSONSerialization.jsonObject(with: Data(line.dropFirst("RESULT ".count).utf8)) as? [String: Any],
                let mode = object["mode"] as? String, let rate = (object["entries_per_s"] as? NSNumber)?.doubleValue,
                let rows = (object["rows"] as? NSNumber)?.int64Value
            else { return nil }
            return Measurement(mode: mode, entriesPerSecond: rate, rowCount: rows)
        }
    }

    /// Whether `python` can run the PostgreSQL modes; the reason when it cannot.
    func postgresUnavailableReason() -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, "-c", "import psycopg"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return "\(python) does not run (\(error))"
        }
        process.waitUntilExit()
        return process.terminationStatus == 0 ? nil : "\(python) cannot import psycopg (python3 -m pip install 'psycopg[binary]')"
    }

    /// Best of several measurements, per mode.
    static func best(_ measurements: [Measurement]) -> [String: Measurement] {
        var best: [String: Measurement] = [:]
        for measurement in measurements where measurement.entriesPerSecond > (best[measurement.mode]?.entriesPerSecond ?? -1) {
            best[measurement.mode] = measurement
        }
        return best
    }
}

/// Reads a pipe to its end on a thread of its own (so that the other pipe can be read meanwhile).
private final class ErrorTextReader: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var data = Data()

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    func text() -> String {
        done.wait()
        return String(decoding: data, as: UTF8.self)
    }
}
