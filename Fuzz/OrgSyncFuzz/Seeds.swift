import Foundation
@testable import OrgSyncCore
@testable import OrgSyncLog
import OrgSyncTestSupport
import OrgSyncPluginAPI
import OrgSyncBroker
import OrgSyncServer
import Synchronization

/// Writes the seed corpora (`ORGSYNC_FUZZ_WRITE_SEEDS=<dir>`, run by `.ci/fuzz.sh --seeds`):
/// the inputs the tests use, and files made by the real encoders (a stream written through
/// `StreamLog`, its cursors, identity and `.keys`), in each target's input format.
enum Seeds {
    static let entries: [String] = [
        #"{"org":"o","object":"Contact","op":"upsert","key":"k1","ts":"2026-11-25T00:00:00Z","fields":{"Name":"n1"}}"#,
        #"{"org":"acme","object":"Account","op":"insert","key":"a-1","ts":"t","fields":{"n":1,"x":-2.5e10,"b":true,"z":null,"l":[1,"2",{"3":[]}]}}"#,
        #"{"org":"o","object":"Contact","op":"delete","key":"k2","ts":"t"}"#,
        #"{"org":"o","object":"O","op":"upsert","key":"k","ts":"t","fields":{"s":"\u00e9\ud83d\ude00\n\t\"\\/"},"extra":{"trace":"x"},"v":2}"#,
        "  {\"org\":\"o\",\r\n \"object\":\"O\",\"op\":\"delete\",\"key\":\"k\",\"ts\":\"t\",\"fields\":null}  ",
    ]

    static let json: [String] = entries + [
        "0", "-0", "1.5e-300", "12345678901234567890", "-9223372036854775808", "[]", "{}", "null", "true",
        #"[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]"#, #""\ud800\udc00""#, #"{"a":{"b":{"c":[1,2,3,{"d":"e"}]}}}"#,
    ]

