import OrgSyncPluginAPI

/// The state of one check: its target, the adapters it opened (closed at the end), and the
/// assertions it makes.
struct ContractSession {
    let target: any AdapterContractTarget
    let check: AdapterContract.Check
    let stream = "contract-stream"
    /// The identity batches carry, unless a check says otherwise.
    static let identity = StreamIdentity(streamID: "contract0stream0id", epoch: 1)
    private var opened: [any OrgAdapter] = []

    static let accounts = "ContractAccount"
    static let cases = "ContractCase"

    init(target: any AdapterContractTarget, check: AdapterContract.Check) {
        self.target = target
        self.check = check
    }

    // MARK: - The checks

    mutating func orderedApply() async throws {
        let adapter = try await openAdapter(link: "contract-ordered")
        try await expectAppliedOffset(adapter, nil, "before anything was applied")
        try await apply(adapter, [
            entry(0, .insert, Self.accounts, "A", ["Name": .string("a1"), "Employees": .int(10)]),
            entry(1, .upsert, Self.accounts, "B", ["Name": .string("b1"), "Employees": .int(5)]),
            entry(2, .upsert, Self.accounts, "A", ["Name": .string("a2")]),
            entry(3, .upsert, Self.accounts, "C", ["Name": .string("c1")]),
            entry(4, .delete, Self.accounts, "C", [:]),
            entry(5, .upsert, Self.cases, "K1", ["Subject": .string("k1")]),
        ])
        await adapter.releaseMemory()  // as a link that stood still does: the next batch applies as before
        try await apply(adapter, [
            entry(6, .upsert, Self.accounts, "B", ["Name": .string("b2")]),
            entry(7, .upsert, Self.accounts, "D", ["Name": .string("d1")]),
            entry(8, .delete, Self.accounts, "nothing-here", [:]),
        ])
        let accounts = try await rowsByKey(Self.accounts)
        try expect(Set(accounts.keys) == ["A", "B", "D"], "accounts A, B, D (C deleted), found \(accounts.keys.sorted())")
        try expectField(accounts, "A", "Name", .string("a2"), "an upsert after the insert of A wins")
        try expectField(accounts, "A", "Employees", .int(10), "an upsert keeps the fields it does not carry")
        try expectField(accounts, "B", "Name", .string("b2"), "the second batch applies after the first")
        try expectField(accounts, "B", "Employees", .int(5), "a partial upsert keeps the other fields")
        let cases = try await rowsByKey(Self.cases)
        try expect(Set(cases.keys) == ["K1"], "one row per object: case K1 in its own table, found \(cases.keys.sorted())")
        try await expectAppliedOffset(adapter, 8, "after batches ending at offset 8")
    }

    mutating func idempotentReapply() async throws {
        let adapter = try await openAdapter(link: "contract-idempotent")
        let first = [
            entry(0, .insert, Self.accounts, "X", ["Name": .string("x1")]),
            entry(1, .upsert, Self.accounts, "Y", ["Name": .string("y1")]),
        ]
        let second = [entry(2, .upsert, Self.accounts, "X", ["Name": .string("x2")])]
        try await apply(adapter, first)
        try await apply(adapter, second)
        if target.capabilities.storesAppliedOffset {
            try await apply(adapter, first, "re-applying a batch already applied")
            let afterFirst = try await rowsByKey(Self.accounts)
            try expectField(afterFirst, "X", "Name", .string("x2"), "re-applying an older batch must not move X back")
        } else {
            try await apply(adapter, first, "re-applying a batch already applied")
        }
        try await apply(adapter, second, "re-applying a batch already applied")
        try await apply(adapter, [
            entry(2, .upsert, Self.accounts, "X", ["Name": .string("x2")]),
            entry(3, .upsert, Self.accounts, "Z", ["Name": .string("z1")]),
        ], "a batch that overlaps the applied ones")
        let rows = try await target.rows(object: Self.accounts)
        let keys = rows.map(\.key).sorted()
        try expect(keys == ["X", "Y", "Z"], "one row each for X, Y, Z after re-application, found \(keys)")
        try expectField(try await rowsByKey(Self.accounts), "X", "Name", .string("x2"), "X keeps its newest value")
        if target.capabilities.storesAppliedOffset {
            try await expectAppliedOffset(adapter, 3, "after re-applications and a batch ending at 3")
        }
    }

