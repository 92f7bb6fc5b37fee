import ArgumentParser
import Foundation
import OrgSyncCore

/// The benchmarks' workload: "data update events" shaped like the ones orgsync carries, made
/// by a seeded generator with no other source of randomness, so a run is repeatable from a
/// clone (the same `--seed` and `--count` give the same entries, byte for byte, on any machine).
///
/// Shape: ~400 tenant orgs with a Zipf-like skew (a few big tenants dominate); 6 object types
/// (Account, Contact, Opportunity, Lead, Case, Task) with their own fields; an insert carries
/// every field, an upsert a random subset (a partial update), a delete none; op mix upsert 78 %,
/// insert 17 %, delete 5 %; Salesforce-style 18-character ids, hot records updated often;
/// millisecond timestamps that only move forward; names, e-mails, cities, sentences, numbers,
/// dates, booleans and some nulls. Entries are ~150–450 bytes of compact JSON.
struct WorkloadGenerator {
    static let defaultSeed: UInt64 = 20_261_124
    static let defaultCount = 200_000
    /// Tenants, and how skewed their traffic is (weight of rank r: 1 / r^1.1).
    static let orgCount = 400

    private var random: SplitMix64
    private let orgs: [String]
    private let orgWeights: CumulativeWeights
    private let objectWeights: CumulativeWeights
    private var pods: [String: String] = [:]
    /// Records created so far, per (org, key prefix).
    private var recordCounts: [String: Int] = [:]
    private var timestampMs: Int64 = 1_795_000_000_000  // 2026-11-18

    init(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var seen: Set<String> = []
        var orgs: [String] = []
        while orgs.count < Self.orgCount {
            var slug = ""
            for _ in 0..<random.int(in: 2..<4) { slug += random.pick(Words.syllables) }
            if random.nextUnit() < 0.25 { slug += "-" + random.pick(["eu", "us", "prod", "apac", "corp", "uk"]) }
            if seen.insert(slug).inserted { orgs.append(slug) }
        }
        self.orgs = orgs
        orgWeights = CumulativeWeights((1...orgs.count).map { 1 / pow(Double($0), 1.1) })
        objectWeights = CumulativeWeights(ObjectType.all.map(\.weight))
        for org in orgs { pods[org] = random.pick(["5g000", "8d000", "1t000", "0H000", "4x000"]) }
        self.random = random
    }

    /// The next entry as one line of compact JSON (no newline).
    mutating func next() -> [UInt8] {
        let org = orgs[orgWeights.pick(random.nextUnit())]
        let object = ObjectType.all[objectWeights.pick(random.nextUnit())]
        let x = random.nextUnit()
        let op = x < 0.78 ? "upsert" : (x < 0.95 ? "insert" : "delete")
        let key = recordKey(org: org, prefix: object.prefix, new: op == "insert")
        var json = JSONLine()
        json.field("org", .string(org))
        json.field("object", .string(object.name))
        json.field("op", .string(op))
        json.field("key", .string(key))
        json.field("ts", .string(nextTimestamp()))
        if op != "delete" {
            var record = RecordContext()
            var fields: [(String, JSONLine.Value)] = []
            for field in object.fields where op == "insert" || random.nextUnit() < field.upsertProbability * 1.6 {
                fields.append((field.name, value(field.kind, org: org, record: &record)))
            }
            if fields.isEmpty {  // an upsert changes at least one field
                let field = object.fields[random.int(in: 0..<object.fields.count)]
                fields.append((field.name, value(field.kind, org: org, record: &record)))
            }
            if op == "upsert" && random.nextUnit() < 0.3 {
                fields.append(("LastModifiedById", value(.userID, org: org, record: &record)))
            }
            json.object("fields", fields)
        }
        return json.finish()
    }

    // MARK: Values

    /// What one record's fields share (an e-mail made of its own first and last name).
    struct RecordContext {
        var first: String?
        var last: String?
        var probability: Int?
    }