    static func write(to root: String) throws {
        func put(_ target: String, _ name: String, _ bytes: [UInt8]) throws {
            let directory = root + "/" + target
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: directory + "/seed-" + name))
        }
        for (i, text) in json.enumerated() { try put("json", "\(i)", Array(text.utf8)) }
        for (i, text) in entries.enumerated() { try put("entry", "\(i)", Array(text.utf8)) }

        // Record batches: plain, several entries, compressed, a group's first batch, control.
        let payloads = entries.map { Array($0.utf8) }
        var scratch: [UInt8] = []
        let batches: [(String, [[UInt8]], Int32?, UInt16)] = [
            ("one", [payloads[0]], nil, 0), ("three", Array(payloads.prefix(3)), nil, 0),
            ("zlib", payloads + payloads, 6, 0), ("group", [payloads[2]], nil, RecordBatchHeader.flagGroupContinues),
        ]
        for (name, items, level, flags) in batches {
            var bytes: [UInt8] = []
            try RecordBatchCodec.encode(entries: items, baseOffset: 7, timestampMs: 1_700_000_000_000, compressionLevel: level,
                                        into: &bytes, scratch: &scratch, flags: flags)
            try put("batch", name, [1] + bytes)
        }
        // A codec-2 batch: one entry with the target's preset dictionary.
        var zdict: [UInt8] = []
        try RecordBatchCodec.encode(entries: [payloads[0]], baseOffset: 7, timestampMs: 1_700_000_000_000, compressionLevel: 1,
                                    into: &zdict, scratch: &scratch, dictionary: Zlib.PresetDeflater(dictionary: fuzzDictionary, level: 6))
        try put("batch", "zdict", [1] + zdict)
        let record = IdempotencyRecord(key: "req-42", fingerprint: EntriesFingerprint(entries: Array(payloads.prefix(2))),
                                       result: AppendResult(firstOffset: 7, lastOffset: 8), timestampMs: 1_700_000_000_000)
        var control: [UInt8] = []
        RecordBatchCodec.encodeControl(records: [record], baseOffset: 9, timestampMs: 1_700_000_000_000, into: &control)
        try put("batch", "control", [1] + control)

        // A stream written by the log: three segments, keyed appends, a cursor, codec-2 batches and
        // their .zdict files (110 rounds: dictionaries shrink the batches, and the segments must
        // still roll; base offsets stay under 256, as the input format names them in a byte).
        let storage = FaultInjectingStorage()
        var configuration = fuzzLogConfiguration()
        configuration.segmentBytesMax = 4_096
        let log = try StreamLog.open(dataDirectory: LogDirectoryInput.dataDirectory, name: LogDirectoryInput.stream,
                                     configuration: configuration, storage: storage, logger: quietLogger)
        for round in 0..<110 {
            let batch = Array(payloads.prefix(1 + round % 3))
            _ = blocking { try? await log.append(batch, idempotencyKey: round % 5 == 0 ? "key-\(round)" : nil) }
        }
        try log.storeCursor("c0", offset: 3)
        blocking { await log.close() }
        let directory = LogDirectoryInput.directory + "/"
        var input: [UInt8] = [0]
        var files: [String: [UInt8]] = [:]
        for path in storage.filePaths() where path.hasPrefix(directory) {
            files[String(path.dropFirst(directory.count))] = storage.fileBytes(path)
        }
        for (name, bytes) in files.sorted(by: { $0.key < $1.key }) {
            let kind: UInt8
            var base: UInt8 = 0
            if let dot = name.firstIndex(of: "."), let offset = UInt8(name[..<dot]) {
                switch name[dot...] {
                case ".log": kind = 0
                case ".index": kind = 1
                case ".keys": kind = 2
                case ".zdict": kind = 8
                default: continue
                }
                base = offset
            } else if name == StreamLineage.fileName {
                kind = 3
            } else if name.hasPrefix("cursors/") {
                kind = 4
            } else {
                continue
            }
            let body = Array(bytes.prefix(0xFFFF))
            input += [kind, base, UInt8(body.count & 0xFF), UInt8(body.count >> 8)] + body
            switch kind {
            case 2: try put("smallfiles", "keys-\(base)", [2] + bytes)
            case 3:
                try put("smallfiles", "identity", [1] + bytes)
                if case .success(let lineage) = StreamLineage.decode(bytes) {
                    try put("smallfiles", "lineage-json", [3] + Array(JSONEncoder().encode(lineage)))
                }
            case 4: try put("smallfiles", "cursor", [0] + bytes)
            default: break
            }
        }
        try put("log", "stream", input)
        input[0] = 7  // the same with checksums fixed by the harness, and an append
        try put("log", "stream-fixed", input)
        input[0] = 4
        try put("log", "stream-append", input)

        // Checksummed lines: a sync-log record and a dead letter, as the files hold them.
        let sync = SyncLogRecord(sequence: 1, timeMs: 1_700_000_000_000, linkClockMs: 5, event: .suspended, state: .suspended,
                                 reason: "target down", offset: Offset(3), status: .failed, targetCode: "57P01")
        let letter = DeadLetter(offset: Offset(9), entryJSON: entries[0], error: "UNIQUE constraint failed", targetCode: "1555",
                                failedAtMs: 1_700_000_000_000)
        let lines = [encodeJSON(sync) ?? [], encodeJSON(letter) ?? []]
        try put("lines", "files", [0] + lines.flatMap { ChecksummedLinesFile.encodeLine($0) })
        try put("lines", "plain", [1] + lines.joined(separator: [0x0A]))

        // Plugin wire protocol: what a plugin prints (plugins/PROTOCOL.md), and entries to send.
        let answers = [
            #"{"id":1,"result":{"protocolVersion":2,"name":"python-sqlite","version":"1.1.0"}}"#,
            #"{"id": 7, "error": {"class": "rejected", "offset": 1041, "message": "UNIQUE constraint failed: Account.key", "targetCode": "1555"}}"#,
            #"{"id":5,"result":{"position":{"streamId":"s-4f1c9a0e","epoch":2,"offset":42}}}"#,
            #"{"id":5,"result":{"position":{"streamId":null,"epoch":null,"offset":42}}}"#,
            #"{"id":5,"result":{"position":null}}"#, #"{"id":5,"result":{"appliedOffset":42}}"#,
            #"{"id":4,"error":{"class":"connection","message":"down"}}"#,
        ]
        try put("plugin", "responses", [0] + Array(answers.joined(separator: "\n").utf8) + [0x0A])
        try put("plugin", "responses-crlf", [2] + Array(answers.joined(separator: "\r\n").utf8))
        try put("plugin", "entries", [1] + Array(entries.joined(separator: "\n").utf8))
        try put("plugin", "entries-retry", [3] + Array(entries.prefix(2).joined(separator: "\n").utf8))

        // Configuration: the example file and a small one.
        if let example = FileManager.default.contents(atPath: "data/orgsync.example.yaml") {
            try put("config", "example", Array(example))
        }
        try put("config", "small", Array("""
            auth:
              tokens:
                - { name: a, role: admin, token_env: FUZZ_TOKEN }
            server: { body_bytes_max: 65536, entry_bytes_max: 2048 }
            streams:
              - name: events
                fsync: interval
              - name: other
            links:
              - { name: l, stream: events, adapter: sqlite, settings: { path: x.sqlite } }
            """.utf8))

        // HTTP: appends as the tests send them.
        let requests = [
            "POST /v1/streams/s/entries\nContent-Type: application/json\n\n" + entries[0],
            "POST /v1/streams/s/entries\nContent-Type: application/x-ndjson\nIdempotency-Key: k-1\n\n" + entries.prefix(3).joined(separator: "\n"),
            "POST /v1/streams/s/entries\nContent-Type: application/json\nAuthorization: Bearer nope\n\n{}",
            "GET /v1/streams/s\n\n", "GET /v1/streams\n\n", "POST /v1/streams/nope/entries\nContent-Type: application/json\n\n{}",
            "GET /v1/streams/s/samples?window_ms=60000\n\n", "GET /v1/streams/s/samples?window_ms=0\n\n",
        ]
        for (i, request) in requests.enumerated() { try put("http", "\(i)", Array(request.utf8)) }
        if let gzip = try? Zlib.compress(Array(entries[0].utf8), format: .gzip) {
            try put("http", "gzip", Array("POST /v1/streams/s/entries\nContent-Type: application/json\nContent-Encoding: gzip\n\n".utf8) + gzip)
        }
    }
}
