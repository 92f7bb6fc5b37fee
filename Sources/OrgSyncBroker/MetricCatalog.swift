import Prometheus

/// Every metric family the broker exposes on `/metrics`: its name (the unit, or `total` for a
/// counter, last) and its help text. One list, so a name is spelled once, the registry never
/// sees two help texts for one family, and the tests can hold the exposition against it.
enum MetricCatalog {
    static var orgsyncAppendedEntriesTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_appended_entries", unitName: "total",
                             helpText: "Entries appended (durably acknowledged) per stream.")
    }
    static var orgsyncAppendDurationSeconds: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_append_duration", unitName: "seconds",
                             helpText: "Time from an append request's entries reaching the log to their durable (fsynced) acknowledgement.")
    }
    static var orgsyncRejectedRequestsTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_rejected_requests", unitName: "total",
                             helpText: "Append requests answered with an error (bad input, unknown stream, over a limit, log failure).")
    }
    static var orgsyncFsyncDurationSeconds: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_fsync_duration", unitName: "seconds",
                             helpText: "Time one group commit's fsync took.")
    }
    static var orgsyncFlushedBytesTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_flushed_bytes", unitName: "total",
                             helpText: "Bytes written to the segment logs by group commits.")
    }
    static var orgsyncGroupCommitsTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_group_commits", unitName: "total",
                             helpText: "Group commits (one fsync each) of the segment logs.")
    }
    static var orgsyncSourceLagBytes: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_source_lag", unitName: "bytes",
                             helpText: "WAL the source's replication slot holds back on its database (current position minus confirmed).")
    }
    static var orgsyncSourceLagSeconds: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_source_lag", unitName: "seconds",
                             helpText: "Time since the moment up to which every commit of the source is known to be in the stream.")
    }
    static var orgsyncSourceState: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_source_state", unitName: "",
                             helpText: "1 for the state the capture source is in, 0 for the others.")
    }
    static var orgsyncSourceAppendedEntriesTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_source_appended_entries", unitName: "total",
                             helpText: "Entries a capture source appended to its stream.")
    }
    static var orgsyncLinkLagEntries: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_lag", unitName: "entries",
                             helpText: "Entries appended to the link's stream and not yet applied to its target.")
    }
    static var orgsyncLinkCursor: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_cursor", unitName: "",
                             helpText: "The link's committed offset: every entry below it is in the target.")
    }
    static var orgsyncLinkState: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_state", unitName: "",
                             helpText: "1 for the state the link is in, 0 for the others.")
    }
    static var orgsyncLinkHeldDown: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_held_down", unitName: "",
                             helpText: "1 while a flapping link waits out its hold-down, else 0.")
    }
    static var orgsyncLinkDeadLettersFailed: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_dead_letters_failed", unitName: "",
                             helpText: "The link's dead letters still failed (not retried successfully nor resolved).")
    }
    static var orgsyncLinkSuspensionsTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_suspensions", unitName: "total",
                             helpText: "Times the link was suspended after its target failed.")
    }
    static var orgsyncLinkFlapsTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_flaps", unitName: "total",
                             helpText: "Times the link failed again soon after resuming (within the flap window).")
    }
    static var orgsyncLinkHoldDownsTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_hold_downs", unitName: "total",
                             helpText: "Times the link was held down for flapping.")
    }
    static var orgsyncLinkAppliedEntriesTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_applied_entries", unitName: "total",
                             helpText: "Entries the link's target applied.")
    }
    static var orgsyncLinkApplyDurationSeconds: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_apply_duration", unitName: "seconds",
                             helpText: "Time the target took to apply one batch it accepted.")
    }
    static var orgsyncLinkRejectedEntriesTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_rejected_entries", unitName: "total",
                             helpText: "Entries the link's target rejected (dead-lettered, or pausing a stop_on_reject link).")
    }
    static var orgsyncLinkProbesTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_link_probes", unitName: "total",
                             helpText: "Probes of a suspended link's target, by result.")
    }
    static var orgsyncNotificationDeliveriesTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_notification_deliveries", unitName: "total",
                             helpText: "Delivery attempts of notification events, by result (delivered, retried, dead_lettered).")
    }
    static var orgsyncNotificationPendingEvents: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_notification_pending", unitName: "events",
                             helpText: "Notification events planned and not yet delivered nor dead-lettered, per target.")
    }
    static var orgsyncDataFilesystemAvailBytes: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_data_filesystem_avail", unitName: "bytes",
                             helpText: "Bytes free for the broker on the filesystem of its data directory.")
    }
    static var orgsyncDataFilesystemSizeBytes: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "orgsync_data_filesystem_size", unitName: "bytes",
                             helpText: "Size in bytes of the filesystem of the broker's data directory.")
    }
    static var processCpuSecondsTotal: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "process_cpu_seconds", unitName: "total",
                             helpText: "Total user and system CPU time spent in seconds.")
    }
    static var processResidentMemoryBytes: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "process_resident_memory", unitName: "bytes",
                             helpText: "Resident memory size in bytes.")
    }
    static var processVirtualMemoryBytes: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "process_virtual_memory", unitName: "bytes",
                             helpText: "Virtual memory size in bytes.")
    }
    static var processOpenFds: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "process_open_fds", unitName: "",
                             helpText: "Number of open file descriptors.")
    }
    static var processMaxFds: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "process_max_fds", unitName: "",
                             helpText: "Maximum number of open file descriptors.")
    }
    static var processStartTimeSeconds: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "process_start_time", unitName: "seconds",
                             helpText: "Start time of the process since unix epoch in seconds.")
    }

    /// Every family's full name.
    static var names: [String] { all.map(\.name) }

    /// All of the above.
    static var all: [MetricNameDescriptor] {
        [
            orgsyncAppendedEntriesTotal,
            orgsyncAppendDurationSeconds,
            orgsyncRejectedRequestsTotal,
            orgsyncFsyncDurationSeconds,
            orgsyncFlushedBytesTotal,
            orgsyncGroupCommitsTotal,
            orgsyncLinkLagEntries,
            orgsyncLinkCursor,
            orgsyncSourceLagBytes,
            orgsyncSourceLagSeconds,
            orgsyncSourceState,
            orgsyncSourceAppendedEntriesTotal,
            orgsyncLinkState,
            orgsyncLinkHeldDown,
            orgsyncLinkDeadLettersFailed,
            orgsyncLinkSuspensionsTotal,
            orgsyncLinkFlapsTotal,
            orgsyncLinkHoldDownsTotal,
            orgsyncLinkAppliedEntriesTotal,
            orgsyncLinkApplyDurationSeconds,
            orgsyncLinkRejectedEntriesTotal,
            orgsyncLinkProbesTotal,
            orgsyncNotificationDeliveriesTotal,
            orgsyncNotificationPendingEvents,
            orgsyncDataFilesystemAvailBytes,
            orgsyncDataFilesystemSizeBytes,
            processCpuSecondsTotal,
            processResidentMemoryBytes,
            processVirtualMemoryBytes,
            processOpenFds,
            processMaxFds,
            processStartTimeSeconds,
        ]
    }
}
