/* bd_submit: `batchdet submit` and `batchdet resubmit --failed` as library calls.
 *
 * submit: gathers the images (bd_ssrc), optionally drops those whose result from an
 * earlier job is still valid (incremental), writes the job record job:{job} (state
 * queued, model, total, shards, created, thresholds) and the image URLs
 * job:{job}:urls (hash id -> url, used by resubmit and export) BEFORE producing one
 * validated manifest per shard to Kafka with key "{job}:{shard}" (idempotent
 * producer). An existing job id is refused unless force, which first removes job:{job},
 * :shards, :errors, :urls and every det:{job}:* key, so nothing is counted twice.
 *
 * resubmit: the images in job:{job}:errors, with their URLs from job:{job}:urls, are
 * produced as new shards numbered from the job's shard count on; "shards" grows by
 * their number and state goes back to queued; total is unchanged (the workers' shard
 * completion moves an image from failed to done when its retry succeeds).
 *
 * Thread safety: one call at a time per process is the intended use (no shared state). */
#ifndef BD_SUBMIT_H
#define BD_SUBMIT_H

#include <stddef.h>

#include "bd_status.h"

#define BD_SUBMIT_MAX_SHARD_SIZE 10000 /* = BD_MANIFEST_MAX_IMAGES */

typedef struct bd_submit_opts {
  const char *job, *model;
  const char *list, *dir, *s3_prefix; /* exactly one */
  int shard_size;                     /* 1..BD_SUBMIT_MAX_SHARD_SIZE */
  int has_score_thr, has_iou_thr, has_max_det;
  double score_thr, iou_thr;
  int max_det;
  int force;
  const char *brokers, *redis_url, *topic;
  const char *exts;       /* extension filter for --dir and --s3-prefix */
  const char *since_job;  /* incremental when not NULL */
  const char *model_hash; /* optional: compared with results' "model_hash" */
  /* Progress of a long submit, when set: phase "listed" (done images, total 0: unknown),
   * "stored" (URLs written to Redis, of total), "queued" (shards produced, of total). */
  void (*progress)(void *ctx, const char *phase, size_t done, size_t total);
  void *progress_ctx;
} bd_submit_opts;

/* Why an image was (not) submitted in incremental mode. */
typedef enum {
  BD_INC_UNCHANGED = 0,  /* skipped: result exists, same model, same source */
  BD_INC_NEW,            /* no result in the previous job */
  BD_INC_PREV_ERROR,     /* the previous result is an error */
  BD_INC_MODEL_CHANGED,  /* other model name or model_hash */
  BD_INC_SOURCE_CHANGED, /* other ETag or Last-Modified */
  BD_INC__COUNT
} bd_inc_reason;

const char *bd_inc_reason_name(bd_inc_reason r);

typedef struct bd_submit_summary {
  size_t listed; /* images found by the source (after the extension filter) */
  size_t images; /* images submitted (= the job's total) */
  size_t shards; /* manifests produced */
  int partitions_used, topic_partitions;
  size_t skipped_ext, skipped_badkey, skipped_hidden, skipped_unreadable; /* as in bd_ssrc */
  size_t inc[BD_INC__COUNT];
  long long removed_keys; /* --force */
  int job_existed;        /* set on refusal too */
} bd_submit_summary;

bd_status bd_submit_run(const bd_submit_opts *o, bd_submit_summary *sum, bd_err *err);

typedef struct bd_resubmit_summary {
  size_t images, shards;
  long long first_shard;
  size_t missing_url; /* failed images whose URL is unknown (not requeued) */
  size_t pending;     /* failed images an earlier resubmit's shards still carry (not requeued) */
} bd_resubmit_summary;

/* Requeues the job's failed images as new shards, except those still pending in the shards
 * of an earlier resubmit (job:{job}:retry), unless include_pending. An image claimed by a
 * resubmit that never recorded its shard (killed, Redis lost between claim and record) is
 * pending for BD_RESUBMIT_CLAIM_STALE_S seconds, then taken again. */
#define BD_RESUBMIT_CLAIM_STALE_S 900
bd_status bd_resubmit_failed(const char *job, int shard_size, const char *brokers,
                             const char *redis_url, const char *topic, int include_pending,
                             bd_resubmit_summary *sum, bd_err *err);

/* Incremental decision for one image from its previous result (pure; unit-tested).
 * prev_json NULL = no result. etag/last_modified: the source's current validators
 * (NULL when unknown); only fields present on both sides are compared. */
bd_inc_reason bd_inc_decide(const char *prev_json, size_t len, const char *model,
                            const char *prev_job_model, const char *model_hash, const char *etag,
                            const char *last_modified);

#endif
