import Dispatch
import Logging
import Synchronization

extension StreamLog {
    /// Appends entries (each one opaque bytes, normally a JSON object) as one unit: they get
    /// consecutive offsets, and the call returns only once all of them are durable (per the
    /// fsync policy). Concurrent appends are group-committed.
    ///
    /// Waits (back-pressure) while `queuedAppendsMax` appends or `queuedBytesMax` bytes are
    /// queued. Nothing of a rejected append is written.
    ///
    /// - Throws: ``LogError/entryTooLarge(index:bytes:limit:)``, ``LogError/tooManyEntries(count:limit:)``,
    ///   ``LogError/emptyAppend``, ``LogError/storage(_:)`` (e.g. disk full; nothing of this
    ///   append is acknowledged and the log stays usable), ``LogError/closed``.
    public func append(_ entries: [[UInt8]]) async throws -> AppendResult {
        try checkLimits(entries)
        return try await enqueue(entries, claim: nil).result
    }

    /// Checks an append against the entry limits before anything is queued.
    func checkLimits(_ entries: [[UInt8]]) throws {
        guard !entries.isEmpty else { throw LogError.emptyAppend }
        guard entries.count <= configuration.appendEntriesMax else {
            throw LogError.tooManyEntries(count: entries.count, limit: configuration.appendEntriesMax)
        }
        for (i, entry) in entries.enumerated() {
            guard entry.count <= configuration.entryBytesMax else {
                throw LogError.entryTooLarge(index: i, bytes: entry.count, limit: configuration.entryBytesMax)
            }
        }
    }

    /// Queues an append for the flusher. With a claim, the key is checked and marked in flight
    /// in the same critical section that queues the append, so one key is never queued twice.
    func enqueue(_ entries: [[UInt8]], claim: KeyClaim?) async throws -> AppendOutcome {
        let bytes = entries.reduce(0) { $0 + $1.count + 4 }
        // Large appends compress their own batches here, on the caller's task, so that
        // compression runs on every core and overlaps the flusher's write and fdatasync.
        let encoded = bytes >= configuration.precompressMinBytes ? try encodeAhead(entries) : nil
        let nowMs = claim == nil ? 0 : clock()
        return try await withCheckedThrowingContinuation { continuation in
            let append = PendingAppend(entries: entries, bytes: bytes, continuation: continuation, claim: claim, encoded: encoded)
            let (answer, startFlush) = state.withLock { s -> (Result<AppendOutcome, LogError>?, Bool) in
                if s.closed { return (.failure(.closed), false) }
                if let failure = s.failure { return (.failure(failure), false) }
                if let claim {
                    switch s.idempotency.claim(claim.key, fingerprint: claim.fingerprint, nowMs: nowMs) {
                    case .admit: break
                    case .replay(let result): return (.success(.replayed(result)), false)
                    case .reused: return (.failure(.idempotencyKeyReused(key: claim.key)), false)
                    case .inFlight: return (.failure(.idempotencyKeyInFlight(key: claim.key)), false)
                    }
                }
                if s.waiting.isEmpty && hasRoom(s, bytes: bytes) {
                    s.pending.append(append)
                    s.pendingBytes += bytes
                } else {
                    s.waiting.append(append)
                }
                if s.gathering { gatherSignal.signal() }
                if s.flushing { return (nil, false) }
                s.flushing = true
                return (nil, true)
            }
            if let answer {
                continuation.resume(with: answer)
                return
            }
            if startFlush { flushQueue.async { self.flushLoop() } }
        }
    }

    private func hasRoom(_ s: State, bytes: Int) -> Bool {
        s.pending.isEmpty
            || (s.pending.count < configuration.queuedAppendsMax && s.pendingBytes + bytes <= configuration.queuedBytesMax)
    }

    /// Runs on `flushQueue` only: takes everything queued, writes and flushes it, acknowledges,
    /// and repeats until the queue is empty.
    func flushLoop() {
        while true {
            gatherStragglers()
            let (group, writeOffset) = state.withLock { s -> ([PendingAppend], UInt64) in
                let group = s.pending
                s.pending = []
                s.pendingBytes = 0
                // Admit waiting appends into the freed queue, in order.
                while let next = s.waiting.first, hasRoom(s, bytes: next.bytes) {
                    s.pending.append(next)
                    s.pendingBytes += next.bytes
                    s.waiting.removeFirst()
                }
                s.lastGroupAppends = group.count
                if group.isEmpty {
                    s.flushing = false
                    let drained = s.drainWaiters
                    s.drainWaiters = []
                    for waiter in drained { waiter.resume() }
                }
                return (group, s.writeOffset)
            }
            if group.isEmpty { return }
            writeGroup(group, at: writeOffset)
        }
    }

