#ifndef ORGSYNC_CZLIB_SHIM_H
#define ORGSYNC_CZLIB_SHIM_H
#include <zlib.h>

// deflateInit/inflateInit are macros in zlib.h; Swift cannot call macros, so wrap them.
static inline int orgsync_deflateInit(z_streamp strm, int level) {
    return deflateInit(strm, level);
}
static inline int orgsync_inflateInit(z_streamp strm) {
    return inflateInit(strm);
}
// windowBits picks the wrapper: 15 zlib (HTTP's `deflate`), 15 + 16 gzip.
static inline int orgsync_inflateInit2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}
static inline int orgsync_deflateInit2(z_streamp strm, int level, int windowBits) {
    return deflateInit2(strm, level, Z_DEFLATED, windowBits, 8, Z_DEFAULT_STRATEGY);
}
// memLevel 1...9 sizes the hash table and the pending buffer (8 is zlib's default).
static inline int orgsync_deflateInit2Memory(z_streamp strm, int level, int windowBits, int memLevel) {
    return deflateInit2(strm, level, Z_DEFLATED, windowBits, memLevel, Z_DEFAULT_STRATEGY);
}
#endif
