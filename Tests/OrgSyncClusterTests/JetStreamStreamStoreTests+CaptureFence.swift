import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import OrgSyncBroker
import OrgSyncCluster
import OrgSyncCore
import OrgSyncLog
import OrgSyncNATS
import OrgSyncPluginAPI
import OrgSyncTestNATS
import OrgSyncTestSupport
import Testing

/// A database's change feed as the members' capture sources see it: commits 1...`committed`,
/// and a slot's confirmed commit that a round moves only past what its appends made durable —
/// the PostgreSQL source's peek and advance, without the slot's one-reader-at-a-time rule, so
/// two members can read the same changes at once (the worst a lease's move can bring).
///
/// The first `overlappingRounds` rounds meet after they peeked: each waits until all of them
/// have, so they read the same changes and all try to append them.
final class ChangeFeed: Sendable {
    let committed = Observed<UInt64>(0)
    let confirmed = Observed<UInt64>(0)
    let overlappingRounds: Int
    private let peeks = Observed(0)

    init(overlappingRounds: Int = 0) { self.overlappingRounds = overlappingRounds }

    /// Counts a round's peek; one of the first `overlappingRounds` waits for the others'.
    func peeked() async throws {
        let round = peeks.update { count in
            count += 1
            return count
        }
        guard round <= overlappingRounds else { return }
        let all = overlappingRounds
        _ = try await peeks.wait { $0 >= all }
    }

    func commit(through commit: UInt64) { committed.update { $0 = max($0, commit) } }

    /// Up to `changesMax` commits after the confirmed one.
    func peek(changesMax: UInt64) -> [UInt64] {
        let from = confirmed.value + 1
        let through = min(committed.value, confirmed.value + changesMax)
        return from <= through ? Array(from...through) : []
    }

    func advance(through commit: UInt64) { confirmed.update { $0 = max($0, commit) } }
}

/// A capture source on a ``ChangeFeed``: each round peeks up to 9 commits, skips those at or
/// before the position the stream holds, appends the rest three at a time, and only then
/// advances the feed past what it read.
final class FeedSource: ChangeSource {
    let feed: ChangeFeed
    let pollIntervalMs: UInt64 = 2

    init(feed: ChangeFeed) { self.feed = feed }

    func open() async throws {}
    func close() async {}
    func probe() async throws {}

    static func entry(commit: UInt64) -> [UInt8] {
        Array(#"{"org":"db","object":"t","op":"upsert","key":"k\#(commit)","ts":"t","fields":{},"commit":\#(commit)}"#.utf8)
    }

    func capture(after position: SourcePosition?, lastEntry: Entry?, into sink: any CaptureSink) async throws -> CaptureRound {
        let read = feed.peek(changesMax: 9)
        try await feed.peeked()
        let fresh = read.filter { $0 > position?.commit ?? 0 }
        var start = 0
        while start < fresh.count {
            let chunk = Array(fresh[start..<min(start + 3, fresh.count)])
            try await sink.append(chunk.map { Self.entry(commit: $0) }, through: SourcePosition(commit: chunk[chunk.count - 1], change: 0))
            start += chunk.count
        }
        if let last = read.last { feed.advance(through: last) }
        return CaptureRound(appendedChanges: fresh.count, skippedChanges: read.count - fresh.count, transactions: read.count, caughtUp: read.count < 9)
    }

    func position(of entry: Entry) -> SourcePosition? {
        guard case .int(let commit)? = entry.extra["commit"], let value = UInt64(exactly: commit) else { return nil }
        return SourcePosition(commit: value, change: 0)
    }

    func lagBytes() async -> UInt64? { nil }
}

/// A capture source's appends to a cluster stream are fenced on its last append: two members
/// running one source at once (around a move of its lease) never both store a change.
extension JetStreamStreamStoreTests {
    @Test func aSourcesAppendIsRefusedOnceAnotherWriterAppendedForIt() async throws {
        try await withServer { server in
            let a = try await Self.member(["127.0.0.1:\(server.port)"], node: "a")
            let b = try await Self.member(["127.0.0.1:\(server.port)"], node: "b")
            defer { Task { await a.close(); await b.close() } }
            let storeA = try #require(a.stores["events"])
            let storeB = try #require(b.stores["events"])
            let onA = storeA.captureStream(source: "crm.db")
            let onB = storeB.captureStream(source: "crm.db")

            await #expect(throws: CaptureFenced.self, "nothing is appended before the source's last append is read") {
                _ = try await onA.append([Self.entry("early")])
            }
            #expect(try await onA.lastAppend(source: "crm.db") == nil, "no append of the source yet")
            #expect(try await onB.lastAppend(source: "crm.db") == nil)
            #expect(try await onA.append([Self.entry("a1")]).firstOffset == 0)
            // Other producers' appends, and another source's, move the stream without fencing it.
            _ = try await storeB.append([Self.entry("p1")], idempotencyKey: nil)
            let erp = storeB.captureStream(source: "erp")
            #expect(try await erp.lastAppend(source: "erp") == nil)
            _ = try await erp.append([Self.entry("e1")])
            #expect(try await onA.append([Self.entry("a2"), Self.entry("a3")]).firstOffset == 3)

            // b read the source's last append before a's: refused, and refused again until it
            // reads it anew; then it appends after a's, and a is refused.
            await #expect(throws: CaptureFenced.self) { _ = try await onB.append([Self.entry("b1")]) }
            await #expect(throws: CaptureFenced.self) { _ = try await onB.append([Self.entry("b1")]) }
            #expect(try await onB.lastAppend(source: "crm.db")?.map(\.key) == ["a2", "a3"], "a's last append, with its offsets")
            #expect(try await onB.lastAppend(source: "crm.db")?.map(\.offset.rawValue) == [3, 4])
            #expect(try await onB.append([Self.entry("b1")]).firstOffset == 5)
            await #expect(throws: CaptureFenced.self) { _ = try await onA.append([Self.entry("a4")]) }

            let all = try await Self.readAll(storeA)
            #expect(all.map(\.key) == ["a1", "p1", "e1", "a2", "a3", "b1"], "nothing of a refused append is stored")
            #expect(all.map(\.offset.rawValue) == Array(0..<6))
        }
    }

