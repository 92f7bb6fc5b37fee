import OrgSyncPluginAPI
@testable import PostgresAdapter

/// What a PostgreSQL server sends a capture source: the input is a session of pgoutput
/// messages, each framed as `u16 length` + bytes. Every message is read (an error is fine) and
/// fed to one mapper, as a capture round does. Properties: nothing traps; every entry made is a
/// valid entry whose stored bytes read back to the position of the change that made it.
@Sendable func fuzzPgOutput(_ data: [UInt8]) {
    var mapper = ChangeMapper(sourceName: "fuzz")
    var at = 0
    while at + 2 <= data.count {
        let length = Int(data[at]) << 8 | Int(data[at + 1])
        at += 2
        let message = Array(data[at..<min(data.count, at + length)])
        at += length
        guard let parsed = try? PgOutputMessage.parse(message) else { continue }
        guard case .change(let position, let entries)? = try? mapper.map(parsed) else { continue }
        fuzzCheck(!entries.isEmpty && entries.count <= 2, "a change made \(entries.count) entries")
        for entry in entries {
            guard let stored = try? Entry.parse(entry.raw) else {
                fuzzCheck(false, "a captured entry is not a valid entry: \(String(decoding: entry.raw, as: UTF8.self).prefix(200))")
                return
            }
            fuzzCheck(stored.fields == entry.fields && stored.extra == entry.extra && stored.key == entry.key,
                      "a captured entry reads back different: \(String(decoding: entry.raw, as: UTF8.self).prefix(200))")
            fuzzCheck(ChangeMapper.position(of: stored, sourceName: "fuzz") == position,
                      "entry records \(String(describing: ChangeMapper.position(of: stored, sourceName: "fuzz"))), change was at \(position)")
        }
    }
}
