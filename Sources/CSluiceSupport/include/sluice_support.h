#pragma once

/// Returns free heap memory to the operating system (glibc malloc_trim); a no-op elsewhere.
void sluice_release_free_memory(void);

/// Makes glibc serve allocations of at least `bytes` with their own mappings, returned to the system on free,
/// so that resident memory follows live memory instead of arena high-water marks. A no-op elsewhere.
void sluice_use_mmap_above(long bytes);

/// Flushes the file system holding the open file `fd` to stable storage (Linux syncfs); elsewhere, fsyncs
/// `fd`. Returns 0, or -1 with errno set.
int sluice_syncfs(int fd);
