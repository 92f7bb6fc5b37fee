#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import OrgSyncLog
import OrgSyncPluginAPI
import Synchronization

/// An entry the target rejected, kept so an operator can see it and retry it.
public struct DeadLetter: Sendable, Hashable, Codable {
    public var offset: Offset
    /// The entry exactly as stored in the log (UTF-8 JSON), so a retry sends the same thing.
    public var entryJSON: String
    /// The target's error message and its own code (SQLSTATE, HTTP status…).
    public var error: String
    public var targetCode: String?
    public var status: EntryStatus
    /// Wall-clock milliseconds since 1970.
    public var failedAtMs: UInt64
    public var resolvedAtMs: UInt64?
    /// Attempts so far, the first included.
    public var attemptCount: Int

    public init(offset: Offset, entryJSON: String, error: String, targetCode: String?, failedAtMs: UInt64) {
        self.offset = offset
        self.entryJSON = entryJSON
        self.error = error
        self.targetCode = targetCode
        self.status = .failed
        self.failedAtMs = failedAtMs
        self.resolvedAtMs = nil
        self.attemptCount = 1
    }
}

/// A link's dead letters: rejected entries, newest (highest offset) first.
///
/// Persisted like the ``SyncLog``: `<directory>/<link>.deadletters.jsonl` holds a snapshot line
/// per change (the last line of an offset wins), compacted when it grows past twice the bound.
/// At most `lettersMax` entries are kept; the lowest offsets are dropped first.
public final class DeadLetters: Sendable {
    private struct State {
        var letters: [Offset: DeadLetter]
        var file: ChecksummedLinesFile?
        var fileLineCount: Int
    }

    public let lettersMax: Int
    /// Lines skipped when the file was opened.
    public let damagedLineCount: Int
    private let state: Mutex<State>

    /// Opens (or creates) the dead letters of `link` in `directory`, which must exist, through
    /// `storage` (the segment log's; POSIX files unless a test gives another).
    public static func open(
        directory: String, link: String, lettersMax: Int, fsync: Bool = true, storage: any LogStorage = PosixStorage()
    ) throws(RecordFileError) -> DeadLetters {
        try validateLinkFileName(link)
        let path = directory + "/" + link + ".deadletters.jsonl"
        let (payloads, damaged) = try ChecksummedLinesFile.read(path: path, storage: storage)
        let decoder = JSONDecoder()
        var letters: [Offset: DeadLetter] = [:]
        var unparsable = 0
        for payload in payloads {
            if let letter = try? decoder.decode(DeadLetter.self, from: Data(payload)) {
                letters[letter.offset] = letter
            } else {
                unparsable += 1
            }
        }
        Self.trim(&letters, to: lettersMax)
        let file = try ChecksummedLinesFile(path: path, storage: storage, fsyncEachAppend: fsync)
        if damaged + unparsable > 0 || payloads.count > letters.count {
            try file.rewrite(Self.sorted(letters).map(encode))
        }
        return DeadLetters(letters: letters, file: file, damagedLineCount: damaged + unparsable, lettersMax: lettersMax)
    }

    public static func inMemory(lettersMax: Int) -> DeadLetters {
        DeadLetters(letters: [:], file: nil, damagedLineCount: 0, lettersMax: lettersMax)
    }

    private init(letters: [Offset: DeadLetter], file: sending ChecksummedLinesFile?, damagedLineCount: Int, lettersMax: Int) {
        self.lettersMax = max(1, lettersMax)
        self.damagedLineCount = damagedLineCount
        self.state = Mutex(State(letters: letters, file: file, fileLineCount: letters.count))
    }

    /// Stores `letter`, replacing any earlier letter for its offset.
    public func put(_ letter: DeadLetter) throws(RecordFileError) {
        let result: Result<Void, RecordFileError> = state.withLock { state in
            state.letters[letter.offset] = letter
            Self.trim(&state.letters, to: lettersMax)
            guard let file = state.file else { return .success(()) }
            do throws(RecordFileError) {
                if state.fileLineCount >= 2 * lettersMax {
                    try file.rewrite(Self.sorted(state.letters).map(Self.encode))
                    state.fileLineCount = state.letters.count
                } else {
                    try file.append(Self.encode(letter))
                    state.fileLineCount += 1
                }
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    public func letter(at offset: Offset) -> DeadLetter? {
        state.withLock { $0.letters[offset] }
    }

    /// Up to `limit` letters, highest offset first, below `beforeOffset` when given.
    public func page(beforeOffset: Offset? = nil, status: EntryStatus? = nil, limit: Int = 100) -> [DeadLetter] {
        state.withLock { state in
            Self.sorted(state.letters).reversed()
                .filter { letter in
                    (beforeOffset.map { letter.offset < $0 } ?? true) && (status.map { letter.status == $0 } ?? true)
                }
                .prefix(max(0, limit)).map { $0 }
        }
    }

    public var count: Int { state.withLock { $0.letters.count } }

    /// How many letters still have status `failed`.
    /// The offsets that have a letter (at most `lettersMax`).
    public var offsets: Set<Offset> { state.withLock { Set($0.letters.keys) } }

    public var failedCount: Int { state.withLock { $0.letters.values.count { $0.status == .failed } } }

    private static func sorted(_ letters: [Offset: DeadLetter]) -> [DeadLetter] {
        letters.values.sorted { $0.offset < $1.offset }
    }

    private static func trim(_ letters: inout [Offset: DeadLetter], to limit: Int) {
        guard letters.count > limit else { return }
        for offset in letters.keys.sorted().prefix(letters.count - limit) { letters.removeValue(forKey: offset) }
    }

    static func encode(_ letter: DeadLetter) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(letter)) ?? Data())
    }
}
