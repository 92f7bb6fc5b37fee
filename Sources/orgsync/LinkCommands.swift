import ArgumentParser
import Foundation
import OrgSyncAPI
import UnixSignals
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body`, printing a broker error as `orgsync <command>: message` and exiting 1.
func reportingFailures(_ command: String, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as BrokerClient.Failure {
        printError("orgsync \(command): \(error)")
        throw ExitCodes.problemFound
    }
}

func formatDuration(_ ms: UInt64) -> String {
    let seconds = ms / 1000
    if seconds < 60 { return "\(seconds)s" }
    if seconds < 3600 { return "\(seconds / 60)m\(seconds % 60)s" }
    return "\(seconds / 3600)h\((seconds % 3600) / 60)m"
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the links of a running broker: state, lag, cursor, last event.",
        discussion: """
            Talks to the broker over HTTP (--url, ORGSYNC_URL; token in ORGSYNC_TOKEN). Exit 1 if a \
            link is not active. With --watch the table is drawn again every --interval-ms (on a \
            terminal in place, in a pipe one table after the other) until Ctrl-C or SIGTERM, which \
            end it with exit 0; a broker that cannot be read is said in the table's place and read \
            again at the next interval.
            """
    )

    /// The shortest and longest `--interval-ms`.
    static let intervalMsRange = 100...3_600_000
    static let intervalMsDefault = 1_000

    @OptionGroup var broker: BrokerOptions
    @Argument(help: "Only this link.") var link: String?
    @Flag(help: "Redraw the table every --interval-ms until Ctrl-C.") var watch = false
    @Option(help: ArgumentHelp("With --watch: milliseconds between redraws, 100 to 3600000 (default 1000).", valueName: "ms"))
    var intervalMs: Int?

    func validate() throws {
        if let intervalMs {
            guard watch else { throw ValidationError("--interval-ms goes with --watch") }
            guard Self.intervalMsRange.contains(intervalMs) else {
                throw ValidationError("--interval-ms must be \(Self.intervalMsRange.lowerBound) to \(Self.intervalMsRange.upperBound)")
            }
        }
        if watch && broker.json { throw ValidationError("--watch draws a table; --json reads the status once") }
    }

    func run() async throws {
        if watch { return try await runWatching() }
        var allActive = true
        try await reportingFailures("status") {
            let client = try broker.client()
            let links = try await statuses(client)
            allActive = links.allSatisfy { $0.state == "active" && $0.running }
            if broker.json {
                printLine(String(decoding: (try? APIJSON.encoder().encode(links)) ?? Data(), as: UTF8.self))
                return
            }
            printLine(tableLines(await rows(links, client)).joined(separator: "\n"))
        }
        if !allActive { throw ExitCodes.problemFound }
    }

    func statuses(_ client: BrokerClient) async throws -> [LinkStatusBody] {
        if let link { return [try await client.get(APIRoutes.link.path(["link": link]), as: LinkStatusBody.self)] }
        return try await client.get(APIRoutes.links.path(), as: LinkList.self).links
    }

    func rows(_ links: [LinkStatusBody], _ client: BrokerClient) async -> [[String]] {
        var rows = [["LINK", "STREAM", "STATE", "LAG", "CURSOR", "END", "IN STATE", "LAST EVENT"]]
        for status in links {
            let last = try? await client.get(APIRoutes.linkSyncLog.path(["link": status.name]) + "?limit=1", as: SyncLogPage.self).records.first
            var state = status.state + (status.heldDown ? " (held down)" : "")
            if status.state == "verifying" { state += " \(status.probeProgress)" }
            if !status.running { state = "stopped" }
            rows.append([status.name, status.stream, state, String(status.lag), String(status.cursor), String(status.endOffset),
                         formatDuration(status.timeInStateMs), last.map { "\($0.event): \($0.reason)" } ?? status.lastError ?? "-"])
        }
        return rows
    }

    /// Draws the table every interval until SIGINT or SIGTERM (then exit 0).
    func runWatching() async throws {
        let client = try broker.client()
        let intervalMs = intervalMs ?? Self.intervalMsDefault
        let terminal = isatty(1) == 1
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in signals { return }
            }
            group.addTask {
                while !Task.isCancelled {
                    let table: String
                    do {
                        table = tableLines(await rows(try await statuses(client), client)).joined(separator: "\n")
                    } catch {
                        table = "cannot read the status: \(error)"
                    }
                    guard !Task.isCancelled else { return }
                    let header = "orgsync status of \(broker.url) at \(utcTime()) UTC, every \(intervalMs) ms (Ctrl-C ends)"
                    // One write a frame: on a terminal the screen is cleared first, in a pipe a
                    // blank line separates the frames.
                    writeAll(1, (terminal ? "\u{1B}[H\u{1B}[2J" : "") + header + "\n" + table + "\n" + (terminal ? "" : "\n"))
                    try? await Task.sleep(for: .milliseconds(intervalMs))
                }
            }
            await group.next()
            group.cancelAll()
        }
    }
}

/// The time of day in UTC, `HH:MM:SS`.
func utcTime() -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "HH:mm:ss"
    return formatter.string(from: Date())
}

/// The rows as lines of left-aligned columns two spaces apart (the last column unpadded).
func tableLines(_ rows: [[String]]) -> [String] {
    guard let columns = rows.first?.count else { return [] }
    var widths = [Int](repeating: 0, count: columns)
    for row in rows { for (i, cell) in row.enumerated() where i < columns - 1 { widths[i] = max(widths[i], cell.count) } }
    return rows.map { row in
        var line = ""
        for (i, cell) in row.enumerated() {
            line += i < columns - 1 ? cell.padding(toLength: widths[i] + 2, withPad: " ", startingAt: 0) : cell
        }
        return line
    }
}

struct LinksCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "links",
        abstract: "Pause, resume, reset and adopt links of a running broker.",
        subcommands: [Suspend.self, Resume.self, Reset.self, Adopt.self]
    )

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pause a link: cursor frozen, no probing; remembered across restarts. Needs an admin token.")
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "The link.") var link: String

        func run() async throws {
            try await reportingFailures("links suspend") {
                let data = try await broker.client().send("POST", APIRoutes.linkSuspend.path(["link": link]))
                let status = try broker.client().decode(data, as: LinkStatusBody.self)
                printLine(broker.json ? String(decoding: data, as: UTF8.self) : "\(link): \(status.state) at cursor \(status.cursor)")
            }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Resume a link: it verifies the target with K probes first, unless --force. Needs an admin token.",
            discussion: """
                With --wait the command follows the link until it is active, printing its probe \
                progress (verifying k/K) as it changes, and exits 0 once active. It exits 1 with the \
                reason if the link goes back to suspended (a probe failed), is paused, diverges or \
                stops, or is not active within the timeout: `--wait` alone waits 60 s; \
                `--wait=90s`, `--wait=2m` or `--wait=1500ms` set it (a bare number is seconds; at most \
                one day). Give the timeout with `=`, or after the link.
                """)
        /// How often `--wait` reads the link's status.
        static let waitPollIntervalMs = 200

        @OptionGroup var broker: BrokerOptions
        @Argument(help: "The link.") var link: String
        @Flag(help: "Resume at once, without verifying the target.") var force = false
        @Option(name: .long, defaultAsFlag: WaitTimeout(ms: ResumeWait.defaultTimeoutMs), parsing: .next,
                help: ArgumentHelp("Wait until the link is active, at most this long.", valueName: "timeout"))
        var wait: WaitTimeout? = nil

        func validate() throws {
            if let wait, wait.ms == nil {
                throw ValidationError("--wait=\(wait.text): not a timeout; give seconds (60), or 90s, 2m, 1500ms, up to a day")
            }
        }

        func run() async throws {
            try await reportingFailures("links resume") {
                let client = try broker.client()
                let data = try await client.send("POST", APIRoutes.linkResume.path(["link": link]) + "?force=\(force)")
                var status = try client.decode(data, as: LinkStatusBody.self)
                guard let timeoutMs = wait?.ms else {
                    printLine(broker.json ? String(decoding: data, as: UTF8.self) : "\(link): \(status.state) (probes \(status.probeProgress))")
                    return
                }
                let start = ContinuousClock.now
                var lastProgress: String?
                while true {
                    switch ResumeWait.decide(status, waitedMs: milliseconds(since: start), timeoutMs: timeoutMs) {
                    case .done(let line):
                        printLine(broker.json ? statusJSON(status) : line)
                        return
                    case .failed(let reason):
                        if broker.json { printLine(statusJSON(status)) }
                        printError("orgsync links resume: \(reason)")
                        throw ExitCodes.problemFound
                    case .waiting(let progress):
                        if progress != lastProgress && !broker.json { printLine(progress) }
                        lastProgress = progress
                    }
                    try await Task.sleep(for: .milliseconds(Self.waitPollIntervalMs))
                    status = try await client.get(APIRoutes.link.path(["link": link]), as: LinkStatusBody.self)
                }
            }
        }

        func statusJSON(_ status: LinkStatusBody) -> String {
            String(decoding: (try? APIJSON.encoder().encode(status)) ?? Data(), as: UTF8.self)
        }
    }
}

/// The timeout of `links resume --wait[=TIMEOUT]`: seconds, or a number with ms, s or m. Any
/// text is taken here and checked in `validate()`: ArgumentParser takes an option's value it
/// cannot parse for the bare flag, which would turn `--wait=soon` into a silent 60 s.
struct WaitTimeout: ExpressibleByArgument, CustomStringConvertible, Sendable {
    let text: String
    /// Nil when `text` is not a timeout.
    let ms: UInt64?

    init(ms: UInt64) {
        self.ms = ms
        text = ms % 1_000 == 0 ? "\(ms / 1_000)s" : "\(ms)ms"
    }

    init?(argument: String) {
        text = argument
        ms = ResumeWait.parseTimeoutMs(argument)
    }

    var description: String { text }
}

/// Milliseconds from `start` to now (0 if the clock has not moved).
func milliseconds(since start: ContinuousClock.Instant) -> UInt64 {
    let elapsed = start.duration(to: .now).components
    guard elapsed.seconds >= 0, elapsed.attoseconds >= 0 else { return 0 }
    return UInt64(elapsed.seconds) &* 1_000 &+ UInt64(elapsed.attoseconds / 1_000_000_000_000_000)
}

extension LinksCommand {
    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a paused or diverged link consume from an offset. Needs an admin token.",
            discussion: """
                The target's stored position is rewritten in the target's own transaction to (this \
                stream's id and epoch, OFFSET - 1), or removed for 0, and the cursor set to OFFSET. \
                A diverged link then consumes again; a paused one stays paused. Entries from OFFSET \
                on are applied again (upserts merge; an insert of a key the target holds is rejected \
                and dead-lettered). See "When a link diverges" in the README.
                """)
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "The link.") var link: String
        @Option(name: .customLong("from"), help: "The next offset to apply.") var offset: UInt64

        func run() async throws {
            try await reportingFailures("links reset") {
                let data = try await broker.client().send("POST", APIRoutes.linkReset.path(["link": link]) + "?from=\(offset)")
                let status = try broker.client().decode(data, as: LinkStatusBody.self)
                printLine(broker.json ? String(decoding: data, as: UTF8.self)
                    : "\(link): \(status.state) from offset \(status.cursor) (stream end \(status.endOffset))")
            }
        }
    }

    struct Adopt: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take the offset a diverged link's target holds as this stream's. Needs an admin token.",
            discussion: """
                Only when you know the target holds this stream's entries up to that offset (a data \
                directory restored from a backup, say): the target's position gets this stream's \
                identity and the link consumes after it. Refused when the target holds no position \
                or one at or past the stream's end (use `links reset` then).
                """)
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "The link.") var link: String

        func run() async throws {
            try await reportingFailures("links adopt") {
                let data = try await broker.client().send("POST", APIRoutes.linkAdopt.path(["link": link]))
                let status = try broker.client().decode(data, as: LinkStatusBody.self)
                printLine(broker.json ? String(decoding: data, as: UTF8.self)
                    : "\(link): \(status.state) from offset \(status.cursor) (stream end \(status.endOffset))")
            }
        }
    }
}

struct CursorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cursor",
        abstract: "Show or set a link's cursor (the next offset it applies).",
        subcommands: [Show.self, Set.self]
    )

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a link's cursor and the stream's end.")
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "The link.") var link: String

        func run() async throws {
            try await reportingFailures("cursor show") {
                let status = try await broker.client().get(APIRoutes.link.path(["link": link]), as: LinkStatusBody.self)
                printLine(broker.json ? #"{"link":"\#(link)","cursor":\#(status.cursor),"end_offset":\#(status.endOffset)}"#
                    : "\(link): cursor \(status.cursor), stream end \(status.endOffset), lag \(status.lag)")
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a paused link's cursor (refused unless the link is paused). Needs an admin token.",
            discussion: "The same as `links reset`: the target's stored position is rewritten too, so moving back re-applies entries; moving forward skips them.")
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "The link.") var link: String
        @Argument(help: "The new cursor: the next offset to apply.") var offset: UInt64

        func run() async throws {
            try await reportingFailures("cursor set") {
                let data = try await broker.client().send("POST", APIRoutes.linkCursor.path(["link": link]) + "?offset=\(offset)")
                let status = try broker.client().decode(data, as: LinkStatusBody.self)
                printLine(broker.json ? String(decoding: data, as: UTF8.self) : "\(link): cursor \(status.cursor) (\(status.state))")
            }
        }
    }
}
