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
#endif
