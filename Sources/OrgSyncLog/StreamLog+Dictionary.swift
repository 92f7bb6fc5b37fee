#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging

/// The flusher's part of preset dictionaries: the sample new dictionaries are cut from, and a
/// deflater primed with the active segment's dictionary. Lives behind the stream's
/// `dictionaryWriter` lock, which only the flusher takes.
struct DictionaryWriter {
    var sample: DictionarySample
    /// Primed with the dictionary of the segment whose base offset it names.
    var deflater: (segmentBase: UInt64, deflater: Zlib.PresetDeflater)?
    /// A segment whose dictionary could not be written or read: plain zlib there, no retry
    /// on every flush (the next segment tries again).
    var givenUpSegmentBase: UInt64?
    /// Whether this process has synced the stream's directory since it opened it. A `.zdict`
    /// found on disk may have been renamed into place by a process killed (or whose directory
    /// sync failed) before the rename was durable: the file is visible, but a power cut can
    /// still take it, and with it every codec-2 batch written with it.
    var directorySynced = false

    /// Whether the stream's `IDENTITY` says it uses preset dictionaries (see
    /// ``StreamLineage/usesPresetDictionaries``): made so, durably, before the first codec-2 batch.
    var identityAllowsDictionaries: Bool

    init(dictionaryBytesMax: Int, identityAllowsDictionaries: Bool) {
        sample = DictionarySample(dictionaryBytesMax: dictionaryBytesMax)
        self.identityAllowsDictionaries = identityAllowsDictionaries
    }
}

extension StreamLog {
    /// Whether `segment` should be sealed so that the next one gets a bigger dictionary: a
    /// young stream's first dictionaries are small (see ``DictionarySample/firstDictionaryBytes``),
    /// and a segment keeps its dictionary for life. At most log2(32768 / 4096) = 3 such rolls
    /// after the stream is created or reopened.
    func dictionaryOutgrown(_ segment: Segment, writer: DictionaryWriter) -> Bool {
        guard configuration.dictionaryBytesMax > 0, let current = (try? segment.dictionary())?.dictionary else { return false }
        return writer.sample.outgrows(current)
    }

    /// The deflater for small batches written to `segment`, or nil for plain zlib.
    ///
    /// A segment without a `.zdict` gets one, cut from the sample, once the sample is full:
    /// written crash-atomically and the directory synced **before** this returns, so no batch
    /// that uses it can be durable without it. A crash while writing it leaves no `.zdict`
    /// (or a `.zdict.tmp`, rewritten next time) and no batch that needs it. A `.zdict` that
    /// is there is used as it is and never replaced, once the directory has been synced in
    /// this process (its rename may not be durable yet); one that fails its checks is left alone
    /// for the operator (`log verify` reports the batches that need it) and the segment's
    /// further batches use plain zlib.
    func deflater(for segment: Segment, writer: inout DictionaryWriter) -> Zlib.PresetDeflater? {
        // With dictionaryPayloadBytesMax 0 no batch would use one: none is written, and the
        // identity stays one that older releases read.
        guard configuration.dictionaryBytesMax > 0, configuration.dictionaryPayloadBytesMax > 0,
              configuration.compressionLevel != nil else { return nil }
        if let primed = writer.deflater, primed.segmentBase == segment.baseOffset { return primed.deflater }
        writer.deflater = nil
        guard writer.givenUpSegmentBase != segment.baseOffset else { return nil }
        let dictionary: Zlib.PresetDictionary
        let found: SegmentDictionary
        do {
            found = try segment.dictionary()
        } catch {
            // Says nothing about the file: plain zlib for this group, read again next flush.
            logger.warning("could not read the segment's preset dictionary; this group uses plain zlib",
                           metadata: ["segment": "\(segment.logPath)", "error": "\(error)"])
            return nil
        }
        switch found {
        case .present(let present):
            if !writer.directorySynced {
                do {
                    try storage.syncDirectory(directory)
                } catch {
                    logger.warning("could not sync the stream directory before using a preset dictionary found on disk; the segment uses plain zlib",
                                   metadata: ["segment": "\(segment.logPath)", "error": "\(error)"])
                    writer.givenUpSegmentBase = segment.baseOffset
                    return nil
                }
                writer.directorySynced = true
            }
            dictionary = present
        case .unreadable(let reason):
            logger.error("the segment's preset dictionary is unreadable; its codec-2 batches cannot be read, new batches use plain zlib",
                         metadata: ["segment": "\(segment.logPath)", "reason": "\(reason)"])
            writer.givenUpSegmentBase = segment.baseOffset
            return nil
        case .absent:
            guard let cut = writer.sample.dictionary() else { return nil }
            do {
                try segment.installDictionary(cut)
                try storage.syncDirectory(directory)
                writer.directorySynced = true
            } catch let error as StorageError where error.errno == EEXIST {
                // Another `.zdict` is there after all: never replaced; read next flush.
                logger.warning("the segment has a preset dictionary file already; it is read, not replaced",
                               metadata: ["segment": "\(segment.logPath)"])
                return nil
            } catch {
                logger.warning("could not write a preset dictionary; the segment uses plain zlib",
                               metadata: ["segment": "\(segment.logPath)", "error": "\(error)"])
                writer.givenUpSegmentBase = segment.baseOffset
                return nil
            }
            dictionary = cut
        }
        if !writer.identityAllowsDictionaries {
            do {
                try markIdentityUsesPresetDictionaries()
            } catch {
                logger.warning("could not mark the stream's identity as using preset dictionaries; the segment uses plain zlib",
                               metadata: ["error": "\(error)"])
                writer.givenUpSegmentBase = segment.baseOffset
                return nil
            }
            writer.identityAllowsDictionaries = true
            writer.directorySynced = true
        }
        do {
            let deflater = try Zlib.PresetDeflater(dictionary: dictionary, level: configuration.dictionaryCompressionLevel)
            writer.deflater = (segment.baseOffset, deflater)
            return deflater
        } catch {
            logger.warning("could not prime a deflater with the preset dictionary", metadata: ["error": "\(error)"])
            writer.givenUpSegmentBase = segment.baseOffset
            return nil
        }
    }

    /// Stores the stream's identity as version 2 (crash-atomically, directory synced): from
    /// now on a release without codec 2 refuses the stream instead of reading it. One way.
    func markIdentityUsesPresetDictionaries() throws {
        var upgraded = lineage
        upgraded.usesPresetDictionaries = true
        try upgraded.store(directory: directory, storage: storage)
        logger.notice("the stream now uses preset dictionaries; releases without them refuse it", metadata: ["stream_id": "\(lineage.streamID)"])
    }
}
