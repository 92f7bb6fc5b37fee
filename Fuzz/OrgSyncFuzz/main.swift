// The fuzz executable's entry point: picks the target named by ORGSYNC_FUZZ_TARGET and hands
// control to libFuzzer's driver, which reads its usual flags (-runs=, -max_total_time=, a
// corpus directory...) from the command line. See Fuzz/README.md.
import CLibFuzzer
#if canImport(Glibc)
import Glibc
#endif

if let directory = getenv("ORGSYNC_FUZZ_WRITE_SEEDS").map({ String(cString: $0) }) {
    do {
        try Seeds.write(to: directory)
        exit(0)
    } catch {
        printError("cannot write the seeds: \(error)")
        exit(1)
    }
}
guard FuzzTargets.selected != nil else {
    let names = FuzzTargets.all.map(\.name).joined(separator: ", ")
    printError("set ORGSYNC_FUZZ_TARGET to one of: \(names)")
    exit(2)
}
var arguments = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&arguments, &argv) { data, size in
    FuzzTargets.run(data, size)
    return 0
})
