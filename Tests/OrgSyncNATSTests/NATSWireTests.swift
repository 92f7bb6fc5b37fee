@testable import OrgSyncNATS
import OrgSyncCore
import Testing

/// The NATS protocol as bytes, without a server: what the parser takes, what it refuses before
/// allocating, and what the client writes.
@Suite struct NATSWireTests {
    static let info = #"INFO {"server_id":"NAB","version":"2.9.10","proto":1,"headers":true,"max_payload":1048576,"jetstream":true} "# + "\r\n"

    func ops(_ bytes: [UInt8], messageBytesMax: Int = 1 << 20, chunk: Int = .max) throws -> [NATSServerOp] {
        var parser = NATSParser(messageBytesMax: messageBytesMax)
        var ops: [NATSServerOp] = []
        var index = 0
        while index < bytes.count {
            let end = min(bytes.count, index + chunk)
            parser.append(bytes[index..<end])
            index = end
            while let op = try parser.next() { ops.append(op) }
        }
        #expect(parser.bufferedBytes == 0)
        return ops
    }

    @Test func readsEveryOperationTheServerSendsWholeOrByteByByte() throws {
        let stream = Array((Self.info + "PING\r\n+OK\r\npong\r\n"
            + "MSG a.b 7 5\r\nhe\r\nl\r\n"  // a payload may hold CRLF: read by length
            + "MSG a.b 7 _INBOX.x.1 0\r\n\r\n"
            + "HMSG _INBOX.x.2 9 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
            + "HMSG a 3 r 40 45\r\nNATS/1.0\r\nNats-Msg-Id: one\r\nX:  two \r\n\r\nhello\r\n"
            + "-ERR 'Permissions Violation for Publish to \"x\"'\r\n").utf8)
        let whole = try ops(stream)
        #expect(try ops(stream, chunk: 1) == whole)
        #expect(try ops(stream, chunk: 7) == whole)
        guard whole.count == 9, case .info(let info) = whole[0] else { Issue.record("\(whole)"); return }
        #expect(info == NATSServerInfo(serverID: "NAB", version: "2.9.10", headers: true, maxPayloadBytes: 1 << 20, jetStream: true))
        #expect(Array(whole[1...3]) == [.ping, .ok, .pong])
        #expect(whole[4] == .message(NATSMessage(subject: "a.b", sid: 7, payload: Array("he\r\nl".utf8))))
        #expect(whole[5] == .message(NATSMessage(subject: "a.b", sid: 7, replyTo: "_INBOX.x.1")))
        guard case .message(let noResponders) = whole[6], case .message(let withHeaders) = whole[7] else { return }
        #expect(noResponders.status == 503 && noResponders.replyTo == nil)
        #expect(withHeaders.headers?["Nats-Msg-Id"] == "one" && withHeaders.headers?["X"] == "two")
        #expect(withHeaders.headers?["nats-msg-id"] == nil, "names are exact, as the server reads them")
        #expect(withHeaders.payload == Array("hello".utf8) && withHeaders.replyTo == "r" && withHeaders.status == nil)
        #expect(whole[8] == .error(#"Permissions Violation for Publish to "x""#))
    }

    @Test func refusesWhatItCannotTrustBeforeAllocatingForIt() throws {
        let cases: [(String, String)] = [
            (String(repeating: "x", count: NATSParser.controlLineBytesMax + 10), "a control line with no end"),
            ("MSG a 1 999999999999\r\n", "a size beyond any bound"),
            ("MSG a 1 2000000\r\n", "a message larger than the bound"),
            ("MSG a 1 1x\r\n", "a size with a letter"),
            ("MSG a 1 -1\r\n", "a negative size"),
            ("MSG a b 1\r\nx\r\n", "a sid that is not a number"),
            ("MSG a 1\r\n", "too few arguments"),
            ("HMSG a 1 20 10\r\n", "a header block larger than the message"),
            ("HMSG a 1 5 5\r\nhello\r\n", "a header block too small to be one"),
            ("HMSG a 1 14 14\r\nHTTP/1.1 2\r\n\r\n\r\n", "a header block without NATS/1.0"),
            ("HMSG a 1 16 16\r\nNATS/1.0 5x3\r\n\r\n\r\n", "a status that is not a number"),
            ("MSG a 1 3\r\nabcXY", "a payload not followed by CRLF"),
            ("INFO {\"server_id\": 5}\r\n", "an INFO of the wrong shape"),
            ("INFO {\"server_id\":\"x\",\"max_payload\":0}\r\n", "an INFO allowing no payload"),
            ("INFO {\"server_id\":\"x\",\"max_payload\":99999999999}\r\n", "an INFO allowing more than any bound"),
            ("HELLO\r\n", "an operation that does not exist"),
        ]
        for (bytes, what) in cases {
            #expect(throws: NATSProtocolError.self, "\(what)") { _ = try ops(Array(bytes.utf8)) }
        }
    }

