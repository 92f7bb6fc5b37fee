#ifndef ORGSYNC_CLIBFUZZER_H
#define ORGSYNC_CLIBFUZZER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt, linked by `-sanitize=fuzzer`): parses libFuzzer's flags
/// from argv and runs `callback` on each input. The fuzz executable's `main` calls it, because
/// SwiftPM names the entry point of an executable module itself.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
