#pragma once
#include <stdint.h>

/// Starts counting heap allocations made by any thread of this process.
void sluice_alloc_counter_start(void);
/// Stops counting; the totals stay readable.
void sluice_alloc_counter_stop(void);
/// Allocation calls (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) counted so far.
int64_t sluice_alloc_counter_allocations(void);
/// Bytes requested by the counted allocation calls.
int64_t sluice_alloc_counter_bytes(void);
