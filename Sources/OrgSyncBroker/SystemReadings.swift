#if canImport(Glibc)
import Glibc
#endif
import Foundation
import OrgSyncCore

/// What Linux says of this process, for the conventional `process_*` metrics: read from
/// `/proc/self` (I/O in ``read()``, the parsing pure in ``parse(stat:bootTimeSeconds:...)``).
struct ProcessReading: Sendable, Equatable {
    var cpuSeconds: Double
    var residentMemoryBytes: UInt64
    var virtualMemoryBytes: UInt64
    var startTimeSeconds: Double
    var openFileDescriptors: Int
    var maxFileDescriptors: UInt64

    /// nil where `/proc` is not there or not as expected (another OS, a sandbox).
    static func read() -> ProcessReading? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let system = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let bootTime = bootTimeSeconds(procStat: system),
              let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")
        else { return nil }
        var limit = rlimit()
        let maxDescriptors = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? UInt64(limit.rlim_cur) : 0
        return parse(stat: stat, bootTimeSeconds: bootTime,
                     ticksPerSecond: UInt64(clamping: sysconf(Int32(_SC_CLK_TCK))),
                     pageBytes: UInt64(clamping: sysconf(Int32(_SC_PAGESIZE))),
                     openFileDescriptors: descriptors.count, maxFileDescriptors: maxDescriptors)
    }

    /// Parses `/proc/self/stat` (proc(5)): the fields after the command name, which is in
    /// parentheses and may itself hold spaces and parentheses, so the split starts after the
    /// last `)`. utime and stime (fields 14, 15) and starttime (22) are in clock ticks, vsize
    /// (23) in bytes, rss (24) in pages.
    static func parse(
        stat: String, bootTimeSeconds: UInt64, ticksPerSecond: UInt64, pageBytes: UInt64,
        openFileDescriptors: Int, maxFileDescriptors: UInt64
    ) -> ProcessReading? {
        guard ticksPerSecond > 0, let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // fields[0] is field 3 (the state).
        func field(_ number: Int) -> UInt64? {
            let index = number - 3
            return fields.indices.contains(index) ? UInt64(fields[index].trimmingCharacters(in: .whitespacesAndNewlines)) : nil
        }
        guard let utime = field(14), let stime = field(15), let start = field(22), let vsize = field(23), let rss = field(24)
        else { return nil }
        let ticks = Double(ticksPerSecond)
        return ProcessReading(
            cpuSeconds: (Double(utime) + Double(stime)) / ticks,
            residentMemoryBytes: rss.saturatingMultiply(pageBytes),
            virtualMemoryBytes: vsize,
            startTimeSeconds: Double(bootTimeSeconds) + Double(start) / ticks,
            openFileDescriptors: openFileDescriptors,
            maxFileDescriptors: maxFileDescriptors)
    }

    /// The `btime` line of `/proc/stat`: when the machine booted, in seconds since 1970.
    static func bootTimeSeconds(procStat: String) -> UInt64? {
        for line in procStat.split(separator: "\n") where line.hasPrefix("btime ") {
            return UInt64(line.dropFirst("btime ".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

/// The size of the filesystem holding a path, and what is free on it for an unprivileged
/// process (`statvfs`'s `f_bavail`, not `f_bfree`: the root reserve is not the broker's).
struct FilesystemReading: Sendable, Equatable {
    var availableBytes: UInt64
    var sizeBytes: UInt64

    static func read(path: String) -> FilesystemReading? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        let block = UInt64(info.f_frsize)
        let (available, availableOverflow) = UInt64(info.f_bavail).multipliedReportingOverflow(by: block)
        let (size, sizeOverflow) = UInt64(info.f_blocks).multipliedReportingOverflow(by: block)
        return FilesystemReading(availableBytes: availableOverflow ? .max : available, sizeBytes: sizeOverflow ? .max : size)
    }
}
