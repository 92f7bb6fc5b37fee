import Foundation
@testable import OrgSyncCore

/// Input: a mode byte (bit 0: checksum each line of the rest first, as `append` writes it),
/// then a checksummed-lines file. Decoding keeps the lines whose checksum matches and counts the
/// others; kept payloads parse as sync-log records or dead letters or are dropped (what
/// `SyncLog.open` and `DeadLetters.open` do); a record re-encodes to an equal record; payloads
/// written again as lines decode to the same payloads with nothing damaged.
@Sendable func fuzzLines(_ data: [UInt8]) {
    guard let mode = data.first else { return }
    var bytes = Array(data.dropFirst())
    if mode & 1 != 0 {
        bytes = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .flatMap { ChecksummedLinesFile.encodeLine(Array($0)) }
    }
    let (payloads, damaged) = ChecksummedLinesFile.decode(bytes)
    let lineCount = bytes.count { $0 == UInt8(ascii: "\n") } + (bytes.last.map { $0 == UInt8(ascii: "\n") ? 0 : 1 } ?? 0)
    fuzzCheck(payloads.count + damaged == lineCount, "\(payloads.count) payloads + \(damaged) damaged ≠ \(lineCount) lines")
    let decoder = JSONDecoder()
    for payload in payloads {
        fuzzCheck(!payload.contains(UInt8(ascii: "\n")), "a payload holds a newline")
        if let record = try? decoder.decode(SyncLogRecord.self, from: Data(payload)) {
            let again = encodeJSON(record).flatMap { try? decoder.decode(SyncLogRecord.self, from: Data($0)) }
            fuzzCheck(again == record, "a sync-log record does not round-trip")
        }
        if let letter = try? decoder.decode(DeadLetter.self, from: Data(payload)) {
            let again = encodeJSON(letter).flatMap { try? decoder.decode(DeadLetter.self, from: Data($0)) }
            fuzzCheck(again == letter, "a dead letter does not round-trip")
        }
    }
    let rewritten = payloads.flatMap { ChecksummedLinesFile.encodeLine($0) }
    let (again, damagedAgain) = ChecksummedLinesFile.decode(rewritten)
    fuzzCheck(again == payloads && damagedAgain == 0, "payloads do not round-trip through lines")
}
