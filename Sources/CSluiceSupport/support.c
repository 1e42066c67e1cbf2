#define _GNU_SOURCE
#include "sluice_support.h"
#include <stdlib.h> /* defines __GLIBC__ on glibc */
#include <unistd.h>
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

int sluice_syncfs(int fd) {
#if defined(__linux__)
    return syncfs(fd);
#else
    return fsync(fd);
#endif
}
