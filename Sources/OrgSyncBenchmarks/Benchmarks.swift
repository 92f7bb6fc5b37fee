import ArgumentParser

@main
struct OrgSyncBenchmarks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "OrgSyncBenchmarks",
        abstract: "orgsync benchmarks: print a Markdown table (and RESULT lines for ../shared/bench/peers/compare_table.py).",
        discussion: """
            Run in release mode on an idle machine, next to ../shared/bench on the same workload \
            and hour, and compare ratios: e.g. `swift run -c release OrgSyncBenchmarks append \
            --input /tmp/events.jsonl`. Generate the workload with \
            `python3 ../shared/bench/data/gen_events.py --count 200000 --out /tmp/events.jsonl`.
            """,
        subcommands: [AppendBenchmark.self, HTTPBenchmark.self, ApplyBenchmark.self, E2EBenchmark.self]
    )
}
