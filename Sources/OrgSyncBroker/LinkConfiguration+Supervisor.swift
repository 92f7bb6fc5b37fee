import OrgSyncCore

extension BrokerConfiguration {
    /// The supervisor settings of a link: the defaults of ``LinkSupervisorConfiguration`` with
    /// the link's `supervisor:` settings applied. Throws ``ConfigurationError`` naming the field
    /// whose value is out of range.
    public func supervisorConfiguration(for link: Link) throws -> LinkSupervisorConfiguration {
        try supervisorConfiguration(link.supervisor, stopOnReject: link.stopOnReject)
    }

    /// The defaults with `settings` (a link's or a source's `supervisor:`) applied.
    public func supervisorConfiguration(_ settings: Supervisor, stopOnReject: Bool?) throws -> LinkSupervisorConfiguration {
        var config = LinkSupervisorConfiguration()
        if let stop = stopOnReject { config.stopOnReject = stop }
        func set<Value>(_ value: Value?, _ field: WritableKeyPath<LinkSupervisorConfiguration, Value>) {
            if let value { config[keyPath: field] = value }
        }
        set(settings.probeThreshold, \.probeThreshold)
        set(settings.verifyIntervalMs, \.verifyIntervalMs)
        set(settings.verifyWindowMs, \.verifyWindowMs)
        set(settings.backoffBaseMs, \.backoffBaseMs)
        set(settings.backoffCapMs, \.backoffCapMs)
        set(settings.jitterRatio, \.jitterRatio)
        set(settings.flapLimit, \.flapLimit)
        set(settings.flapWindowMs, \.flapWindowMs)
        set(settings.holdDownMs, \.holdDownMs)
        set(settings.retryableAttemptsMax, \.retryableAttemptsMax)
        set(settings.retryableBackoffBaseMs, \.retryableBackoffBaseMs)
        set(settings.batchEntriesMax, \.batchEntriesMax)
        set(settings.syncLogRecordsMax, \.syncLogRecordsMax)
        set(settings.deadLettersMax, \.deadLettersMax)
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
