#define _GNU_SOURCE
#include "sluice_support.h"
#include <stdlib.h> /* defines __GLIBC__ on glibc */
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
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

int sluice_open_tmpfile(const char *dir) {
#if defined(__linux__) && defined(O_TMPFILE)
    return open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
#else
    (void)dir;
    errno = EOPNOTSUPP;
    return -1;
#endif
}

int sluice_link_fd(int fd, const char *path) {
#if defined(__linux__)
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
#else
    (void)fd;
    (void)path;
    errno = EOPNOTSUPP;
    return -1;
#endif
}
