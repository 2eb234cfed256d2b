/* bd_report: the throughput report a worker sends to topic batchdet.reports.
 *
 *   {"v":1,"worker":"gpu-node-7:1234","host":"gpu-node-7","ts":1764124800.5,
 *    "devices":[{"name":"cuda:0","images":51234,"failed":3,"img_s":2310.5}],
 *    "shards_done":[{"job":"archive-2026-11","shard":17,"images":256,"failed":1}],
 *    "queues":{"fetch":12,"decode":3}}
 *
 * Required: v, worker, ts, devices (may be empty). Optional: host, shards_done (absent
 * = none), queues (name -> depth; names are ids). Device counters are cumulative since
 * the worker started; a shard's "images" counts all its images and "failed" those of
 * them that ended in an error, so failed <= images. Counters stay below 2^53, so that
 * any JSON reader (JavaScript included) keeps them exact.
 *
 * Ownership: bd_report_new/bd_report_decode give a report freed with
 * bd_report_destroy (NULL no-op); it owns its arrays. Encoded text: caller frees.
 * Thread safety: no shared state. */
#ifndef BD_REPORT_H
#define BD_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "bd_proto.h"

#define BD_REPORT_MAX_NAME 256    /* worker and host */
#define BD_REPORT_MAX_DEVICES 64
#define BD_REPORT_MAX_DEVNAME 64
#define BD_REPORT_MAX_SHARDS 4096
#define BD_REPORT_MAX_QUEUES 64
#define BD_REPORT_MAX_COUNT ((int64_t)1 << 53)
#define BD_REPORT_MAX_RATE 1e9    /* img/s */
#define BD_REPORT_MAX_TS 1e11     /* seconds since 1970 */

typedef struct bd_report_device {
  char name[BD_REPORT_MAX_DEVNAME + 1]; /* e.g. "cuda:0", "cpu" */
  int64_t images, failed;
  double img_s;
} bd_report_device;

typedef struct bd_report_shard {
  char job[BD_ID_MAX + 1];
  int64_t shard, images, failed;
} bd_report_shard;

typedef struct bd_report_queue {
  char name[BD_ID_MAX + 1];
  int64_t depth;
} bd_report_queue;

typedef struct bd_report {
  char worker[BD_REPORT_MAX_NAME + 1];
  char host[BD_REPORT_MAX_NAME + 1]; /* optional (empty = absent) */
  double ts;
  size_t n_devices, n_shards, n_queues;
  bd_report_device devices[BD_REPORT_MAX_DEVICES];
  bd_report_queue queues[BD_REPORT_MAX_QUEUES];
  bd_report_shard *shards; /* owned array of n_shards (capacity cap_shards) */
  size_t cap_shards;       /* internal */
} bd_report;

bd_report *bd_report_new(void);
void bd_report_destroy(bd_report *r);

/* Appenders; BD_E_LIMIT past the maxima above, BD_E_INVALID for a name too long to
 * store. Strings are copied; values are checked by validate/encode. */
bd_status bd_report_add_device(bd_report *r, const char *name, int64_t images, int64_t failed,
                               double img_s, bd_err *err);
bd_status bd_report_add_shard(bd_report *r, const char *job, int64_t shard, int64_t images,
                              int64_t failed, bd_err *err);
bd_status bd_report_add_queue(bd_report *r, const char *name, int64_t depth, bd_err *err);

/* Same contracts as bd_manifest_decode / _validate / _encode. */
bd_status bd_report_decode(const char *json, size_t len, bd_report **out, bd_proto_errors *errs);
bd_status bd_report_validate(const bd_report *r, bd_proto_errors *errs);
bd_status bd_report_encode(const bd_report *r, char **out, size_t *out_len, bd_err *err);

#endif
