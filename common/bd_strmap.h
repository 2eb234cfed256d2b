/* bd_strmap: a map from strings to a long, for duplicate detection and unique names in
 * O(n): manifest image ids, submit's ids, detect's output stems.
 *
 * Sized once for the most keys it will hold (open addressing at load <= 1/2, FNV-1a);
 * it never grows, and a put past that count fails. Keys are borrowed: each must outlive
 * the map. Thread safety: none; one map per thread. */
#ifndef BD_STRMAP_H
#define BD_STRMAP_H

#include <stddef.h>

typedef struct bd_strmap bd_strmap;

/* A map for up to max_keys keys; NULL on allocation failure. */
bd_strmap *bd_strmap_new(size_t max_keys);
void bd_strmap_destroy(bd_strmap *m); /* NULL: no-op */

/* The value slot of key: when key is new, it is added with value and *inserted (may be
 * NULL) is 1; when present, its slot is returned untouched and *inserted is 0. Slots
 * never move: a slot may be read and written for the map's life. NULL (and *inserted 0)
 * when the map already holds max_keys keys and key is new. */
long *bd_strmap_put(bd_strmap *m, const char *key, long value, int *inserted);

/* FNV-1a 64 of a NUL-terminated string, with offset basis 1469598103934665603 (a digit
 * short of FNV's own; kept, because submit's ids for over-long names carry this hash and
 * must not change between versions). */
unsigned long long bd_str_hash(const char *s);

#endif