    mutating func rejectedEntry() async throws {
        let adapter = try await openAdapter(link: "contract-rejected")
        try await apply(adapter, [entry(0, .upsert, Self.accounts, "P", ["Name": .string("p1")])])
        let poison = target.entryToReject(offset: 2, object: Self.accounts, existingKey: "P")
        let batch = [
            entry(1, .upsert, Self.accounts, "Q", ["Name": .string("q1")]),
            poison,
            entry(3, .upsert, Self.accounts, "R", ["Name": .string("r1")]),
        ]
        do {
            try await adapter.apply(EntryBatch(stream: stream, identity: Self.identity, entries: batch))
            throw violation("a batch with an entry the target cannot apply (offset 2) was applied without error")
        } catch let error as AdapterError {
            guard case .rejected(let offset) = error.kind else {
                throw violation("expected rejected(offset: 2), got \(error)")
            }
            try expect(offset == 2, "the rejection names the offending entry's offset 2, not \(offset)")
            try expect(!error.message.isEmpty, "a rejection carries a message")
        }
        let afterReject = try await rowsByKey(Self.accounts)
        try expect(
            Set(afterReject.keys) == ["P"],
            "nothing of a rejected batch is committed: only P, found \(afterReject.keys.sorted())")
        try expectField(afterReject, "P", "Name", .string("p1"), "the rejected entry did not change P")
        if target.capabilities.storesAppliedOffset {
            try await expectAppliedOffset(adapter, 0, "a rejected batch does not move the applied offset")
        }
        // What the link does next: apply the prefix, dead-letter the entry, go on after it.
        try await apply(adapter, [batch[0]], "the prefix of a rejected batch")
        try await apply(adapter, [batch[2]], "the entries after a rejected one")
        let after = try await rowsByKey(Self.accounts)
        try expect(Set(after.keys) == ["P", "Q", "R"], "P, Q, R after the link went on, found \(after.keys.sorted())")
        if target.capabilities.storesAppliedOffset {
            try await expectAppliedOffset(adapter, 3, "after the entries past the rejected one")
        }
    }

    mutating func probeDeadTarget() async throws {
        let adapter = try await openAdapter(link: "contract-dead")
        try await apply(adapter, [entry(0, .upsert, Self.accounts, "S", ["Name": .string("s1")])])
        do {
            try await adapter.probe()
        } catch {
            throw violation("probe of a live target failed: \(error)")
        }
        try await target.makeDead()
        try await expectConnectionError("probe of a dead target") { try await adapter.probe() }
        try await expectConnectionError("apply to a dead target") {
            try await adapter.apply(EntryBatch(stream: stream, identity: Self.identity, entries: [
                entry(1, .upsert, Self.accounts, "T", ["Name": .string("t1")])
            ]))
        }
        let fresh = try target.factory.makeAdapter(target.configuration(linkName: "contract-dead", streamName: stream))
        opened.append(fresh)
        try await expectConnectionError("open of a new adapter on a dead target") { try await fresh.open() }
    }

    mutating func appliedOffsetSurvivesReopen() async throws {
        let link = "contract-reopen"
        let adapter = try await openAdapter(link: link)
        try await apply(adapter, (0..<5).map { entry(UInt64($0), .upsert, Self.accounts, "R\($0)", ["Name": .string("r")]) })
        try await expectAppliedOffset(adapter, 4, "after a batch ending at 4")
        await adapter.close()
        let reopened = try await openAdapter(link: link)
        try await expectAppliedOffset(reopened, 4, "after close and reopen")
        let other = try await openAdapter(link: "contract-reopen-other")
        try await expectAppliedOffset(other, nil, "for another link on the same target (offsets are per link)")
        try await apply(reopened, [
            entry(4, .upsert, Self.accounts, "R4", ["Name": .string("r")]),
            entry(5, .upsert, Self.accounts, "R5", ["Name": .string("r")]),
        ])
        try await expectAppliedOffset(reopened, 5, "after the reopened adapter applied up to 5")
        let rows = try await target.rows(object: Self.accounts)
        try expect(rows.count == 6, "six rows R0...R5, found \(rows.count)")
    }

