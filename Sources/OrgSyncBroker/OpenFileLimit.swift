#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's open-file limit (`RLIMIT_NOFILE`). `serve` raises the soft limit to the hard one
/// at start: sockets and the log's files share one budget of descriptors, and the soft default
/// (often 1 024) is an accident of the login shell, not a choice.
public enum OpenFileLimit {
    /// Highest soft limit asked for whatever the hard limit is (an unlimited hard limit is not a
    /// valid descriptor limit; Linux's `nr_open` default is this).
    public static let descriptorsMax: UInt64 = 1 << 20

    /// The soft limit to set given the current ones, or nil when it is already as high as allowed.
    public static func raisedSoftLimit(soft: UInt64, hard: UInt64) -> UInt64? {
        let wanted = min(hard, descriptorsMax)
        return wanted > soft ? wanted : nil
    }

    /// What ``raiseSoftLimitToHard()`` did.
    public struct Change: Sendable, Hashable {
        public var old: UInt64
        public var new: UInt64
        /// The hard limit (the ceiling an unprivileged process cannot pass).
        public var hard: UInt64
        /// errno when setrlimit(2) refused; the old limit then stays.
        public var errno: Int32?
    }

    /// Raises the soft `RLIMIT_NOFILE` to the hard limit. Nil when getrlimit(2) fails.
    public static func raiseSoftLimitToHard() -> Change? {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return nil }
        let old = UInt64(limit.rlim_cur)
        let hard = UInt64(limit.rlim_max)
        guard let wanted = raisedSoftLimit(soft: old, hard: hard) else {
            return Change(old: old, new: old, hard: hard, errno: nil)
        }
        limit.rlim_cur = rlim_t(wanted)
        guard setrlimit(resource, &limit) == 0 else {
            return Change(old: old, new: old, hard: hard, errno: errno)
        }
        return Change(old: old, new: wanted, hard: hard, errno: nil)
    }
}