    @Test func seededGarbageNeverTrapsAndStaysBounded() throws {
        var random = SplitMix64(seed: 18)
        let pieces = ["MSG ", "HMSG ", "PING\r\n", "\r\n", " ", "a.b ", "7 ", "12 ", "NATS/1.0", "-ERR '", "INFO {", "}", "x"]
        for _ in 0..<2_000 {
            var parser = NATSParser(messageBytesMax: 4096)
            var bytes: [UInt8] = []
            for _ in 0..<Int(random.next() % 24) {
                if random.next() % 3 == 0 {
                    bytes.append(UInt8(truncatingIfNeeded: random.next()))
                } else {
                    bytes += Array(pieces[Int(random.next() % UInt64(pieces.count))].utf8)
                }
            }
            parser.append(bytes)
            do {
                while try parser.next() != nil {}
            } catch {}
            #expect(parser.bufferedBytes <= bytes.count)
        }
    }

    @Test func writesWhatTheServerReads() throws {
        #expect(NATSWire.publish(subject: "FOO", replyTo: nil, headerBlock: nil, payload: Array("Hello NATS!".utf8))
            == Array("PUB FOO 11\r\nHello NATS!\r\n".utf8))
        let block = try #require(NATSHeaders([.init("Bar", "Baz")]).encoded())
        #expect(block == Array("NATS/1.0\r\nBar: Baz\r\n\r\n".utf8))
        #expect(NATSWire.publish(subject: "FOO", replyTo: "R", headerBlock: block, payload: Array("Hello NATS!".utf8))
            == Array("HPUB FOO R 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n".utf8))
        #expect(NATSHeaders([.init("X", "a\r\nPUB evil 1")]).encoded() == nil, "a value cannot smuggle a line")
        #expect(NATSHeaders([.init("Bad Name", "v")]).encoded() == nil)
        #expect(try NATSHeaders.parse(block[...]) == NATSHeaders([.init("Bar", "Baz")]))
    }

    @Test func reconnectWaitsDoubleUpToTheirCapWithoutOverflow() {
        let policy = NATSReconnectPolicy(waitBaseMs: 100, waitMaxMs: 5_000)
        #expect((0..<8).map { policy.waitMs(attempt: $0) } == [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000])
        #expect(policy.waitMs(attempt: 1_000_000) == 5_000)
        #expect(NATSReconnectPolicy(waitBaseMs: Int.max / 2, waitMaxMs: Int.max).waitMs(attempt: 40) == Int.max)
    }

    @Test func subjectsAreCheckedBeforeTheyReachALine() {
        for good in ["a", "a.b", "$JS.API.STREAM.CREATE.x", "_INBOX.abc.1"] {
            #expect(NATSWire.isValidPublishSubject(good))
        }
        for bad in ["", "a..b", ".a", "a.", "a b", "a\r\nPUB x 1", "a.*", "a.>", "a.b*", String(repeating: "a", count: 1025)] {
            #expect(!NATSWire.isValidPublishSubject(bad), "\(bad.prefix(20))")
        }
        #expect(NATSWire.isValidSubscribeSubject("a.*.c") && NATSWire.isValidSubscribeSubject("a.>") && NATSWire.isValidSubscribeSubject(">"))
        #expect(!NATSWire.isValidSubscribeSubject("a.>.c") && !NATSWire.isValidSubscribeSubject("a.b*"))
    }
}
