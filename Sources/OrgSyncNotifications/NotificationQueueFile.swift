import Foundation
import OrgSyncLog

/// A ``NotificationQueue`` on disk: `<directory>/<link>.json`, replaced whole on each save
/// (written to a temporary file, fsynced, renamed over, the directory fsynced), so a crash
/// leaves the old or the new queue, never a mix. A file that cannot be read back is an error
/// naming it: the notifier will not start over and resend, nor silently drop, what it held.
public struct NotificationQueueFile: Sendable {
    public let path: String
    let directory: String
    let storage: any LogStorage
    /// A queue file is at most this big (1 000 pending events of a few hundred bytes, plus 100
    /// dead letters, fit many times over); a bigger one is not read into memory.
    public static let fileBytesMax: Int64 = 64 << 20

    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var path: String
        public var problem: String
        public var description: String { "notification queue \(path): \(problem)" }
    }

    public init(directory: String, link: String, storage: any LogStorage = PosixStorage()) {
        self.directory = directory
        self.path = directory + "/" + link + ".json"
        self.storage = storage
    }

    /// The saved queue, or nil when there is none yet.
    public func load() throws(Failure) -> NotificationQueue? {
        guard storage.fileExists(path) else { return nil }
        let bytes: [UInt8]
        do {
            let size = try storage.fileSize(path)
            guard size <= Self.fileBytesMax else { throw Failure(path: path, problem: "\(size) bytes, more than \(Self.fileBytesMax)") }
            let file = try storage.openFile(path, create: false)
            defer { file.close() }
            bytes = try file.readAll()
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(path: path, problem: "cannot be read: \(error)")
        }
        do {
            return try JSONDecoder().decode(NotificationQueue.self, from: Data(bytes))
        } catch {
            throw Failure(path: path, problem: "not a notification queue (\(error)); move it away to start this target's queue afresh")
        }
    }

    public func save(_ queue: NotificationQueue) throws(Failure) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(queue) else { throw Failure(path: path, problem: "cannot be encoded") }
        do {
            try storage.replaceFile(path, with: Array(data))
            try storage.syncDirectory(directory)
        } catch {
            throw Failure(path: path, problem: "\(error)")
        }
    }
}
