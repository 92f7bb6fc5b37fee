#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a stream's segments from the first byte to the last, checking every batch: CRC,
/// lengths, base offsets (dense across batches and segments), and the decompressed payload.
/// Used by `orgsync log verify|dump|stats` and by repair. Read-only: it never changes a file,
/// so it may run next to a broker that is serving the stream.
public struct LogScanner: Sendable {
    public let directory: String
    let storage: any LogStorage

    public init(dataDirectory: String, stream: String, storage: any LogStorage = PosixStorage()) throws {
        guard isValidName(stream) else { throw LogError.invalidStreamName(stream) }
        self.directory = StreamLog.streamDirectory(dataDirectory: dataDirectory, name: stream)
        self.storage = storage
        guard storage.fileExists(directory) else {
            throw LogError.storage(StorageError(operation: "open stream", path: directory, errno: 2))
        }
    }

    /// One batch as the scanner saw it. A control batch (`header.isControl`) has no ranges.
    public struct Batch {
        public var segment: String
        public var position: Int64
        public var header: RecordBatchHeader
        /// The uncompressed payload and the entries' ranges in it.
        public var payload: [UInt8]
        public var ranges: [Range<Int>]
    }

    /// What a full scan found.
    public struct Summary: Sendable, Hashable, Codable {
        public var segments = 0
        /// Batches read, control batches (idempotency keys, no entries) included.
        public var batches = 0
        public var controlBatches = 0
        public var entries: UInt64 = 0
        public var startOffset: UInt64 = 0
        public var endOffset: UInt64 = 0
        /// Bytes of batches on disk (headers included).
        public var storedBytes: Int64 = 0
        /// Bytes of the entries themselves, uncompressed.
        public var rawBytes: Int64 = 0
        /// Bytes of payloads after decompression (entries + 4-byte length prefixes).
        public var uncompressedBytes: Int64 = 0
        /// The first problem found, if any; the scan stops there.
        public var problem: CorruptionReport?
        /// Bytes after the last valid batch of the last segment that are not zeros (a torn
        /// tail that the next open will cut; not corruption).
        public var tornTailBytes: Int64 = 0

        public var compressionRatio: Double { storedBytes > 0 ? Double(rawBytes) / Double(storedBytes) : 0 }
    }

