import OrgSyncNATS

/// What a NATS server sends a client: the input is a chunk size (its first byte) and the
/// server's bytes. They are read whole and again in chunks of that size, as a socket hands them
/// over. Properties: nothing traps; both readings give the same operations and stop at the same
/// error; no message is larger than the bound; the parser holds no more than it was given.
@Sendable func fuzzNATS(_ data: [UInt8]) {
    guard let first = data.first else { return }
    let chunk = max(1, Int(first))
    let bytes = Array(data.dropFirst())
    let messageBytesMax = 4_096
    func read(chunked: Bool) -> (ops: [NATSServerOp], failed: Bool) {
        var parser = NATSParser(messageBytesMax: messageBytesMax)
        var ops: [NATSServerOp] = []
        var index = 0
        while index < bytes.count {
            let end = chunked ? min(bytes.count, index + chunk) : bytes.count
            parser.append(bytes[index..<end])
            index = end
            do {
                while let op = try parser.next() {
                    if case .message(let message) = op {
                        fuzzCheck(message.payload.count <= messageBytesMax, "a message of \(message.payload.count) bytes passed a bound of \(messageBytesMax)")
                    }
                    ops.append(op)
                }
            } catch {
                return (ops, true)
            }
            fuzzCheck(parser.bufferedBytes <= bytes.count, "the parser holds more than it was given")
        }
        return (ops, false)
    }
    let whole = read(chunked: false)
    let pieces = read(chunked: true)
    fuzzCheck(whole.failed == pieces.failed, "read whole it \(whole.failed ? "failed" : "did not fail"), in chunks of \(chunk) it \(pieces.failed ? "failed" : "did not")")
    fuzzCheck(whole.ops == pieces.ops, "read whole: \(whole.ops.count) operations; in chunks of \(chunk): \(pieces.ops.count), or different ones")
}
