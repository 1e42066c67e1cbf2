#include "sluice_support.h"
#include <stdlib.h> /* defines __GLIBC__ on glibc */
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void sluice_release_free_memory(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

void sluice_use_mmap_above(long bytes) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, (int)bytes);
#else
    (void)bytes;
#endif
}
