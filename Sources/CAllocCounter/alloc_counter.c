// Counts heap allocations by defining the allocator entry points in the executable, which the dynamic
// linker then prefers over glibc's for every library in the process, and forwarding to glibc's own
// implementations (__libc_*). Counting costs one relaxed atomic add per call, only while enabled.
#include "alloc_counter.h"
#include <stddef.h>
#include <errno.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static int enabled;
static int64_t allocations;
static int64_t bytes;

static inline void count(size_t n) {
    if (__atomic_load_n(&enabled, __ATOMIC_RELAXED)) {
        __atomic_fetch_add(&allocations, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&bytes, (int64_t)n, __ATOMIC_RELAXED);
    }
}

void sluice_alloc_counter_start(void) {
    __atomic_store_n(&allocations, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&enabled, 1, __ATOMIC_SEQ_CST);
}
void sluice_alloc_counter_stop(void) { __atomic_store_n(&enabled, 0, __ATOMIC_SEQ_CST); }
int64_t sluice_alloc_counter_allocations(void) { return __atomic_load_n(&allocations, __ATOMIC_RELAXED); }
int64_t sluice_alloc_counter_bytes(void) { return __atomic_load_n(&bytes, __ATOMIC_RELAXED); }

void *malloc(size_t n) { count(n); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(a * b); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(n); return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }
void *memalign(size_t alignment, size_t n) { count(n); return __libc_memalign(alignment, n); }
void *aligned_alloc(size_t alignment, size_t n) { count(n); return __libc_memalign(alignment, n); }
int posix_memalign(void **out, size_t alignment, size_t n) {
    count(n);
    void *p = __libc_memalign(alignment, n);
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}
