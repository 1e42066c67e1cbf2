#pragma once

/// Returns free heap memory to the operating system (glibc malloc_trim); a no-op elsewhere.
void sluice_release_free_memory(void);