    /// The stored position carries the batch's stream identity. A batch of another stream, or
    /// of an earlier epoch than the stored one, is a conflict and commits nothing; a batch of a
    /// later epoch applies every entry (the link checked the old position and starts after it).
    mutating func positionIdentity() async throws {
        let adapter = try await openAdapter(link: "contract-identity")
        try await apply(adapter, [0, 1, 2].map { entry($0, .upsert, Self.accounts, "I\($0)", ["Name": .string("i1")]) })
        try await expectAppliedOffset(adapter, 2, "after a batch ending at 2")
        guard target.capabilities.storesAppliedOffset else { return }
        let other = StreamIdentity(streamID: "another0stream", epoch: 1)
        try await expectPositionConflict("a batch of another stream over a stored position") {
            try await adapter.apply(EntryBatch(stream: stream, identity: other, entries: [
                entry(3, .upsert, Self.accounts, "J3", ["Name": .string("j")])
            ]))
        }
        let afterConflict = try await rowsByKey(Self.accounts)
        try expect(afterConflict["J3"] == nil, "nothing of a conflicting batch is committed")
        try await expectAppliedOffset(adapter, 2, "a conflicting batch does not move the position")
        // Epoch 2 began at offset 1 (a repair cut 1...2): offsets 1 and 2 name new entries.
        let next = StreamIdentity(streamID: Self.identity.streamID, epoch: 2)
        try await apply(adapter, [
            entry(1, .upsert, Self.accounts, "E1", ["Name": .string("e2")]),
            entry(2, .upsert, Self.accounts, "E2", ["Name": .string("e2")]),
        ], "a batch of a later epoch at offsets the old epoch had applied", identity: next)
        let rows = try await rowsByKey(Self.accounts)
        try expect(rows["E1"] != nil && rows["E2"] != nil, "entries of the new epoch at old offsets are applied, not skipped")
        try await expectAppliedOffset(adapter, 2, "after the new epoch's batch", identity: next)
        try await expectPositionConflict("a batch of an older epoch than the stored one") {
            try await adapter.apply(EntryBatch(stream: stream, identity: Self.identity, entries: [
                entry(3, .upsert, Self.accounts, "O3", ["Name": .string("o")])
            ]))
        }
    }

