/* Private interface between bd_fetch.c and bd_s3.c (not for other modules). */
#ifndef BD_FETCH_INTERNAL_H
#define BD_FETCH_INTERNAL_H

#include "bd_fetch.h"
#include "bd_s3.h"

/* Submits a GET of an already-built http(s) URL; sign_s3 signs it with the fetcher's
 * S3 configuration. Same contract as bd_fetch_submit otherwise. */
bd_status bd_fetch__submit_http(bd_fetch *f, uint64_t id, const char *http_url, int sign_s3,
                                void *user, long wait_ms, bd_err *err);

/* The fetcher's S3 configuration (read-only, lives as long as f). */
const bd_s3_cfg *bd_fetch__s3(const bd_fetch *f);

#endif
