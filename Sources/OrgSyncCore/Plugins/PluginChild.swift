#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import Synchronization

/// One running plugin process: its pipes, the threads that read them, and the thread that
/// reaps it.
///
/// Invariants:
/// - The process runs in a process group of its own; ``kill()`` signals the whole group, so a
///   plugin's own children go with it. When the plugin exits by itself, what is left of its
///   group is killed too, before the plugin is reaped.
/// - Exactly one thread (the reaper) waits on ``pid``; once ``exitStatus`` is set the PID is
///   reaped (no zombie). Signals are only sent before that, under the same lock, so a reused
///   PID is never signalled. Nothing else in the broker waits on it.
/// - Blocking reads and writes happen on threads of their own (two reader threads, one serial
///   dispatch queue for writes), never on a Swift concurrency thread. Killing the process ends
///   them all: reads see end of file, writes see `EPIPE`.
final class PluginChild: Sendable {
    let pid: pid_t
    private let stdinFD: Int32
    private let writer: DispatchQueue
    let inbox: PluginInbox
    private let exit = OneShot<PluginExitStatus>()
    private let expiry = Mutex<PluginExpiry?>(nil)
    private let stdinClosed = Mutex(false)
    /// Set, under this lock, when `waitpid` reaped the process; signals are sent under it too.
    private let reaping = Mutex(false)

    private init(pid: pid_t, stdinFD: Int32, inbox: PluginInbox) {
        self.pid = pid
        self.stdinFD = stdinFD
        self.inbox = inbox
        self.writer = DispatchQueue(label: "orgsync.plugin.stdin.\(pid)")
    }

