import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// One fuzz target: a name (the corpus directory `Fuzz/corpus/<name>`) and the function that
/// takes one input. A target returns normally for any input that the code under test accepts or
/// refuses with an error; a crash, a sanitizer report or a broken property (``fuzzCheck``)
/// stops the fuzzer with the input saved.
struct FuzzTarget: Sendable {
    var name: String
    var summary: String
    var run: @Sendable ([UInt8]) -> Void
}

enum FuzzTargets {
    static let all: [FuzzTarget] = [
        FuzzTarget(name: "json", summary: "JSONParser.parse; a parsed value re-encoded parses back equal", run: fuzzJSON),
        FuzzTarget(name: "entry", summary: "Entry.parse; a parsed entry's jsonData() parses back equal", run: fuzzEntry),
        FuzzTarget(name: "batch", summary: "record batch decode (header, CRC, payload, control records); decode-encode round trip", run: fuzzBatch),
        FuzzTarget(name: "log", summary: "a stream directory (segments, indexes, keys, IDENTITY, cursors, CORRUPT): open/recovery, read, append, scan, repair", run: fuzzLogDirectory),
        FuzzTarget(name: "smallfiles", summary: "cursor slots, IDENTITY and .keys files: decode, round trip", run: fuzzSmallFiles),
        FuzzTarget(name: "lines", summary: "checksummed-lines files (sync log, dead letters): decode, records, round trip", run: fuzzLines),
        FuzzTarget(name: "plugin", summary: "plugin wire protocol: lines a plugin prints (framing, responses, positions) and what the broker sends", run: fuzzPluginProtocol),
        FuzzTarget(name: "config", summary: "the YAML configuration loader", run: fuzzConfiguration),
        FuzzTarget(name: "pgoutput", summary: "pgoutput messages a PostgreSQL server sends a capture source: read, mapped to entries", run: fuzzPgOutput),
        FuzzTarget(name: "nats", summary: "what a NATS server sends a client (INFO, MSG, HMSG with headers, PING, -ERR): read whole and in chunks alike", run: fuzzNATS),
        FuzzTarget(name: "clusterappend", summary: "a cluster stream's stored append as a NATS server returns it: headers, framing, zlib", run: fuzzClusterAppend),
        FuzzTarget(name: "http", summary: "HTTP requests through the broker's router, in process (no socket)", run: fuzzHTTP),
    ]

    static let selected: FuzzTarget? = {
        guard let name = getenv("ORGSYNC_FUZZ_TARGET").map({ String(cString: $0) }) else { return nil }
        return all.first { $0.name == name }
    }()

    static func run(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        guard let target = selected else { return }
        target.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    }
}

/// A broken property: print why and abort, which libFuzzer reports as a crash (and saves the
/// input). Only the harness calls this; the code under test must never trap on input.
func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() {
        printError("fuzz property broken: \(message())")
        abort()
    }
}

/// Runs async work to its end from the fuzzer's (synchronous) callback.
func blocking<T: Sendable>(_ work: @escaping @Sendable () async -> T) -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        box.value = await work()
        done.signal()
    }
    done.wait()
    guard let value = box.value else { abort() }
    return value
}

final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}

/// Writes a line to standard error.
func printError(_ text: String) {
    let line = Array((text + "\n").utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// libFuzzer's per-input entry point (its own `main` references it; ours passes the same
/// function to the driver).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTargets.run(data, size)
    return 0
}
