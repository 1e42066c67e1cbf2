#include <sqlite3.h>

/// Binds text whose memory the caller keeps alive until the next bind or step (SQLITE_STATIC).
static inline int sluice_bind_text_static(sqlite3_stmt *stmt, int index, const char *text, int length) {
    return sqlite3_bind_text(stmt, index, text, length, SQLITE_STATIC);
}
/// Binds a blob whose memory the caller keeps alive until the next bind or step (SQLITE_STATIC).
static inline int sluice_bind_blob_static(sqlite3_stmt *stmt, int index, const void *data, int length) {
    return sqlite3_bind_blob(stmt, index, data, length, SQLITE_STATIC);
}
/// Binds text that SQLite copies (SQLITE_TRANSIENT).
static inline int sluice_bind_text_transient(sqlite3_stmt *stmt, int index, const char *text, int length) {
    return sqlite3_bind_text(stmt, index, text, length, SQLITE_TRANSIENT);
}

/// Turns off SQLite's memory statistics (a global mutex per allocation). Call before the first open.
static inline int sluice_sqlite_configure(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