    /// Starts `command` (argv) in `directory` with exactly `environment`.
    ///
    /// - Parameters:
    ///   - lineBytesMax: a stdout line longer than this ends reading with ``PluginInbox/Event/overlong``.
    ///   - stderrLineBytesMax: stderr lines are cut at this length.
    ///   - stderrLine: called on a dedicated thread with the PID and each stderr line.
    static func spawn(
        command: [String], directory: String, environment: [String: String],
        lineBytesMax: Int, stderrLineBytesMax: Int, stderrLine: @escaping @Sendable (_ pid: pid_t, _ line: String) -> Void
    ) throws(PluginSpawnError) -> PluginChild {
        ignoreBrokenPipes
        guard let program = command.first, !program.isEmpty else {
            throw PluginSpawnError(command: command, errorNumber: EINVAL, problem: "the command is empty")
        }
        var stdinPipe: [Int32] = [-1, -1]
        var stdoutPipe: [Int32] = [-1, -1]
        var stderrPipe: [Int32] = [-1, -1]
        let opened = [cloexecPipe(&stdinPipe), cloexecPipe(&stdoutPipe), cloexecPipe(&stderrPipe)]
        guard opened.allSatisfy({ $0 == 0 }) else {
            let code = errno
            for fd in stdinPipe + stdoutPipe + stderrPipe where fd >= 0 { close(fd) }
            throw PluginSpawnError(command: command, errorNumber: code, problem: "cannot create pipes")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
        guard let addChdir = spawnAddChdir, addChdir(&actions, directory) == 0 else {
            for fd in stdinPipe + stdoutPipe + stderrPipe { close(fd) }
            throw PluginSpawnError(command: command, errorNumber: ENOSYS, problem: "this C library cannot set a child's working directory")
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var defaultSignals = sigset_t()
        sigemptyset(&defaultSignals)
        sigaddset(&defaultSignals, SIGPIPE)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = command.map { strdup($0) } + [nil]
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, program, &actions, &attributes, argv, envp)
        close(stdinPipe[0])
        close(stdoutPipe[1])
        close(stderrPipe[1])
        guard result == 0 else {
            close(stdinPipe[1])
            close(stdoutPipe[0])
            close(stderrPipe[0])
            throw PluginSpawnError(command: command, errorNumber: result, problem: Self.describeSpawnFailure(result))
        }
        let inbox = PluginInbox()
        let child = PluginChild(pid: pid, stdinFD: stdinPipe[1], inbox: inbox)
        let stdoutFD = stdoutPipe[0]
        let stderrFD = stderrPipe[0]
        Thread.detachNewThread {
            FileDescriptorLines.run(fd: stdoutFD, lineBytesMax: lineBytesMax, truncate: false) { event in
                switch event {
                case .line(let bytes): inbox.deliver(.line(bytes))
                case .overlong: inbox.deliver(.overlong)
                case .end: inbox.deliver(.end)
                }
            }
        }
        let childPID = pid
        Thread.detachNewThread {
            FileDescriptorLines.run(fd: stderrFD, lineBytesMax: stderrLineBytesMax, truncate: true) { event in
                if case .line(let bytes) = event { stderrLine(childPID, String(decoding: bytes, as: UTF8.self)) }
            }
        }
        Thread.detachNewThread { child.reapWhenExited() }
        return child
    }

    /// Runs on the reaper thread: waits for the exit without reaping, kills what is left of
    /// the process group while the zombie leader still reserves its id, then reaps.
    private func reapWhenExited() {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 {
            guard errno == EINTR else { break }
        }
        var status: Int32 = 0
        let reaped = reaping.withLock { reaped -> Bool in
            // The group cannot have been reused yet: its leader is an unreaped zombie.
            _ = Glibc.kill(-pid, SIGKILL)
            var result: pid_t
            repeat {
                result = waitpid(pid, &status, 0)
            } while result < 0 && errno == EINTR
            reaped = true
            return result == pid
        }
        exit.fulfil(PluginExitStatus(rawStatus: reaped ? status : nil))
    }

    /// Writes `bytes` to the plugin's stdin. Returns the `errno` of a failed write, nil on success.
    func write(_ bytes: [UInt8]) async -> Int32? {
        await withCheckedContinuation { continuation in
            writer.async { [self] in
                guard !self.stdinClosed.withLock({ $0 }) else {
                    continuation.resume(returning: EPIPE)
                    return
                }
                continuation.resume(returning: Self.writeAll(self.stdinFD, bytes))
            }
        }
    }

    /// Closes the plugin's stdin (after any write in progress): a well-behaved plugin exits.
    func closeStdin() {
        writer.async { [self] in
            let first = self.stdinClosed.withLock { closed in
                defer { closed = true }
                return !closed
            }
            if first { close(self.stdinFD) }
        }
    }

    /// Kills the plugin's process group with SIGKILL. Idempotent; harmless once reaped.
    func kill() {
        reaping.withLock { reaped in
            // Once reaped, the PID may belong to another process: never signal it then.
            guard !reaped else { return }
            // The group was created at spawn with the child as leader, so -pid is the group.
            _ = Glibc.kill(-pid, SIGKILL)
            _ = Glibc.kill(pid, SIGKILL)
        }
        closeStdin()
    }

    /// Records why the process is being killed (the first reason wins) and kills it.
    func expire(_ reason: PluginExpiry) {
        let first = expiry.withLock { current in
            defer { if current == nil { current = reason } }
            return current == nil
        }
        if first { kill() }
    }

    /// Why the process was killed by ``expire(_:)``, if it was.
    var expiryReason: PluginExpiry? { expiry.withLock { $0 } }

    /// The exit status once reaped.
    var exitStatus: PluginExitStatus? { exit.value }

    /// Waits until the process is reaped, at most `timeoutMs`. Nil on timeout.
    func waitForExit(timeoutMs: Int) async -> PluginExitStatus? {
        await exit.wait(timeoutMs: timeoutMs)
    }

    /// Kills the process and waits (bounded) until it is reaped.
    func killAndReap(timeoutMs: Int = 5_000) async -> PluginExitStatus? {
        kill()
        return await waitForExit(timeoutMs: timeoutMs)
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Int32? {
        bytes.withUnsafeBytes { buffer -> Int32? in
            var written = 0
            while written < buffer.count {
                let count = Glibc.write(fd, buffer.baseAddress! + written, buffer.count - written)
                if count < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                written += count
            }
            return nil
        }
    }

    fileprivate static func describeSpawnFailure(_ code: Int32) -> String {
        switch code {
        case ENOENT: "the command or the plugin directory was not found"
        case EACCES: "the command is not executable (check its permissions and #! line)"
        case ENOEXEC: "the command is not an executable format (missing #! line?)"
        default: "cannot start the command: \(String(cString: strerror(code)))"
        }
    }
}

/// `pipe2` and `posix_spawn_file_actions_addchdir_np` are GNU extensions the Glibc module does
/// not import; both are in every glibc the broker supports (2.29+), so look them up once.
private typealias Pipe2Function = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
private typealias AddChdirFunction = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

private let pipe2Function: Pipe2Function? = dlsym(nil, "pipe2").map { unsafeBitCast($0, to: Pipe2Function.self) }
private let spawnAddChdir: AddChdirFunction? = dlsym(nil, "posix_spawn_file_actions_addchdir_np").map {
    unsafeBitCast($0, to: AddChdirFunction.self)
}

/// A pipe whose two ends are close-on-exec, so that only the child they are dup'ed into inherits
/// them. Returns 0 or -1 (errno set), like `pipe`.
private func cloexecPipe(_ fds: inout [Int32]) -> Int32 {
    fds.withUnsafeMutableBufferPointer { buffer -> Int32 in
        guard let base = buffer.baseAddress else { return -1 }
        if let pipe2Function { return pipe2Function(base, O_CLOEXEC) }
        // Without pipe2 a concurrent fork may inherit the ends in this short window.
        guard pipe(base) == 0 else { return -1 }
        _ = fcntl(base[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(base[1], F_SETFD, FD_CLOEXEC)
        return 0
    }
}

/// Writing to a pipe whose reader died must be an error (`EPIPE`), not a signal that ends the
/// broker. Set once, process-wide, before the first plugin starts.
private let ignoreBrokenPipes: Void = {
    _ = signal(SIGPIPE, SIG_IGN)
}()

/// Why the broker killed a plugin process.
enum PluginExpiry: Sendable, Equatable {
    /// The request `method` got no complete answer within `timeoutMs`.
    case timeout(method: String, timeoutMs: Int)
    /// The task waiting on the plugin was cancelled (shutdown).
    case cancelled
}

/// How a plugin process ended.
struct PluginExitStatus: Sendable, Equatable, CustomStringConvertible {
    /// The raw `waitpid` status; nil when it could not be read (the PID was reaped elsewhere).
    var rawStatus: Int32?

    var exitCode: Int32? {
        guard let rawStatus, rawStatus & 0x7f == 0 else { return nil }
        return (rawStatus >> 8) & 0xff
    }

    var signal: Int32? {
        guard let rawStatus, rawStatus & 0x7f != 0, rawStatus & 0x7f != 0x7f else { return nil }
        return rawStatus & 0x7f
    }

    var description: String {
        if let exitCode { return "exited with status \(exitCode)" }
        if let signal { return "was killed by signal \(signal)" }
        return "ended"
    }
}

/// The plugin could not be started.
struct PluginSpawnError: Error, Sendable, CustomStringConvertible {
    var command: [String]
    var errorNumber: Int32
    var problem: String

    var description: String {
        "cannot start plugin command \(command.first ?? "(none)"): \(problem) (errno \(errorNumber))"
    }
}