    private mutating func value(_ kind: FieldKind, org: String, record: inout RecordContext) -> JSONLine.Value {
        switch kind {
        case .company: return .string(company())
        case .industry: return .string(random.pick(Words.industries))
        case .accountType: return .string(random.pick(Words.accountTypes))
        case .revenue: return random.nextUnit() < 0.05 ? .null : .int(random.int(in: 50..<500_000) * 1000)
        case .employees: return .int(Int(pow(10, 1 + random.nextUnit() * 4.5)))
        case .city: return .string(random.pick(Words.cities).city)
        case .country: return .string(random.pick(Words.cities).country)
        case .phone:
            return .string("+\(random.int(in: 1..<99)) \(random.int(in: 100..<999)) \(random.int(in: 100..<999)) \(random.int(in: 1000..<9999))")
        case .website: return .string("https://www.\(syllables()).\(random.pick(["com", "io", "de", "co.uk", "net", "fr"]))")
        case .rating: return random.pick(Words.ratings).map(JSONLine.Value.string) ?? .null
        case .userID: return .string(salesforceID(org: org, prefix: "005", number: 100_000 + random.int(in: 0..<60)))
        case .first:
            let name = random.pick(Words.firstNames)
            record.first = name
            return .string(name)
        case .last:
            let name = random.pick(Words.lastNames)
            record.last = name
            return .string(name)
        case .email:
            let first = record.first ?? random.pick(Words.firstNames)
            let last = record.last ?? random.pick(Words.lastNames)
            let local = "\(first).\(last)".lowercased().replacingOccurrences(of: "'", with: "")
            return .string("\(local)@\(syllables()).\(random.pick(["com", "io", "de", "org", "net"]))")
        case .title: return .string(random.pick(Words.titles))
        case .accountID: return .string(reference(org: org, prefix: "001"))
        case .contactID: return .string(reference(org: org, prefix: "003"))
        case .leadSource: return .string(random.pick(Words.leadSources))
        case .bool: return .bool(random.nextUnit() < 0.4)
        case .opportunityName:
            let kind = random.pick(["Renewal", "Expansion", "New Business", "Upsell", "Pilot"])
            return .string("\(company()) - \(kind) \(random.int(in: 2024..<2028))")
        case .stage:
            let stage = random.pick(Words.stages)
            record.probability = stage.probability
            return .string(stage.name)
        case .amount: return .decimal(cents: random.int(in: 1_000..<2_500_000) * 100 + random.int(in: 0..<100))
        case .date: return .string(String(format: "2026-%02d-%02d", random.int(in: 1..<13), random.int(in: 1..<29)))
        case .probability: return .int(record.probability ?? random.pick(Words.stages).probability)
        case .forecast: return .string(random.pick(["Pipeline", "Best Case", "Commit", "Omitted", "Closed"]))
        case .sentenceShort: return .string(sentence(words: 3..<7))
        case .sentence: return .string(sentence(words: 4..<10))
        case .sentenceLong: return .string(sentence(words: 8..<22))
        case .leadStatus: return .string(random.pick(Words.leadStatuses))
        case .caseStatus: return .string(random.pick(["New", "Working", "Escalated", "Waiting on Customer", "Closed"]))
        case .priority: return .string(random.pick(["Low", "Medium", "High", "Critical"]))
        case .origin: return .string(random.pick(["Phone", "Email", "Web", "Chat", "Portal"]))
        case .taskStatus: return .string(random.pick(["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"]))
        }
    }

    private mutating func syllables() -> String {
        var text = ""
        for _ in 0..<random.int(in: 2..<4) { text += random.pick(Words.syllables) }
        return text
    }

    private mutating func company() -> String {
        if random.nextUnit() < 0.5 {
            return "\(random.pick(Words.companyWords)) \(random.pick(Words.companyWords)) \(random.pick(Words.companySuffixes))"
        }
        return "\(syllables().capitalized) \(random.pick(Words.companySuffixes))"
    }

    private mutating func sentence(words: Range<Int>) -> String {
        var picked: [String] = []
        for _ in 0..<random.int(in: words) { picked.append(random.pick(Words.sentenceWords)) }
        let text = picked.joined(separator: " ")
        return text.prefix(1).uppercased() + text.dropFirst()
    }

    // MARK: Keys and time

