#if canImport(Glibc)
import Glibc
#endif
import Foundation

func currentDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buffer, buffer.count) != nil else { return "." }
    return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Writes to standard error.
func printError(_ text: String) {
    var line = text
    if !line.hasSuffix("\n") { line += "\n" }
    writeAll(2, line)
}

/// Progress on standard error, only when it is a terminal; at most ~5 updates a second.
final class Progress {
    private let enabled: Bool
    private var lastDrawNs: UInt64 = 0
    private let startNs: UInt64
    private var drew = false

    init() {
        enabled = isatty(2) == 1
        startNs = Progress.nowNs()
    }

    static func nowNs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    var elapsedSeconds: Double { Double(Progress.nowNs() - startNs) / 1e9 }

    func update(_ text: @autoclosure () -> String) {
        guard enabled else { return }
        let now = Progress.nowNs()
        guard now - lastDrawNs > 200_000_000 else { return }
        lastDrawNs = now
        drew = true
        writeAll(2, "\r\u{1B}[2K" + text())
    }

    func finish() {
        guard enabled, drew else { return }
        writeAll(2, "\r\u{1B}[2K")
    }
}

func formatBytes(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f", value) + " " + units[unit]
}

/// Writes a line to standard output at once (no buffering: a reader sees it immediately, and a
/// process killed right after has already written it).
func printLine(_ text: String) { writeAll(1, text + "\n") }

/// write(2) of the whole string, retrying on EINTR and short writes.
func writeAll(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { raw in raw.baseAddress.map { write(fd, $0 + done, raw.count - done) } ?? 0 }
        if n < 0 {
            if errno == EINTR { continue }
            return
        }
        done += n
    }
    bytes.removeAll()
}
