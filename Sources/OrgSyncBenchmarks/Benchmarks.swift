import ArgumentParser

@main
struct OrgSyncBenchmarks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "OrgSyncBenchmarks",
        abstract: "orgsync benchmarks: print a Markdown table (--json: RESULT lines, one JSON object each).",
        discussion: """
            Run in release mode on an idle machine: e.g. `swift run -c release OrgSyncBenchmarks \
            append`. Each benchmark measures its ceilings (disk, zlib, a straight SQL client) in \
            the same run and reports ratios against them. The workload is generated from a seed \
            (--count, --seed) unless --input names a JSON-lines file; `OrgSyncBenchmarks workload` \
            writes the same entries to a file, so another system can be measured on them.
            """,
        subcommands: [AppendBenchmark.self, HTTPBenchmark.self, ApplyBenchmark.self, E2EBenchmark.self, MemoryBenchmark.self, CaptureBenchmark.self, ClusterBenchmark.self, WorkloadCommand.self]
    )
}
