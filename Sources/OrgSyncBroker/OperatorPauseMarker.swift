import Foundation
import OrgSyncLog

/// An operator's pause that outlives the process: a `PAUSED` file in the link's (or source's)
/// directory, its name synced into the directory so a power cut keeps it too.
struct OperatorPauseMarker: Sendable {
    let directory: String

    var path: String { directory + "/PAUSED" }

    /// Whether an operator paused it before this start.
    var isSet: Bool { FileManager.default.fileExists(atPath: path) }

    func set() {
        _ = FileManager.default.createFile(atPath: path, contents: Data("paused by operator\n".utf8))
        try? PosixStorage().syncDirectory(directory)
    }

    func clear() {
        try? FileManager.default.removeItem(atPath: path)
        try? PosixStorage().syncDirectory(directory)
    }
}
