import Foundation

/// A new, empty directory under the system's temporary directory, named `<prefix>-<UUID>`;
/// the test removes it when done.
public func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.path + "/" + prefix + "-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