    /// Scans everything from `startOffset` (or the first segment), calling `visit` for each
    /// valid batch. `visit` returns false to stop early. `progress` gets (bytes done, total).
    @discardableResult
    public func scan(
        from startOffset: UInt64 = 0,
        progress: ((Int64, Int64) -> Void)? = nil,
        visit: (Batch) throws -> Bool = { _ in true }
    ) throws -> Summary {
        let bases = try wrapStorage { try StreamLog.segmentBaseOffsets(directory: directory, storage: storage) }
        var summary = Summary()
        summary.segments = bases.count
        summary.startOffset = bases.first ?? 0
        // Sizes by stat; each segment is opened only while it is scanned, so that a stream of
        // thousands of segments needs one descriptor, not one per segment.
        var files: [(base: UInt64, path: String, size: Int64)] = []
        for base in bases {
            let path = directory + "/" + Segment.fileName(base, ".log")
            files.append((base, path, try wrapStorage { try storage.fileSize(path) }))
        }
        let total = files.reduce(Int64(0)) { $0 + $1.size }
        var done: Int64 = 0
        var expected = bases.first ?? 0
        var buffer: [UInt8] = []
        var payload: [UInt8] = []
        var ranges: [Range<Int>] = []
        for (i, segment) in files.enumerated() {
            let name = Segment.fileName(segment.base, ".log")
            let isLast = i == files.count - 1
            let nextBase = isLast ? nil : files[i + 1].base
            if segment.base != expected {
                summary.problem = CorruptionReport(
                    segment: name, bytePosition: 0, firstOffset: min(expected, segment.base),
                    endOffset: max(expected, segment.base), reason: "segment starts at \(segment.base), expected \(expected)")
                return summary
            }
            let file = try wrapStorage { try storage.openFile(segment.path, create: false) }
            var position: Int64 = 0
            // Read when the segment's first codec-2 batch needs it.
            var dictionary: SegmentDictionary?
            while position < segment.size {
                do {
                    let header = try wrapStorage {
                        try RecordBatchReader.read(file, at: position, limit: segment.size, expectedBase: expected, buffer: &buffer)
                    }
                    if header.codec == .zlibDictionary && dictionary == nil {
                        dictionary = try wrapStorage {
                            try DictionaryFile.load(path: directory + "/" + Segment.fileName(segment.base, DictionaryFile.suffix), storage: storage)
                        }
                    }
                    try buffer.withUnsafeBytes { raw in
                        try RecordBatchCodec.decodePayload(raw, header: header, payload: &payload, ranges: &ranges, dictionary: dictionary ?? .absent)
                    }
                    summary.batches += 1
                    if header.isControl { summary.controlBatches += 1 }
                    summary.entries += UInt64(header.entryCount)
                    summary.storedBytes += Int64(header.batchLength)
                    if !header.isControl { summary.uncompressedBytes += Int64(header.uncompressedLength) }
                    summary.rawBytes += header.entryBytes
                    expected = header.nextOffset
                    position += Int64(header.batchLength)
                    if header.nextOffset > startOffset {
                        let keepGoing = try visit(Batch(segment: name, position: position - Int64(header.batchLength),
                                                        header: header, payload: payload, ranges: ranges))
                        if !keepGoing {
                            summary.endOffset = expected
                            return summary
                        }
                    }
                    progress?(done + position, total)
                } catch BatchDecodeError.endOfData where isLast {
                    break
                } catch let error as BatchDecodeError {
                    // The broker's retention may have deleted the segment, `.zdict` and all, since
                    // the scan opened its `.log`: as when it is deleted before the open, a storage
                    // error (the scan runs next to a broker), not damage.
                    if error.isDictionaryError,
                       let loss = lossOfOpenFile(try wrapStorage({ try file.identity() }), path: try wrapStorage({ try storage.identity(ofPath: segment.path) })) {
                        throw LogError.storage(StorageError(operation: "read (the segment \(loss) while it was scanned)", path: segment.path, errno: ENOENT))
                    }
                    // A dictionary error is never a torn tail: the batch passed its CRC.
                    if isLast, !error.isDictionaryError, let garbage = try wrapStorage({ try StreamLog.lastNonZeroByte(file, from: position, to: segment.size) }),
                       (try? StreamLog.validBatchPosition(in: file, after: position, size: segment.size)) ?? nil == nil {
                        // Torn tail of the active segment: never acknowledged, cut on next open.
                        summary.tornTailBytes = garbage + 1 - position
                        break
                    }
                    summary.problem = CorruptionReport(
                        segment: name, bytePosition: position, firstOffset: expected,
                        endOffset: nextBase ?? expected, reason: error.description)
                    summary.endOffset = expected
                    return summary
                }
            }
            if let nextBase, expected != nextBase {
                summary.problem = CorruptionReport(
                    segment: name, bytePosition: position, firstOffset: min(expected, nextBase),
                    endOffset: max(expected, nextBase), reason: "segment ends at offset \(expected), next starts at \(nextBase)")
                summary.endOffset = expected
                return summary
            }
            done += segment.size
        }
        summary.endOffset = expected
        return summary
    }

}

// MARK: - Repair

/// What `orgsync log repair` did.
public struct RepairReport: Sendable, Hashable, CustomStringConvertible {
    public var problem: CorruptionReport?
    /// Offsets dropped: [droppedFrom, droppedTo).
    public var droppedFrom: UInt64 = 0
    public var droppedTo: UInt64 = 0
    public var removedSegments: [String] = []
    public var newEndOffset: UInt64 = 0
    /// The epoch the stream entered because offsets were cut (nil when nothing was cut).
    public var newEpoch: UInt64?

