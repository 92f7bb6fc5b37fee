#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import Synchronization

/// Splits what a file descriptor delivers into lines, on the calling (dedicated) thread.
enum FileDescriptorLines {
    enum Event {
        case line([UInt8])
        case overlong
        case end
    }

    /// Reads `fd` to its end and closes it. A line longer than `lineBytesMax` is cut to that
    /// length when `truncate` is set (the rest up to its newline is dropped); otherwise it ends
    /// reading with `.overlong`.
    static func run(fd: Int32, lineBytesMax: Int, truncate: Bool, deliver: (Event) -> Void) {
        defer { close(fd) }
        var pending: [UInt8] = []
        var discarding = false
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                if !pending.isEmpty, !discarding { deliver(.line(pending)) }
                deliver(.end)
                return
            }
            var start = 0
            while start < count {
                let newline = buffer[start..<count].firstIndex(of: UInt8(ascii: "\n"))
                let end = newline ?? count
                if !discarding { pending.append(contentsOf: buffer[start..<end]) }
                if pending.count > lineBytesMax {
                    guard truncate else {
                        deliver(.overlong)
                        return
                    }
                    pending.removeLast(pending.count - lineBytesMax)
                    if !discarding { deliver(.line(pending + Array(" …(cut)".utf8))) }
                    pending.removeAll(keepingCapacity: true)
                    discarding = true
                }
                guard newline != nil else { break }
                if !discarding {
                    if pending.last == UInt8(ascii: "\r") { pending.removeLast() }
                    deliver(.line(pending))
                }
                pending.removeAll(keepingCapacity: true)
                discarding = false
                start = end + 1
            }
        }
    }
}
