import OrgSyncCore
import Testing

@Suite struct ConfigurationTests {
    @Test func defaultsAreValid() throws {
        let configuration = LinkSupervisorConfiguration()
        try configuration.validate()
        #expect(configuration.probeThreshold == 3)
    }

    /// One bad value per field; the error must name that field.
    static func breaking(_ field: String) -> LinkSupervisorConfiguration {
        var c = LinkSupervisorConfiguration()
        switch field {
        case "probeThreshold": c.probeThreshold = 0
        case "verifyIntervalMs": c.verifyIntervalMs = 0
        case "verifyWindowMs": c.verifyWindowMs = c.verifyIntervalMs * UInt64(c.probeThreshold - 1) - 1
        case "backoffBaseMs": c.backoffBaseMs = 0
        case "backoffCapMs": c.backoffCapMs = c.backoffBaseMs - 1
        case "jitterRatio": c.jitterRatio = 1.5
        case "flapLimit": c.flapLimit = -1
        case "flapWindowMs": c.flapWindowMs = 0
        case "holdDownMs": c.holdDownMs = 0
        case "retryableAttemptsMax": c.retryableAttemptsMax = 0
        case "retryableBackoffBaseMs": c.retryableBackoffBaseMs = 0
        case "batchEntriesMax": c.batchEntriesMax = 0
        case "syncLogRecordsMax": c.syncLogRecordsMax = 0
        case "deadLettersMax": c.deadLettersMax = 0
        default: break
        }
        return c
    }

    @Test(arguments: [
        "probeThreshold", "verifyIntervalMs", "verifyWindowMs", "backoffBaseMs", "backoffCapMs", "jitterRatio",
        "flapLimit", "flapWindowMs", "holdDownMs", "retryableAttemptsMax", "retryableBackoffBaseMs",
        "batchEntriesMax", "syncLogRecordsMax", "deadLettersMax",
    ])
    func invalidFieldIsNamed(field: String) {
        let error = #expect(throws: LinkConfigurationError.self) { try Self.breaking(field).validate() }
        #expect(error?.field == field)
        #expect(error?.description.hasPrefix(field) == true)
    }

    @Test func notANumberJitterIsRejected() {
        var configuration = LinkSupervisorConfiguration()
        configuration.jitterRatio = .nan
        #expect(throws: LinkConfigurationError(field: "jitterRatio", problem: "must be in 0..<1")) {
            try configuration.validate()
        }
    }
}
