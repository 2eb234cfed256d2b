/* bd_s3: the S3 specifics of the fetcher: configuration and credentials (AWS_*
 * environment variables, shared credentials file), s3:// URL mapping to path-style or
 * virtual-host HTTP URLs, SigV4 signing of a curl easy handle (CURLOPT_AWS_SIGV4), and
 * ListObjectsV2 with pagination and a small bounded XML parser.
 *
 * Secrets live only in bd_s3_cfg; they are never copied into messages. Thread safety:
 * a bd_s3_cfg is read-only after bd_s3_cfg_load and may be shared between threads. */
#ifndef BD_S3_H
#define BD_S3_H

#include <stddef.h>
#include <stdint.h>

#include "bd_fetch.h"
#include "bd_status.h"

struct curl_slist;

#define BD_S3_KEY_MAX 1024 /* S3's own limit on key length, in bytes */

typedef struct bd_s3_creds {
  char access_key[128];
  char secret_key[256];
  char session_token[4096];
  int have; /* 1 when access_key and secret_key are set */
} bd_s3_creds;

typedef struct bd_s3_cfg {
  char region[64];
  char endpoint[512]; /* "" = AWS */
  int path_style;
  bd_s3_creds creds;
} bd_s3_cfg;

/* endpoint/region NULL and path_style -1 take AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL,
 * AWS_REGION / AWS_DEFAULT_REGION (default us-east-1) and "path-style when an endpoint
 * is set". Credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN),
 * else the file AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE
 * or "default"; none found is not an error (anonymous requests). */
bd_status bd_s3_cfg_load(bd_s3_cfg *cfg, const char *endpoint, const char *region, int path_style,
                         bd_err *err);

/* Zeroes the secrets in cfg. */
void bd_s3_cfg_wipe(bd_s3_cfg *cfg);

/* Reads [profile] from an ini-style credentials file (at most 1 MiB, lines of at most
 * 4 KiB). BD_E_NOT_FOUND when the file or the profile is missing. */
bd_status bd_s3_creds_from_file(const char *path, const char *profile, bd_s3_creds *out,
                                bd_err *err);

/* Splits "s3://bucket/key" (bucket 3..63 chars, key 1..1024 bytes). */
bd_status bd_s3_split(const char *s3url, char *bucket, size_t bucket_cap, const char **key,
                      bd_err *err);

/* HTTP URL of an object (key percent-encoded, '/' kept) or, with key NULL, of the
 * bucket with query (already canonical: sorted and encoded). Caller frees. */
char *bd_s3_http_url(const bd_s3_cfg *cfg, const char *bucket, const char *key, const char *query,
                     bd_err *err);

/* Sets SigV4 on a curl easy handle (void* to keep curl.h out of this header) and
 * appends the x-amz-content-sha256 (empty payload) and x-amz-security-token headers
 * to *hdrs (caller frees the list with curl_slist_free_all). No-op without credentials. */
bd_status bd_s3_sign_easy(const bd_s3_cfg *cfg, void *easy, struct curl_slist **hdrs, bd_err *err);

typedef struct bd_s3_object {
  const char *key;
  const char *etag; /* quotes removed */
  const char *last_modified;
  uint64_t size;
} bd_s3_object;

/* Returns 0 to go on, nonzero to stop listing. */
typedef int (*bd_s3_list_fn)(void *ctx, const bd_s3_object *obj);

/* Parses one ListObjectsV2 response: calls fn for each <Contents>, sets *truncated and
 * copies <NextContinuationToken> into token (cap bytes). *stopped set when fn stopped.
 * Rejects responses over 16 MiB, fields over their limits, and <Error> documents. */
bd_status bd_s3_parse_list(const char *xml, size_t len, bd_s3_list_fn fn, void *ctx, int *truncated,
                           char *token, size_t token_cap, int *stopped, bd_err *err);

/* Lists s3://bucket/prefix page by page (page_size 1..1000, continuation tokens),
 * calling fn for every object, at most max_objects in all (0 = 10 million). Each page
 * is one GET through the fetcher's retry policy (opts may be NULL). */
bd_status bd_s3_list(const char *s3prefix, int page_size, size_t max_objects,
                     const bd_fetch_opts *opts, bd_s3_list_fn fn, void *ctx, bd_err *err);

#endif