    /// An 18-character Salesforce-style id: prefix, pod, 10 base-62 digits, 3 check letters.
    private func salesforceID(org: String, prefix: String, number: Int) -> String {
        let base62 = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        var n = number
        var digits: [Character] = []
        for _ in 0..<10 {
            digits.append(base62[n % 62])
            n /= 62
        }
        let id = prefix + String((pods[org] ?? "00000").prefix(2)) + String(digits.reversed())
        let h = id.unicodeScalars.enumerated().reduce(0) { $0 + Int($1.element.value) * ($1.offset + 7) }
        return id + String([base62[h % 26 + 10], base62[(h / 26) % 26 + 10], base62[(h / 676) % 26 + 10]])
    }

    /// A new record's key, or (for updates) one of the org's records, skewed towards recent ones.
    private mutating func recordKey(org: String, prefix: String, new: Bool) -> String {
        let slot = org + "/" + prefix
        let count = recordCounts[slot, default: 0]
        if new || count == 0 {
            recordCounts[slot] = count + 1
            return salesforceID(org: org, prefix: prefix, number: 100_000 + count)
        }
        let r = random.nextUnit()
        let index = count - 1 - Int(Double(count) * r * r * r)
        return salesforceID(org: org, prefix: prefix, number: 100_000 + max(0, index))
    }

    private mutating func reference(org: String, prefix: String) -> String {
        let count = recordCounts[org + "/" + prefix, default: 0]
        return salesforceID(org: org, prefix: prefix, number: 100_000 + random.int(in: 0..<(count > 0 ? count : 5000)))
    }

    private mutating func nextTimestamp() -> String {
        timestampMs += 1 + Int64(random.nextUnit() * 40)
        let (seconds, milli) = timestampMs.quotientAndRemainder(dividingBy: 1000)
        let (days, secondOfDay) = seconds.quotientAndRemainder(dividingBy: 86_400)
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm; days are positive here).
        let z = days + 719_468
        let era = z / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(year), Int(month), Int(day),
                      Int(secondOfDay / 3600), Int(secondOfDay % 3600 / 60), Int(secondOfDay % 60), Int(milli))
    }
}

/// `--input`, or else `--count` entries from the generator with `--seed`: every benchmark takes
/// its workload this way.
struct WorkloadOptions: ParsableArguments {
    @Option(help: "Workload JSON-lines file (e.g. from `OrgSyncBenchmarks workload`). Default: generate --count entries.")
    var input: String?
    @Option(help: "Entries: generated with --seed, or the first ones of --input.") var count = WorkloadGenerator.defaultCount
    @Option(help: "Seed of the generator.") var seed = WorkloadGenerator.defaultSeed

    /// The entries, and where they came from (for the report's header).
    func entries() throws -> (entries: [[UInt8]], source: String) {
        guard count > 0 else { throw ValidationErrorText("--count must be at least 1") }
        if let input { return (try loadWorkload(input, count: count), input) }
        var generator = WorkloadGenerator(seed: seed)
        return ((0..<count).map { _ in generator.next() }, "generated, seed \(seed)")
    }
}

/// `OrgSyncBenchmarks workload`: writes the generated workload as JSON Lines, for other tools
/// (a peer's client, `orgsync produce`) to run the very same entries.
struct WorkloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workload",
        abstract: "Write the seeded benchmark workload as JSON Lines (the same entries every time for a seed and count).")

    @Option(help: "Entries to write.") var count = WorkloadGenerator.defaultCount
    @Option(help: "Seed of the generator.") var seed = WorkloadGenerator.defaultSeed
    @Option(help: "Output file; - for standard output.") var out = "-"

    func run() throws {
        guard count > 0 else { throw ValidationError("--count must be at least 1") }
        var generator = WorkloadGenerator(seed: seed)
        let handle: FileHandle
        if out == "-" {
            handle = .standardOutput
        } else {
            guard FileManager.default.createFile(atPath: out, contents: nil), let file = FileHandle(forWritingAtPath: out) else {
                throw ValidationErrorText("cannot create \(out)")
            }
            handle = file
        }
        var chunk: [UInt8] = []
        for _ in 0..<count {
            chunk += generator.next()
            chunk.append(0x0A)
            if chunk.count >= 1 << 20 {
                try handle.write(contentsOf: chunk)
                chunk.removeAll(keepingCapacity: true)
            }
        }
        try handle.write(contentsOf: chunk)
        if out != "-" { try handle.close() }
    }
}