    public var description: String {
        guard let problem else { return "nothing to repair; end offset \(newEndOffset)" }
        return "repaired: \(problem); dropped offsets \(droppedFrom)..<\(droppedTo)"
            + (removedSegments.isEmpty ? "" : " and segments \(removedSegments.joined(separator: ", "))")
            + "; end offset now \(newEndOffset)"
            + (newEpoch.map { "; the stream is now in epoch \($0): links whose targets applied past offset \(droppedFrom) will report `diverged`" } ?? "")
    }
}

extension StreamLog {
    /// Cuts a stream at its first damaged batch (dropping everything after it, which the
    /// operator accepts by running this) and clears the corruption marker. The broker must not
    /// be serving the stream.
    public static func repair(dataDirectory: String, stream: String, storage: any LogStorage = PosixStorage()) throws -> RepairReport {
        let scanner = try LogScanner(dataDirectory: dataDirectory, stream: stream, storage: storage)
        let directory = scanner.directory
        let summary = try scanner.scan()
        var report = RepairReport()
        report.newEndOffset = summary.endOffset
        try wrapStorage {
            if let problem = summary.problem {
                report.problem = problem
                report.droppedFrom = problem.firstOffset
                // Offsets from the cut on will name new entries: a new epoch, so that a target
                // holding a position from before the cut is told apart (its link diverges).
                // Begun before cutting: a crash in between leaves the marker, and a second
                // repair begins another epoch, which is harmless.
                var (lineage, _) = try StreamLineage.loadOrCreate(directory: directory, storage: storage)
                lineage.beginEpoch(at: problem.firstOffset)
                try lineage.store(directory: directory, storage: storage)
                report.newEpoch = lineage.currentEpoch
                let bases = try segmentBaseOffsets(directory: directory, storage: storage)
                guard let damaged = bases.last(where: { Segment.fileName($0, ".log") == problem.segment }) ?? bases.last else {
                    return
                }
                let file = try storage.openFile(directory + "/" + Segment.fileName(damaged, ".log"), create: false)
                try file.truncate(to: problem.bytePosition)
                try file.sync()
                try storage.removeFile(directory + "/" + Segment.fileName(damaged, ".index"))
                // Its keys name offsets that may be cut: they are rebuilt from what is left.
                let keys = directory + "/" + Segment.fileName(damaged, ".keys")
                if storage.fileExists(keys) { try storage.removeFile(keys) }
                for base in bases where base > damaged {
                    try removeSegmentFiles(directory: directory, base: base, storage: storage)
                    report.removedSegments.append(Segment.fileName(base, ".log"))
                }
                report.droppedTo = max(problem.endOffset, problem.firstOffset)
                if let lastBase = bases.last, lastBase > damaged {
                    // Everything up to the old end is gone: report the widest range.
                    report.droppedTo = max(report.droppedTo, summary.endOffset)
                }
            } else if let marked = try readCorruptMarker(directory: directory, storage: storage),
                    marked.endOffset > summary.endOffset {
                // Nothing damaged is left, but entries up to the marker's end were acknowledged
                // (an active segment deleted while the broker ran): the offsets from the end on
                // will name new entries, so a new epoch, as for a cut.
                report.problem = marked
                report.droppedFrom = summary.endOffset
                report.droppedTo = marked.endOffset
                var (lineage, _) = try StreamLineage.loadOrCreate(directory: directory, storage: storage)
                lineage.beginEpoch(at: summary.endOffset)
                try lineage.store(directory: directory, storage: storage)
                report.newEpoch = lineage.currentEpoch
            }
            try storage.removeFile(directory + "/" + corruptMarkerName)
            try storage.syncDirectory(directory)
        }
        return report
    }

    /// Runs a full scan and, if it finds interior damage, marks the stream corrupt so that the
    /// broker refuses it until repaired.
    public static func verify(
        dataDirectory: String, stream: String, storage: any LogStorage = PosixStorage(),
        progress: ((Int64, Int64) -> Void)? = nil
    ) throws -> LogScanner.Summary {
        let scanner = try LogScanner(dataDirectory: dataDirectory, stream: stream, storage: storage)
        let summary = try scanner.scan(progress: progress)
        if let problem = summary.problem {
            try wrapStorage { try writeCorruptMarker(problem, directory: scanner.directory, storage: storage) }
        }
        return summary
    }
}
