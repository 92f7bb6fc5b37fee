import Foundation
@testable import OrgSyncLog
import OrgSyncTestSupport

/// Input: a selector byte (bits 0–1: 0 cursor file, 1 IDENTITY, 2 `.keys`, 3 a lineage's JSON
/// form as a cluster keeps it in NATS; bit 2: fix the checksums first), then the file. Each
/// decoder answers a value or nothing; a value encodes back to what was read, and a lineage
/// read from JSON is one an IDENTITY file holds (one rule for both forms).
@Sendable func fuzzSmallFiles(_ data: [UInt8]) {
    guard let selector = data.first else { return }
    var bytes = Array(data.dropFirst())
    let fix = selector & 4 != 0
    switch selector & 3 {
    case 0:
        if fix { fixCursorChecksums(&bytes) }
        let storage = FaultInjectingStorage()
        storage.put("/c/x.cursor", bytes)
        guard let cursors = try? CursorStore.readAll(directory: "/c", storage: storage) else { return }
        if let offset = cursors["x"] {
            // The newest valid slot wins; writing it again in a fresh file reads back the same.
            let slots = CursorStore.slotPositions.compactMap { position -> (UInt64, UInt64)? in
                let start = Int(position)
                guard bytes.count >= start + CursorStore.slotSize else { return nil }
                return CursorStore.decodeSlot(bytes[start..<(start + CursorStore.slotSize)])
            }
            let newest = slots.filter { $0.0 > 0 }.max { $0.0 < $1.0 }
            fuzzCheck(newest?.1 == offset, "cursor \(offset) is not the newest valid slot's")
            fuzzCheck(CursorStore.decodeSlot(CursorStore.encodeSlot(sequence: newest?.0 ?? 1, offset: offset)[...])?.offset == offset,
                      "a cursor slot does not round-trip")
        }
    case 1:
        if fix { bytes = identityWithChecksum(bytes) }
        guard case .success(let lineage) = StreamLineage.decode(bytes) else { return }
        guard case .success(let again) = StreamLineage.decode(lineage.encoded()) else {
            fuzzCheck(false, "an identity that decoded does not decode after encoding")
            return
        }
        fuzzCheck(again == lineage, "an identity does not round-trip")
        fuzzCheck(lineage.currentEpoch >= 1 || lineage.epochs.isEmpty, "epoch 0 in an identity")
    case 3:
        guard let lineage = try? JSONDecoder().decode(StreamLineage.self, from: Data(bytes)) else { return }
        guard case .success(let file) = StreamLineage.decode(lineage.encoded()) else {
            fuzzCheck(false, "a lineage read from JSON is not one an IDENTITY file holds")
            return
        }
        fuzzCheck(file == lineage, "a lineage read from JSON does not round-trip through IDENTITY")
        fuzzCheck((try? JSONDecoder().decode(StreamLineage.self, from: JSONEncoder().encode(lineage))) == lineage,
                  "a lineage does not round-trip through JSON")
    default:
        if fix { fixKeysChecksum(&bytes) }
        let base: UInt64 = bytes.count >= 16 ? bytes.withUnsafeBytes { $0.loadLE(at: 8) } : 0
        guard let keys = KeysFile.decode(bytes, segmentBaseOffset: base) else { return }
        fuzzCheck(keys.encoded() == bytes, "a .keys file does not encode back to its bytes")
    }
}
