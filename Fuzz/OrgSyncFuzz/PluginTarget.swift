import Foundation
@testable import OrgSyncCore
import OrgSyncPluginAPI
#if canImport(Glibc)
import Glibc
#endif

/// Input: a selector byte, then bytes. Bit 0 clear: what a plugin prints, read as the broker
/// reads a plugin's stdout (bit 1: as stderr, cutting long lines) and every line decoded as a
/// response and its result as an applied position; never a crash. Bit 0 set: the rest is NDJSON
/// entries; the valid ones go into an `apply` request as the broker sends it, which must be one
/// line of valid JSON that gives the plugin back the same entries, with an applied position
/// that round-trips.
@Sendable func fuzzPluginProtocol(_ data: [UInt8]) {
    guard let selector = data.first else { return }
    let bytes = Array(data.dropFirst().prefix(60_000))  // under a pipe's buffer: written at once
    if selector & 1 == 0 {
        readPluginOutput(bytes, truncate: selector & 2 != 0)
    } else {
        checkBrokerRequests(bytes, selector: selector)
    }
}

private func readPluginOutput(_ bytes: [UInt8], truncate: Bool) {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { return }
    var written = 0
    while written < bytes.count {
        let count = bytes.withUnsafeBytes { write(fds[1], $0.baseAddress! + written, $0.count - written) }
        if count <= 0 { break }
        written += count
    }
    close(fds[1])
    let lineBytesMax = 1_024
    var lines: [[UInt8]] = []
    var ended = false
    FileDescriptorLines.run(fd: fds[0], lineBytesMax: lineBytesMax, truncate: truncate) { event in
        fuzzCheck(!ended, "an event after the end")
        switch event {
        case .line(let line):
            fuzzCheck(!line.contains(UInt8(ascii: "\n")), "a line holds a newline")
            fuzzCheck(line.count <= lineBytesMax + 16, "a line of \(line.count) bytes passed the limit")
            lines.append(line)
        case .overlong:
            fuzzCheck(!truncate, "overlong while cutting lines")
            ended = true
        case .end:
            ended = true
        }
    }
    fuzzCheck(ended, "reading did not end")
    for line in lines {
        guard let response = PluginWireProtocol.decodeResponse(line) else { continue }
        _ = PluginWireProtocol.decodePosition(response.result)
        if let error = response.error { _ = error.class + (error.message ?? "") + (error.targetCode ?? "") }
    }
}

private func checkBrokerRequests(_ bytes: [UInt8], selector: UInt8) {
    var entries: [Entry] = []
    for line in bytes.split(separator: UInt8(ascii: "\n")) {
        if let entry = try? Entry.parse(line, offset: Offset(UInt64(entries.count) * 3 + 5)) { entries.append(entry) }
    }
    let identity = StreamIdentity(streamID: "fuzz-stream_1", epoch: UInt64(selector >> 1) + 1)
    let batch = EntryBatch(stream: "s", identity: identity, entries: entries, isDeadLetterRetry: selector & 2 != 0)
    let line = PluginWireProtocol.requestLine(id: 7, method: .apply, params: PluginWireProtocol.applyParams(batch))
    fuzzCheck(line.last == UInt8(ascii: "\n") && line.dropLast().allSatisfy { $0 != 0x0A && $0 != 0x0D },
              "an apply request is not one line")
    guard case .object(let request)? = try? JSONParser.parse(line.dropLast()) else {
        fuzzCheck(false, "an apply request is not a JSON object: \(String(decoding: line.prefix(300), as: UTF8.self))")
        return
    }
    guard case .object(let params)? = request["params"], case .array(let sent)? = params["entries"] else {
        fuzzCheck(false, "an apply request without params.entries")
        return
    }
    fuzzCheck(sent.count == entries.count, "\(sent.count) entries sent, \(entries.count) in the batch")
    fuzzCheck(params["dead_letter_retry"].map { $0 == .bool(true) } ?? !batch.isDeadLetterRetry, "dead_letter_retry lost")
    for (item, entry) in zip(sent, entries) {
        guard case .object(let members) = item, case .int(let offset)? = members["offset"], let sentEntry = members["entry"] else {
            fuzzCheck(false, "an entry sent without offset or entry")
            return
        }
        fuzzCheck(UInt64(offset) == entry.offset.rawValue, "offset changed")
        guard let original = try? JSONParser.parse(entry.raw) else { return }
        fuzzCheck(sameJSON(original, sentEntry), "the entry the plugin gets differs from the one produced")
    }
    // An applied position, as the broker sends it in setAppliedPosition and reads it back.
    if bytes.count >= 9 {
        let offset = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self) } >> 1
        let position = AppliedPosition(identity: bytes[8] & 1 == 0 ? nil : identity, offset: Offset(offset))
        let params = PluginWireProtocol.positionParams(position)
        guard let value = try? JSONParser.parse(params), case .object(let members) = value else {
            fuzzCheck(false, "position params are not a JSON object")
            return
        }
        guard case .success(let back) = PluginWireProtocol.decodePosition(.object(["position": members["position"] ?? .null])) else {
            fuzzCheck(false, "a position the broker sends does not decode")
            return
        }
        fuzzCheck(back == position, "an applied position does not round-trip")
    }
}
