import OrgSyncCore

extension BrokerConfiguration {
    /// The supervisor settings of a link: the defaults of ``LinkSupervisorConfiguration`` with
    /// the link's `supervisor:` table applied. Throws ``ConfigurationError`` naming the key.
    public func supervisorConfiguration(for link: Link) throws -> LinkSupervisorConfiguration {
        var config = LinkSupervisorConfiguration()
        if let stop = link.stopOnReject { config.stopOnReject = stop }
        for (key, text) in link.supervisor {
            func int() throws -> Int {
                guard let value = Int(text) else { throw ConfigurationError(field: key, problem: "must be an integer, not \(text)") }
                return value
            }
            func ms() throws -> UInt64 {
                guard let value = UInt64(text) else { throw ConfigurationError(field: key, problem: "must be a non-negative integer (ms), not \(text)") }
                return value
            }
            switch key {
            case "probe_threshold": config.probeThreshold = try int()
            case "verify_interval_ms": config.verifyIntervalMs = try ms()
            case "verify_window_ms": config.verifyWindowMs = try ms()
            case "backoff_base_ms": config.backoffBaseMs = try ms()
            case "backoff_cap_ms": config.backoffCapMs = try ms()
            case "jitter_ratio":
                guard let value = Double(text) else { throw ConfigurationError(field: key, problem: "must be a number in 0..<1") }
                config.jitterRatio = value
            case "flap_limit": config.flapLimit = try int()
            case "flap_window_ms": config.flapWindowMs = try ms()
            case "hold_down_ms": config.holdDownMs = try ms()
            case "retryable_attempts_max": config.retryableAttemptsMax = try int()
            case "retryable_backoff_base_ms": config.retryableBackoffBaseMs = try ms()
            case "batch_entries_max": config.batchEntriesMax = try int()
            case "sync_log_records_max": config.syncLogRecordsMax = try int()
            case "dead_letters_max": config.deadLettersMax = try int()
            default:
                throw ConfigurationError(field: key, problem: "unknown supervisor setting (known: probe_threshold, verify_interval_ms, verify_window_ms, backoff_base_ms, backoff_cap_ms, jitter_ratio, flap_limit, flap_window_ms, hold_down_ms, retryable_attempts_max, retryable_backoff_base_ms, batch_entries_max, sync_log_records_max, dead_letters_max)")
            }
        }
        do {
            try config.validate()
        } catch {
            throw ConfigurationError(field: snakeCase(error.field), problem: error.problem)
        }
        return config
    }
}

func snakeCase(_ camel: String) -> String {
    var out = ""
    for c in camel {
        if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) }
    }
    return out
}