    /// Owner epochs: a broker that lost the link (a lower owner epoch) applies nothing over a
    /// position a later owner stored, through this adapter or another one on the same link.
    mutating func ownerFencing() async throws {
        // The broker serves leased links only with factories that say they fence: that must be
        // what the target does.
        guard target.factory.fencesOwnerEpochs == target.capabilities.storesAppliedOffset else {
            throw violation("the factory says fencesOwnerEpochs = \(target.factory.fencesOwnerEpochs), but the target "
                + (target.capabilities.storesAppliedOffset ? "stores and fences owner epochs" : "keeps no position to fence with"))
        }
        let link = "contract-fencing"
        let adapter = try await openAdapter(link: link)
        try await apply(adapter, [0, 1].map { entry($0, .upsert, Self.accounts, "F\($0)", ["Name": .string("owner5")]) },
                        "a batch of owner epoch 5", ownerEpoch: 5)
        guard target.capabilities.storesAppliedOffset else { return }
        try await expectPosition(adapter, AppliedPosition(identity: Self.identity, offset: 1, ownerEpoch: 5), "after a batch of owner epoch 5")
        try await expectFenced("a batch of owner epoch 4 over a position of owner epoch 5") {
            try await adapter.apply(EntryBatch(stream: stream, identity: Self.identity, entries: [
                entry(2, .upsert, Self.accounts, "F2", ["Name": .string("owner4")])
            ], ownerEpoch: 4))
        }
        try expect(try await rowsByKey(Self.accounts)["F2"] == nil, "nothing of a fenced batch is committed")
        try await expectPosition(adapter, AppliedPosition(identity: Self.identity, offset: 1, ownerEpoch: 5), "a fenced batch does not move the position")
        // A new owner (another broker: another adapter instance) takes over from the position.
        let successor = try await openAdapter(link: link)
        try await apply(successor, [2, 3].map { entry($0, .upsert, Self.accounts, "F\($0)", ["Name": .string("owner7")]) },
                        "a batch of owner epoch 7 after owner epoch 5", ownerEpoch: 7)
        try await apply(successor, [2, 3].map { entry($0, .upsert, Self.accounts, "F\($0)", ["Name": .string("owner7")]) },
                        "the same batch of owner epoch 7 again", ownerEpoch: 7)
        try await expectFenced("the old owner's next batch (owner epoch 5) after owner epoch 7") {
            try await adapter.apply(EntryBatch(stream: stream, identity: Self.identity, entries: [
                entry(4, .upsert, Self.accounts, "F4", ["Name": .string("owner5")])
            ], ownerEpoch: 5))
        }
        let rows = try await rowsByKey(Self.accounts)
        try expect(rows["F4"] == nil, "nothing of the old owner's batch is committed")
        try expectField(rows, "F3", "Name", .string("owner7"), "the new owner's entries are applied")
        await successor.close()
        let reopened = try await openAdapter(link: link)
        try await expectPosition(reopened, AppliedPosition(identity: Self.identity, offset: 3, ownerEpoch: 7), "after the new owner's batch, reopened")
    }

    /// `setAppliedPosition` rewrites the stored position (an operator's reset): entries after it
    /// are applied again; `nil` removes it; the position survives a reopen.
    mutating func positionRewrite() async throws {
        let link = "contract-rewrite"
        let adapter = try await openAdapter(link: link)
        try await apply(adapter, (0..<4).map { entry(UInt64($0), .upsert, Self.accounts, "W\($0)", ["Name": .string("w1")]) })
        do {
            try await adapter.setAppliedPosition(AppliedPosition(identity: Self.identity, offset: 1))
        } catch {
            throw violation("setAppliedPosition(offset 1) failed: \(error)")
        }
        try await expectAppliedOffset(adapter, 1, "after the position was rewritten to 1")
        try await apply(adapter, [
            entry(2, .upsert, Self.accounts, "W2", ["Name": .string("w2")]),
            entry(3, .upsert, Self.accounts, "W3", ["Name": .string("w2")]),
        ], "a replay after the rewritten position")
        if target.capabilities.storesAppliedOffset {
            let rows = try await rowsByKey(Self.accounts)
            try expectField(rows, "W2", "Name", .string("w2"), "a replayed entry after a rewritten position is applied, not skipped")
        }
        await adapter.close()
        let reopened = try await openAdapter(link: link)
        try await expectAppliedOffset(reopened, 3, "after the replay, closed and reopened")
        do {
            try await reopened.setAppliedPosition(nil)
        } catch {
            throw violation("setAppliedPosition(nil) failed: \(error)")
        }
        try await expectPosition(reopened, nil, "after the position was removed")
    }

    // MARK: - Helpers

    mutating func closeAll() async {
        for adapter in opened { await adapter.close() }
        opened.removeAll()
    }

    private mutating func openAdapter(link: String) async throws -> any OrgAdapter {
        let adapter = try target.factory.makeAdapter(target.configuration(linkName: link, streamName: stream))
        opened.append(adapter)
        do {
            try await adapter.open()
        } catch {
            throw violation("open of link \(link) failed: \(error)")
        }
        return adapter
    }

    private func entry(_ offset: UInt64, _ op: EntryOperation, _ object: String, _ key: String, _ fields: [String: JSONValue]) -> Entry {
        Entry(
            offset: Offset(offset), org: "contract", object: object, op: op, key: key,
            ts: "2026-11-25T00:00:00.\(String(format3: offset))Z", fields: fields)
    }