    /// NATS going silent under a running source (its server stopped with SIGSTOP: requests time
    /// out, and an append in flight may be stored once it wakes) neither stops the source nor
    /// loses or doubles a change: it waits, reads its position again once NATS answers, and
    /// captures on. (SIGSTOP rather than a restart: a restart on the same port could meet another
    /// suite's server that took the port meanwhile.)
    @Test func aSourceWaitsOutNATSAndCapturesOnOnceItIsBack() async throws {
        let server = try await NATSTestServer()
        defer {
            Glibc.kill(server.process.processIdentifier, SIGCONT)
            server.stop()
        }
        let member = try await Self.member(["127.0.0.1:\(server.port)"], node: "a")
        defer { Task { await member.close() } }
        let store = try #require(member.stores["events"])
        let feed = ChangeFeed()
        feed.commit(through: 20)
        var configuration = LinkSupervisorConfiguration()
        configuration.jitterRatio = 0
        configuration.idleMemoryReleaseAfterMs = nil
        let supervisor = try SourceSupervisor(
            name: "crm", source: FeedSource(feed: feed), stream: store.captureStream(source: "crm"), configuration: configuration,
            logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, randomSeed: 1)
        let run = Task { try await supervisor.run() }
        defer { run.cancel() }
        try await withTimeout(ms: 30_000, "commits 1...20 captured") { _ = try await feed.confirmed.wait { $0 >= 20 } }

        Glibc.kill(server.process.processIdentifier, SIGSTOP)
        feed.commit(through: 60)
        try await withTimeout(ms: 30_000, "the source to find NATS away") {
            while await supervisor.status().lastError?.contains("cannot answer") != true { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(feed.confirmed.value == 20, "nothing is acknowledged to the database while the stream cannot take it")
        Glibc.kill(server.process.processIdentifier, SIGCONT)
        try await withTimeout(ms: 60_000, "commits 21...60 captured once NATS is back") { _ = try await feed.confirmed.wait { $0 >= 60 } }
        let status = await supervisor.status()
        #expect(status.isRunning && status.lastError == nil, "\(status.lastError ?? "")")
        let captured = try await Self.readAll(store).compactMap { entry -> UInt64? in
            guard case .int(let commit)? = entry.extra["commit"] else { return nil }
            return UInt64(exactly: commit)
        }
        #expect(captured == Array(1...60), "every change once, in order")
    }

    /// A stream made before sources had subjects of their own gains them when a member opens it,
    /// keeping what it holds.
    @Test func aStreamMadeBeforeCaptureSubjectsGainsThem() async throws {
        try await withServer { server in
            let connection = try await NATSConnection.connect(server.options())
            let jetStream = JetStream(connection: connection)
            let name = JetStreamStreamStore.jetStreamName(for: "events")
            _ = try await jetStream.createStream(JetStreamStreamConfig(
                name: name, subjects: [JetStreamStreamStore.subject(for: "events")], storage: "file", replicas: 1,
                allowDirect: true, denyDelete: true))
            let member = try await Self.member(["127.0.0.1:\(server.port)"], node: "a")
            defer { Task { await member.close(); await connection.close() } }
            let subjects = try await jetStream.streamInfo(name).config.subjects
            #expect(subjects == [JetStreamStreamStore.subject(for: "events"), JetStreamStreamStore.captureSubjects(for: "events")])
            let store = try #require(member.stores["events"])
            _ = try await store.append([Self.entry("before")], idempotencyKey: nil)
            let capture = store.captureStream(source: "crm")
            #expect(try await capture.lastAppend(source: "crm") == nil)
            #expect(try await capture.append([Self.entry("captured")]).firstOffset == 1)
            #expect(try await capture.lastAppend(source: "crm")?.map(\.key) == ["captured"])
            #expect(JetStreamStreamStore.captureSubject(for: "a.b", source: "crm_1.x") == "orgsync.capture.ORGSYNC_a_b.crm_5F1_2Ex")
        }
    }

    /// Two members run one source over one change feed at the same time, from the start to the
    /// end, beside another producer: the stream holds every change exactly once, in order. Their
    /// first rounds read the same changes (and one of them is refused); later ones race freely.
    @Test func twoMembersRunningOneSourceAtOnceAppendEveryChangeOnce() async throws {
        try await withServer { server in
            let a = try await Self.member(["127.0.0.1:\(server.port)"], node: "a")
            let b = try await Self.member(["127.0.0.1:\(server.port)"], node: "b")
            defer { Task { await a.close(); await b.close() } }
            let stores = [try #require(a.stores["events"]), try #require(b.stores["events"])]
            let feed = ChangeFeed(overlappingRounds: 2)
            feed.commit(through: 30)
            var configuration = LinkSupervisorConfiguration()
            configuration.jitterRatio = 0
            configuration.backoffBaseMs = 5
            configuration.backoffCapMs = 20
            configuration.probeThreshold = 1
            configuration.idleMemoryReleaseAfterMs = nil
            let supervisors = try stores.enumerated().map { index, store in
                try SourceSupervisor(
                    name: "crm", source: FeedSource(feed: feed), stream: store.captureStream(source: "crm"), configuration: configuration,
                    logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, randomSeed: UInt64(index + 1))
            }
            let runs = supervisors.map { supervisor in Task { try await supervisor.run() } }
            defer { for run in runs { run.cancel() } }
            let commits: UInt64 = 300
            let producer = Task {
                for commit in stride(from: UInt64(35), through: commits, by: 5) {
                    feed.commit(through: commit)
                    _ = try await stores[1].append([Self.entry("p\(commit)")], idempotencyKey: nil)
                }
            }
            try await producer.value
            try await withTimeout(ms: 60_000, "the feed to be confirmed through commit \(commits)") {
                _ = try await feed.confirmed.wait { $0 >= commits }
            }
            var fenced: UInt64 = 0
            for supervisor in supervisors {
                let status = await supervisor.status()
                #expect(status.isRunning && (status.lastError == nil || status.lastError?.contains("another writer") == true),
                        "\(status.lastError ?? "")")
                fenced += status.fencedAppends
            }
            #expect(fenced >= 1, "the first rounds read the same changes: one of their appends is refused")
            for run in runs { run.cancel() }
            for run in runs { _ = try? await run.value }

            let captured = try await Self.readAll(stores[0]).compactMap { entry -> UInt64? in
                guard case .int(let commit)? = entry.extra["commit"] else { return nil }
                return UInt64(exactly: commit)
            }
            #expect(captured == Array(1...commits), "every change once, in order (\(captured.count) captured)")
            print("two members, one source: \(captured.count) changes, \(fenced) appends fenced")
        }
    }
}