// MARK: - Building blocks

/// The workload's draws from the broker's seeded generator (``SplitMix64``, Steele, Lea, Flood
/// 2014): the same sequence everywhere, so a seed replays the same workload.
extension SplitMix64 {
    /// Uniform in `range` (not empty).
    mutating func int(in range: Range<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }

    mutating func pick<T>(_ items: [T]) -> T { items[int(in: 0..<items.count)] }
}

/// Picks an index with probability proportional to its weight (binary search on the sums).
struct CumulativeWeights {
    private let sums: [Double]

    init(_ weights: [Double]) {
        var total = 0.0
        sums = weights.map { total += $0; return total }
    }

    /// The index for a uniform `unit` in [0, 1).
    func pick(_ unit: Double) -> Int {
        let x = unit * (sums.last ?? 0)
        var low = 0
        var high = sums.count - 1
        while low < high {
            let middle = (low + high) / 2
            if sums[middle] < x { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

/// One line of compact JSON with members in the order written.
struct JSONLine {
    enum Value {
        case string(String)
        case int(Int)
        /// A decimal with two places, from whole cents.
        case decimal(cents: Int)
        case bool(Bool)
        case null
    }

    private var bytes: [UInt8] = [UInt8(ascii: "{")]

    mutating func field(_ name: String, _ value: Value) {
        member(name)
        append(value)
    }

    mutating func object(_ name: String, _ members: [(String, Value)]) {
        member(name)
        bytes.append(UInt8(ascii: "{"))
        for (index, (key, value)) in members.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            string(key)
            bytes.append(UInt8(ascii: ":"))
            append(value)
        }
        bytes.append(UInt8(ascii: "}"))
    }

    mutating func finish() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }

    private mutating func member(_ name: String) {
        if bytes.count > 1 { bytes.append(UInt8(ascii: ",")) }
        string(name)
        bytes.append(UInt8(ascii: ":"))
    }

    private mutating func append(_ value: Value) {
        switch value {
        case .string(let text): string(text)
        case .int(let number): bytes += Array(String(number).utf8)
        case .decimal(let cents): bytes += Array(String(format: "%d.%02d", cents / 100, cents % 100).utf8)
        case .bool(let flag): bytes += Array((flag ? "true" : "false").utf8)
        case .null: bytes += Array("null".utf8)
        }
    }

    private mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(byte)
            case 0..<0x20:
                bytes += Array(String(format: "\\u%04x", Int(byte)).utf8)
            default:
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

enum FieldKind {
    case company, industry, accountType, revenue, employees, city, country, phone, website, rating, userID
    case first, last, email, title, accountID, contactID, leadSource, bool, opportunityName, stage, amount
    case date, probability, forecast, sentenceShort, sentence, sentenceLong, leadStatus, caseStatus
    case priority, origin, taskStatus
}

struct ObjectType {
    struct Field {
        var name: String
        var kind: FieldKind
        /// How often an upsert carries it (scaled by 1.6 so the mean entry is ~290 bytes).
        var upsertProbability: Double
    }

    var name: String
    var prefix: String
    var weight: Double
    var fields: [Field]

    static let all: [ObjectType] = [
        ObjectType(name: "Account", prefix: "001", weight: 22, fields: [
            Field(name: "Name", kind: .company, upsertProbability: 0.5), Field(name: "Industry", kind: .industry, upsertProbability: 0.35),
            Field(name: "Type", kind: .accountType, upsertProbability: 0.3), Field(name: "AnnualRevenue", kind: .revenue, upsertProbability: 0.4),
            Field(name: "NumberOfEmployees", kind: .employees, upsertProbability: 0.3), Field(name: "BillingCity", kind: .city, upsertProbability: 0.25),
            Field(name: "BillingCountry", kind: .country, upsertProbability: 0.25), Field(name: "Phone", kind: .phone, upsertProbability: 0.2),
            Field(name: "Website", kind: .website, upsertProbability: 0.2), Field(name: "Rating", kind: .rating, upsertProbability: 0.25),
            Field(name: "OwnerId", kind: .userID, upsertProbability: 0.2),
        ]),
        ObjectType(name: "Contact", prefix: "003", weight: 26, fields: [
            Field(name: "FirstName", kind: .first, upsertProbability: 0.35), Field(name: "LastName", kind: .last, upsertProbability: 0.35),
            Field(name: "Email", kind: .email, upsertProbability: 0.45), Field(name: "Phone", kind: .phone, upsertProbability: 0.3),
            Field(name: "Title", kind: .title, upsertProbability: 0.3), Field(name: "AccountId", kind: .accountID, upsertProbability: 0.3),
            Field(name: "MailingCity", kind: .city, upsertProbability: 0.2), Field(name: "LeadSource", kind: .leadSource, upsertProbability: 0.2),
            Field(name: "HasOptedOutOfEmail", kind: .bool, upsertProbability: 0.15),
        ]),
        ObjectType(name: "Opportunity", prefix: "006", weight: 20, fields: [
            Field(name: "Name", kind: .opportunityName, upsertProbability: 0.3), Field(name: "StageName", kind: .stage, upsertProbability: 0.6),
            Field(name: "Amount", kind: .amount, upsertProbability: 0.5), Field(name: "CloseDate", kind: .date, upsertProbability: 0.4),
            Field(name: "Probability", kind: .probability, upsertProbability: 0.4), Field(name: "AccountId", kind: .accountID, upsertProbability: 0.2),
            Field(name: "ForecastCategory", kind: .forecast, upsertProbability: 0.3), Field(name: "IsClosed", kind: .bool, upsertProbability: 0.3),
            Field(name: "NextStep", kind: .sentenceShort, upsertProbability: 0.25),
        ]),
        ObjectType(name: "Lead", prefix: "00Q", weight: 12, fields: [
            Field(name: "FirstName", kind: .first, upsertProbability: 0.3), Field(name: "LastName", kind: .last, upsertProbability: 0.3),
            Field(name: "Company", kind: .company, upsertProbability: 0.35), Field(name: "Email", kind: .email, upsertProbability: 0.4),
            Field(name: "Status", kind: .leadStatus, upsertProbability: 0.55), Field(name: "LeadSource", kind: .leadSource, upsertProbability: 0.3),
            Field(name: "Industry", kind: .industry, upsertProbability: 0.25), Field(name: "Rating", kind: .rating, upsertProbability: 0.3),
            Field(name: "AnnualRevenue", kind: .revenue, upsertProbability: 0.2),
        ]),
        ObjectType(name: "Case", prefix: "500", weight: 12, fields: [
            Field(name: "Subject", kind: .sentence, upsertProbability: 0.4), Field(name: "Status", kind: .caseStatus, upsertProbability: 0.6),
            Field(name: "Priority", kind: .priority, upsertProbability: 0.4), Field(name: "Origin", kind: .origin, upsertProbability: 0.2),
            Field(name: "AccountId", kind: .accountID, upsertProbability: 0.2), Field(name: "ContactId", kind: .contactID, upsertProbability: 0.2),
            Field(name: "IsEscalated", kind: .bool, upsertProbability: 0.3), Field(name: "Description", kind: .sentenceLong, upsertProbability: 0.2),
        ]),
        ObjectType(name: "Task", prefix: "00T", weight: 8, fields: [
            Field(name: "Subject", kind: .sentenceShort, upsertProbability: 0.4), Field(name: "Status", kind: .taskStatus, upsertProbability: 0.6),
            Field(name: "Priority", kind: .priority, upsertProbability: 0.3), Field(name: "ActivityDate", kind: .date, upsertProbability: 0.35),
            Field(name: "WhoId", kind: .contactID, upsertProbability: 0.2), Field(name: "WhatId", kind: .accountID, upsertProbability: 0.2),
            Field(name: "IsClosed", kind: .bool, upsertProbability: 0.3),
        ]),
    ]
}

/// The generator's vocabulary.
enum Words {
    static let syllables = ["ac", "me", "glo", "bex", "tri", "na", "vo", "lux", "zen", "kor", "pa", "ri", "sol", "ta", "mi", "qu",
                            "dra", "fen", "li", "ox", "ter", "ra", "vi", "sta", "no", "va", "ly", "cor", "pex", "um", "bri", "go"]
    static let companySuffixes = ["Inc", "LLC", "Ltd", "GmbH", "Corp", "Group", "Holdings", "SA", "BV", "Partners", "Systems", "Labs",
                                  "Industries", "& Co"]
    static let companyWords = ["Global", "United", "Northern", "Pacific", "Blue", "Summit", "Apex", "Vertex", "Pioneer", "Silver",
                               "Harbor", "Evergreen", "Quantum", "Atlas", "Prime", "Metro", "Coastal", "Iron", "Bright", "Red",
                               "Falcon", "Cedar", "Union", "First", "Oak", "River", "Stone", "Nova", "Delta", "Omega"]
    static let firstNames = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
                             "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Wei", "Yuki",
                             "Aarav", "Priya", "Mohammed", "Fatima", "Lukas", "Sofia", "Mateo", "Camila", "Olga", "Ivan", "Chloe",
                             "Noah", "Amara", "Kenji", "Ingrid", "Pierre", "Léa", "José", "Zoë", "Björn"]
    static let lastNames = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
                            "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee",
                            "Chen", "Wang", "Kumar", "Singh", "Müller", "Schmidt", "Rossi", "Dubois", "Nakamura", "Kowalski",
                            "O'Brien", "Nguyen", "Silva", "Petrov", "Andersson", "Okafor"]
    static let cities: [(city: String, country: String)] = [
        ("San Francisco", "US"), ("New York", "US"), ("Chicago", "US"), ("Austin", "US"), ("Seattle", "US"), ("Boston", "US"),
        ("Toronto", "CA"), ("London", "GB"), ("Manchester", "GB"), ("Paris", "FR"), ("Lyon", "FR"), ("Berlin", "DE"),
        ("München", "DE"), ("Amsterdam", "NL"), ("Madrid", "ES"), ("Milano", "IT"), ("Stockholm", "SE"), ("Warszawa", "PL"),
        ("Tokyo", "JP"), ("Osaka", "JP"), ("Singapore", "SG"), ("Sydney", "AU"), ("Bangalore", "IN"), ("São Paulo", "BR"),
        ("Mexico City", "MX"), ("Dublin", "IE"), ("Zürich", "CH"), ("Tel Aviv", "IL"),
    ]
    static let industries = ["Technology", "Banking", "Insurance", "Healthcare", "Retail", "Manufacturing", "Telecommunications",
                             "Energy", "Education", "Media", "Transportation", "Hospitality", "Government", "Biotechnology",
                             "Consulting", "Agriculture", "Construction", "Chemicals", "Apparel", "Not For Profit"]
    static let accountTypes = ["Prospect", "Customer - Direct", "Customer - Channel", "Channel Partner / Reseller",
                               "Installation Partner", "Technology Partner", "Other"]
    static let ratings: [String?] = ["Hot", "Warm", "Cold", nil]
    static let leadSources = ["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Trade Show", "Word of mouth", "Webinar",
                              "Advertisement", "Other"]
    static let titles = ["CEO", "CFO", "CTO", "VP Sales", "VP Engineering", "Director of IT", "Procurement Manager",
                         "Software Engineer", "Account Manager", "Head of Data", "Operations Analyst", "Marketing Coordinator",
                         "SVP, Finance", "Office Manager"]
    static let stages: [(name: String, probability: Int)] = [
        ("Prospecting", 10), ("Qualification", 20), ("Needs Analysis", 30), ("Value Proposition", 40),
        ("Id. Decision Makers", 50), ("Perception Analysis", 60), ("Proposal/Price Quote", 75), ("Negotiation/Review", 90),
        ("Closed Won", 100), ("Closed Lost", 0),
    ]
    static let leadStatuses = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]
    static let sentenceWords = ["cannot", "login", "invoice", "missing", "error", "when", "exporting", "report", "page", "loads",
                                "slowly", "after", "upgrade", "sync", "fails", "for", "some", "records", "duplicate", "contacts",
                                "created", "by", "import", "API", "timeout", "on", "bulk", "update", "please", "call", "back",
                                "regarding", "renewal", "contract", "pricing", "question", "about", "new", "license", "tier", "the",
                                "customer", "reports", "that", "dashboard", "shows", "wrong", "totals", "since", "Monday",
                                "follow", "up", "demo", "scheduled", "next", "week", "send", "quote"]
}