    private func apply(
        _ adapter: any OrgAdapter, _ entries: [Entry], _ what: String = "a valid batch", identity: StreamIdentity = Self.identity,
        ownerEpoch: UInt64 = 0
    ) async throws {
        do {
            try await adapter.apply(EntryBatch(stream: stream, identity: identity, entries: entries, ownerEpoch: ownerEpoch))
        } catch {
            let range = "\(entries.first?.offset ?? 0)...\(entries.last?.offset ?? 0)"
            throw violation("\(what) (offsets \(range)) failed: \(error)")
        }
    }

    private func rowsByKey(_ object: String) async throws -> [String: ContractRow] {
        let rows = try await target.rows(object: object)
        var byKey: [String: ContractRow] = [:]
        for row in rows {
            guard byKey.updateValue(row, forKey: row.key) == nil else {
                throw violation("duplicate rows for key \(row.key) of \(object)")
            }
        }
        return byKey
    }

    private func expectAppliedOffset(
        _ adapter: any OrgAdapter, _ expected: Offset?, _ when: String, identity: StreamIdentity = Self.identity
    ) async throws {
        try await expectPosition(adapter, expected.map { AppliedPosition(identity: identity, offset: $0) }, when)
    }

    private func expectPosition(_ adapter: any OrgAdapter, _ expected: AppliedPosition?, _ when: String) async throws {
        let stored: AppliedPosition?
        do {
            stored = try await adapter.appliedPosition()
        } catch {
            throw violation("appliedPosition() failed \(when): \(error)")
        }
        let wanted = target.capabilities.storesAppliedOffset ? expected : nil
        try expect(stored == wanted, "appliedPosition() \(when) is \(wanted.map(String.init(describing:)) ?? "nil"), not \(stored.map(String.init(describing:)) ?? "nil")")
    }

    private func expectFenced(_ what: String, _ body: () async throws -> Void) async throws {
        try await expectRefusal(.fenced, named: "fenced", what, body)
    }

    private func expectPositionConflict(_ what: String, _ body: () async throws -> Void) async throws {
        try await expectRefusal(.positionConflict, named: "a position conflict", what, body)
    }

    /// `body` throws an ``AdapterError`` of `kind`, with a message.
    private func expectRefusal(_ kind: AdapterError.Kind, named name: String, _ what: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as AdapterError {
            guard error.kind == kind else { throw violation("\(what): expected \(name), got \(error)") }
            try expect(!error.message.isEmpty, "\(what): \(name) carries a message")
            return
        } catch {
            throw violation("\(what): expected AdapterError \(name), got \(type(of: error)): \(error)")
        }
        throw violation("\(what) succeeded")
    }

    private func expectField(
        _ rows: [String: ContractRow], _ key: String, _ field: String, _ value: JSONValue, _ why: String
    ) throws {
        guard let row = rows[key] else { throw violation("\(why): no row for key \(key)") }
        try expect(row.fields[field] == value, "\(why): \(key).\(field) is \(value), not \(row.fields[field].map { "\($0)" } ?? "missing")")
    }

    private func expectConnectionError(_ what: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as AdapterError {
            guard error.kind == .connection else { throw violation("\(what): expected a connection error, got \(error)") }
            try expect(!error.message.isEmpty, "\(what): a connection error carries a message")
            return
        } catch {
            throw violation("\(what): expected AdapterError.connection, got \(type(of: error)): \(error)")
        }
        throw violation("\(what) succeeded")
    }

    private func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw violation(message()) }
    }

    private func violation(_ message: String) -> AdapterContractViolation {
        AdapterContractViolation(check: check, message: message)
    }
}

extension String {
    /// A number below 1000 as three digits (milliseconds of a timestamp).
    fileprivate init(format3 value: UInt64) {
        let text = String(value % 1000)
        self = String(repeating: "0", count: 3 - text.count) + text
    }
}
