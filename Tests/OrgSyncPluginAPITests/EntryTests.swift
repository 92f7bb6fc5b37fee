import OrgSyncPluginAPI
import Testing

@Suite struct EntryTests {
    @Test func parsesAWorkloadEntry() throws {
        let line = #"{"org":"rivi-prod","object":"Contact","op":"upsert","key":"0038d0000000Q0uRZS","ts":"2026-11-18T11:06:40.025Z","fields":{"LastName":"Rossi","Amount":12.5,"Count":3,"Active":true,"Note":null},"trace":"x"}"#
        let entry = try Entry.parse(Array(line.utf8), offset: 7)
        #expect(entry.offset == 7)
        #expect(entry.org == "rivi-prod")
        #expect(entry.object == "Contact")
        #expect(entry.op == .upsert)
        #expect(entry.key == "0038d0000000Q0uRZS")
        #expect(entry.fields["LastName"] == .string("Rossi"))
        #expect(entry.fields["Amount"] == .double(12.5))
        #expect(entry.fields["Count"] == .int(3))
        #expect(entry.fields["Active"] == .bool(true))
        #expect(entry.fields["Note"] == .null)
        #expect(entry.extra["trace"] == .string("x"))
        #expect(entry.raw == Array(line.utf8))
    }

    @Test func deleteNeedsNoFields() throws {
        let entry = try Entry.parse(Array(#"{"org":"a","object":"Lead","op":"delete","key":"k","ts":"t"}"#.utf8))
        #expect(entry.op == .delete)
        #expect(entry.fields.isEmpty)
    }

    @Test(arguments: [
        (#"{"org":"a","object":"Lead","op":"delete","key":"k"}"#, "ts"),
        (#"{"org":1,"object":"Lead","op":"delete","key":"k","ts":"t"}"#, "org"),
        (#"{"org":"a","object":"","op":"delete","key":"k","ts":"t"}"#, "object"),
        (#"{"org":"a","object":"Lead","op":"merge","key":"k","ts":"t"}"#, "op"),
        (#"{"org":"a","object":"Lead","op":"upsert","key":"k","ts":"t","fields":[1]}"#, "fields"),
    ])
    func rejectsBadMembers(json: String, field: String) {
        #expect(throws: EntryValidationError.self) { try Entry.parse(Array(json.utf8)) }
        do {
            _ = try Entry.parse(Array(json.utf8))
        } catch {
            #expect(error.field == field)
        }
    }

    @Test func rejectsNonObjectsAndBadBytes() {
        for bad in [Array("[1,2]".utf8), Array("{".utf8), [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D], []] {
            do {
                _ = try Entry.parse(bad)
                Issue.record("accepted \(bad)")
            } catch {
                #expect(error.field == nil)
            }
        }
    }

    @Test func jsonDataRoundTrips() throws {
        let entry = Entry(offset: 1, org: "o", object: "Case", op: .insert, key: "k", ts: "t",
                          fields: ["Subject": .string("Ünïcode ✓"), "N": .int(-4)])
        let again = try Entry.parse(entry.raw, offset: 1)
        #expect(again.fields == entry.fields)
        #expect(again.op == .insert)
    }
}
