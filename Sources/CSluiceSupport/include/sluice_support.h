#pragma once

/// Returns free heap memory to the operating system (glibc malloc_trim); a no-op elsewhere.
void sluice_release_free_memory(void);

/// Makes glibc serve allocations of at least `bytes` with their own mappings, returned to the system on free,
/// so that resident memory follows live memory instead of arena high-water marks. A no-op elsewhere.
void sluice_use_mmap_above(long bytes);

/// Flushes the file system holding the open file `fd` to stable storage (Linux syncfs); elsewhere, fsyncs
/// `fd`. Returns 0, or -1 with errno set.
int sluice_syncfs(int fd);

/// Opens an unnamed regular file in directory `dir` for writing (Linux O_TMPFILE): it has no name until
/// `sluice_link_fd` gives it one, and vanishes if the process dies first. Returns the descriptor, or -1 with
/// errno set (EOPNOTSUPP, EISDIR or EINVAL where the file system or OS lacks it).
int sluice_open_tmpfile(const char *dir);

/// Gives the unnamed file `fd` (from `sluice_open_tmpfile`) the name `path`, atomically; fails with EEXIST
/// if `path` exists. Returns 0, or -1 with errno set.
int sluice_link_fd(int fd, const char *path);