    /// Group commit with closed-loop producers: right after an acknowledgement the producers
    /// that were just answered have not appended again yet, so flushing at once would write a
    /// group of one and make the others wait a whole flush. When fewer appends are queued than
    /// the last group held, wait up to `groupCommitWaitMicros` for the rest (PostgreSQL's
    /// commit_delay/commit_siblings idea). Appends signal the wait; it never exceeds the bound.
    private func gatherStragglers() {
        let waitMicros = configuration.groupCommitWaitMicros
        guard waitMicros > 0 else { return }
        let gathering = state.withLock { s -> Bool in
            guard !s.pending.isEmpty, s.pending.count < s.lastGroupAppends, s.lastGroupAppends > 1 else { return false }
            s.gathering = true
            return true
        }
        guard gathering else { return }
        let deadline = DispatchTime.now() + .microseconds(waitMicros)
        while true {
            let done = state.withLock { s -> Bool in
                let enough = s.pending.count >= s.lastGroupAppends || s.pendingBytes >= configuration.batchBytesMax
                if enough { s.gathering = false }
                return enough
            }
            if done { return }
            if gatherSignal.wait(timeout: deadline) == .timedOut { break }
        }
        state.withLock { $0.gathering = false }
    }

    private func writeGroup(_ group: [PendingAppend], at firstOffset: UInt64) {
        var results: [AppendResult] = []
        results.reserveCapacity(group.count)
        var offset = firstOffset
        for append in group {
            results.append(AppendResult(firstOffset: offset, lastOffset: offset + UInt64(append.entries.count) - 1))
            offset += UInt64(append.entries.count)
        }
        do {
            let timestampMs = try writeAndSync(group, firstOffset: firstOffset, results: results)
            let waiters = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
                s.writeOffset = offset
                s.endOffset = offset
                for (append, result) in zip(group, results) {
                    guard let claim = append.claim else { continue }
                    let record = IdempotencyRecord(key: claim.key, fingerprint: claim.fingerprint, result: result, timestampMs: timestampMs)
                    s.idempotency.complete(record, nowMs: timestampMs)
                    s.activeSegmentKeys.append(record)
                }
                var ready: [CheckedContinuation<Void, any Error>] = []
                for (id, waiter) in s.tailWaiters where waiter.after < offset {
                    ready.append(waiter.continuation)
                    s.tailWaiters.removeValue(forKey: id)
                }
                return ready
            }
            for waiter in waiters { waiter.resume() }
            for (append, result) in zip(group, results) { append.continuation.resume(returning: .appended(result)) }
        } catch {
            let logError = (error as? LogError) ?? (error as? StorageError).map(LogError.storage) ?? LogError.storage(
                StorageError(operation: "write", path: directory, errno: 5))
            logger.error("append failed; nothing of this group was acknowledged", metadata: [
                "entries": "\(offset - firstOffset)", "error": "\(logError)",
            ])
            state.withLock { s in
                for append in group { if let claim = append.claim { s.idempotency.release(claim.key) } }
            }
            for append in group { append.continuation.resume(throwing: logError) }
        }
    }

    /// Encodes the group into record batches (then, if any append has a key, a control batch
    /// with the keys), writes them with one write at the tail of the active segment (rolling it
    /// first if needed), flushes per policy, and only then records the batches as part of the
    /// log. Every batch but the last is marked "group continues", so that recovery can drop a
    /// group cut short. On failure the tail is put back as it was. Returns the batches' timestamp.
    ///
    /// Small batches compress with the segment's preset dictionary (codec 2), which is durable
    /// before the first batch that uses it; after a roll the group is encoded again for the
    /// new segment's dictionary, as a batch inflates only with its own segment's.
    private func writeAndSync(_ group: [PendingAppend], firstOffset: UInt64, results: [AppendResult]) throws -> Int64 {
        // Appends queued before the log failed are refused like later ones.
        if let failure = state.withLock({ $0.failure }) { throw failure }
        let now = clock()
        var segment = state.withLock { $0.segments[$0.segments.count - 1] }
        // Only the flusher takes this lock: it is never contended.
        return try dictionaryWriter.withLock { writer -> Int64 in
            var encoded = try encodeGroup(group, firstOffset: firstOffset, results: results, timestampMs: now,
                                          dictionary: deflater(for: segment, writer: &writer))
            let tail = segment.snapshot
            let tooOld = tail.firstTimestampMs.map { ageMs(of: $0, nowMs: now) >= configuration.segmentAgeMsMax } ?? false
            let full = tail.dataEnd + Int64(encoded.bytes.count) > Int64(configuration.segmentBytesMax)
            if tail.dataEnd > 0 && (full || tooOld || dictionaryOutgrown(segment, writer: writer)) {
                segment = try roll(segment, nextBase: firstOffset)
                if encoded.usesDictionary {
                    encoded = try encodeGroup(group, firstOffset: firstOffset, results: results, timestampMs: now,
                                              dictionary: deflater(for: segment, writer: &writer))
                }
            }
            try write(encoded, to: segment, firstOffset: firstOffset)
            for append in group { writer.sample.note(append.entries) }
            return now
        }
    }

    /// A group's batches, encoded in one buffer.
    private struct EncodedGroup {
        var bytes: [UInt8] = []
        var batches: [(header: RecordBatchHeader, position: Int)] = []
        /// The offset after the group's last entry.
        var nextOffset: UInt64
        /// Some batch is codec 2: the buffer belongs to the segment whose dictionary it used.
        var usesDictionary = false
    }

    /// Encodes the group: its entries in batches of at most `batchBytesMax` (appends encoded
    /// ahead keep theirs), then the control batch of its keys if any. Batches whose payload is
    /// at most `dictionaryPayloadBytesMax` use `dictionary` when one is given.
    private func encodeGroup(
        _ group: [PendingAppend], firstOffset: UInt64, results: [AppendResult], timestampMs now: Int64,
        dictionary: Zlib.PresetDeflater?
    ) throws -> EncodedGroup {
        var encoded = EncodedGroup(nextOffset: firstOffset)
        var scratch: [UInt8] = []
        var current: [[UInt8]] = []
        var currentBytes = 0
        func emit() throws {
            guard !current.isEmpty else { return }
            let position = encoded.bytes.count
            let useDictionary = currentBytes <= configuration.dictionaryPayloadBytesMax ? dictionary : nil
            try RecordBatchCodec.encode(
                entries: current, baseOffset: encoded.nextOffset, timestampMs: now,
                compressionLevel: configuration.compressionLevel, into: &encoded.bytes, scratch: &scratch,
                flags: RecordBatchHeader.flagGroupContinues, dictionary: useDictionary)
            let header = try encoded.bytes[position...].withUnsafeBytes { raw in try RecordBatchCodec.decodeHeader(raw) }
            if header.codec == .zlibDictionary { encoded.usesDictionary = true }
            encoded.batches.append((header, position))
            encoded.nextOffset += UInt64(current.count)
            current.removeAll(keepingCapacity: true)
            currentBytes = 0
        }
        for append in group {
            if let ahead = append.encoded {
                try emit()
                let start = encoded.bytes.count
                encoded.bytes.append(contentsOf: ahead.bytes)
                for batch in ahead.batches {
                    let header = try RecordBatchCodec.patchBaseOffset(
                        &encoded.bytes, at: start + batch.position, baseOffset: encoded.nextOffset, flags: RecordBatchHeader.flagGroupContinues)
                    encoded.batches.append((header, start + batch.position))
                    encoded.nextOffset += UInt64(batch.entryCount)
                }
                continue
            }
            for entry in append.entries {
                if currentBytes + entry.count + 4 > configuration.batchBytesMax { try emit() }
                current.append(entry)
                currentBytes += entry.count + 4
            }
        }
        try emit()
        let records = zip(group, results).compactMap { append, result in
            append.claim.map { IdempotencyRecord(key: $0.key, fingerprint: $0.fingerprint, result: result, timestampMs: now) }
        }
        if records.isEmpty {
            // The last data batch ends the group.
            if let last = encoded.batches.last {
                let header = try RecordBatchCodec.patchBaseOffset(&encoded.bytes, at: last.position, baseOffset: last.header.baseOffset, flags: 0)
                encoded.batches[encoded.batches.count - 1].header = header
            }
        } else {
            let position = encoded.bytes.count
            RecordBatchCodec.encodeControl(records: records, baseOffset: encoded.nextOffset, timestampMs: now, into: &encoded.bytes)
            let header = try encoded.bytes[position...].withUnsafeBytes { raw in try RecordBatchCodec.decodeHeader(raw) }
            encoded.batches.append((header, position))
        }
        return encoded
    }

    /// Writes an encoded group at the tail of `segment`, flushes per policy, and notes its
    /// batches; on failure puts the tail back.
    private func write(_ encoded: EncodedGroup, to segment: Segment, firstOffset: UInt64) throws {
        let start = segment.snapshot.dataEnd
        do {
            try preallocate(segment, through: start + Int64(encoded.bytes.count))
            let file = try segment.file()
            try encoded.bytes.withUnsafeBytes { try file.write($0, at: start) }
            let syncStart = DispatchTime.now().uptimeNanoseconds
            try syncPerPolicy(segment)
            let syncNanoseconds = DispatchTime.now().uptimeNanoseconds - syncStart
            observer?.didFlush(stream: name, entryCount: Int(encoded.nextOffset - firstOffset), byteCount: encoded.bytes.count,
                               syncNanoseconds: syncNanoseconds)
        } catch {
            restoreTail(segment, to: start)
            throw error
        }
        try checkStillLinked(segment, acknowledgedEnd: firstOffset)
        for (header, position) in encoded.batches { segment.noteBatch(header, at: start + Int64(position)) }
        try? segment.flushIndexPoints()
    }

    /// Encodes an append's entries into record batches with placeholder base offsets.
    private func encodeAhead(_ entries: [[UInt8]]) throws -> EncodedBatches {
        var encoded = EncodedBatches(bytes: [], batches: [])
        var scratch: [UInt8] = []
        var start = 0
        let now = clock()
        while start < entries.count {
            var end = start
            var bytes = 0
            while end < entries.count && (end == start || bytes + entries[end].count + 4 <= configuration.batchBytesMax) {
                bytes += entries[end].count + 4
                end += 1
            }
            let position = encoded.bytes.count
            try RecordBatchCodec.encode(
                entries: entries[start..<end], baseOffset: 0, timestampMs: now,
                compressionLevel: configuration.compressionLevel, into: &encoded.bytes, scratch: &scratch)
            encoded.batches.append((position, end - start))
            start = end
        }
        return encoded
    }

    /// Writes zeros ahead of the tail so that flushes overwrite allocated blocks.
    private func preallocate(_ segment: Segment, through end: Int64) throws {
        let have = segment.snapshot.preallocatedEnd
        guard end > have else { return }
        let target = max(end, min(have + Int64(configuration.preallocateBytes), Int64(configuration.segmentBytesMax)))
        let zeros = [UInt8](repeating: 0, count: Int(target - have))
        try segment.file().write(zeros, at: have)
        segment.state.withLock { $0.preallocatedEnd = target }
    }

    private func syncPerPolicy(_ segment: Segment) throws {
        switch configuration.fsyncPolicy {
        case .always:
            try segment.file().sync()
        case .interval(let intervalMs):
            let schedule = state.withLock { s -> Bool in
                if s.intervalSyncScheduled { return false }
                s.intervalSyncScheduled = true
                return true
            }
            if schedule {
                flushQueue.asyncAfter(deadline: .now() + .milliseconds(intervalMs)) { [self] in
                    state.withLock { $0.intervalSyncScheduled = false }
                    let active = state.withLock { $0.segments[$0.segments.count - 1] }
                    do { try active.file().sync() } catch {
                        logger.error("background flush failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }

    /// Before entries are acknowledged (once per flush, and before a roll): the active segment's
    /// open file must still be the file at its path. Deleted or renamed over, the writes land in
    /// a file that no restart reads: then nothing more is acknowledged, the log refuses appends,
    /// and the stream is marked corrupt for an operator (the entries below `acknowledgedEnd`
    /// that were in that file are lost). Costs one fstat(2) and one stat(2).
    private func checkStillLinked(_ segment: Segment, acknowledgedEnd: UInt64) throws {
        let opened = try segment.file().identity()
        guard let loss = lossOfOpenFile(opened, path: try storage.identity(ofPath: segment.logPath)) else { return }
        let name = Segment.fileName(segment.baseOffset, ".log")
        let error = LogError.activeSegmentLost(segment: name, loss: loss)
        state.withLock { s in if s.failure == nil { s.failure = error } }
        logger.critical("the active segment is gone; appends refused, stream marked corrupt", metadata: [
            "segment": "\(segment.logPath)", "loss": "\(loss.rawValue)",
            "lost_offsets": "\(segment.baseOffset)..<\(acknowledgedEnd)",
        ])
        let report = CorruptionReport(
            segment: name, bytePosition: 0, firstOffset: segment.baseOffset, endOffset: acknowledgedEnd,
            reason: "the active segment \(loss) while the broker had it open; entries acknowledged into it are lost")
        do {
            try StreamLog.writeCorruptMarker(report, directory: directory, storage: storage)
        } catch {
            logger.critical("could not mark the stream corrupt", metadata: ["error": "\(error)"])
        }
        throw error
    }

    /// Puts a failed write back: zeros/garbage past `position` are cut. If even that fails the
    /// log refuses further appends until reopened (recovery then cuts the tail).
    private func restoreTail(_ segment: Segment, to position: Int64) {
        do {
            try segment.file().truncate(to: position)
            segment.state.withLock { $0.preallocatedEnd = position }
        } catch {
            let failure = (error as? StorageError).map(LogError.storage) ?? .closed
            state.withLock { $0.failure = failure }
            logger.critical("could not restore the log tail after a failed write; appends refused until reopen",
                            metadata: ["error": "\(error)"])
        }
    }

    /// Seals `segment` (cut to its data, index written and flushed) and starts a new one.
    private func roll(_ segment: Segment, nextBase: UInt64) throws -> Segment {
        // Sealing a file that is gone would leave the entries acknowledged into it unnoticed.
        try checkStillLinked(segment, acknowledgedEnd: nextBase)
        let end = segment.snapshot.dataEnd
        let file = try segment.file()
        try file.truncate(to: end)
        try file.sync()
        segment.state.withLock { s in
            s.sealed = true
            s.preallocatedEnd = end
        }
        try segment.writeIndexFile(sync: true)
        let newest = segment.snapshot.maxTimestampMs
        let keys = state.withLock { $0.activeSegmentKeys }
        try writeKeysFile(KeysFile(segmentBaseOffset: segment.baseOffset, newestTimestampMs: newest, records: keys))
        let next = try Segment(
            directory: directory, baseOffset: nextBase, storage: storage, sealedFiles: sealedFiles, create: true,
            sealed: false, nextOffset: nextBase, indexIntervalBytes: configuration.indexIntervalBytes)
        next.state.withLock { $0.index = [] }
        try storage.syncDirectory(directory)
        state.withLock { s in
            s.segments.append(next)
            s.activeSegmentKeys = []
        }
        segment.releaseActiveFile()
        logger.debug("rolled segment", metadata: ["sealed": "\(segment.logPath)", "next": "\(nextBase)"])
        return next
    }

    /// Stops accepting appends after those already queued are durable and acknowledged, then
    /// fails tail waiters with ``LogError/closed``. Idempotent.
    public func close() async {
        let needsDrain = state.withLock { s -> Bool in
            s.closed = true
            return s.flushing
        }
        if needsDrain {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = state.withLock { s -> Bool in
                    if !s.flushing { return true }
                    s.drainWaiters.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
        }
        let (waiters, active) = state.withLock { s -> ([CheckedContinuation<Void, any Error>], Segment) in
            let waiters = s.tailWaiters.values.map(\.continuation)
            s.tailWaiters = [:]
            return (waiters, s.segments[s.segments.count - 1])
        }
        for waiter in waiters { waiter.resume(throwing: LogError.closed) }
        if case .interval = configuration.fsyncPolicy { try? active.file().sync() }
        try? active.writeIndexFile(sync: false)
        // Another process may take the stream now; this object only serves reads.
        lock.withLock { $0 = nil }
    }
}
