/* bd_offsets: per-partition tracking of in-flight Kafka messages (shards), so that the
 * worker stores an offset only when every message before it is done.
 *
 * Shards of one partition finish out of order (a small shard overtakes a big one). The
 * committable position of a partition is one past the highest offset such that it and
 * every tracked offset below it are done; storing anything further would lose the
 * unfinished shard on a crash. Revoking a partition forgets its in-flight offsets (the
 * next owner redoes them). Thread safety: none; the worker's consumer thread owns it. */
#ifndef BD_OFFSETS_H
#define BD_OFFSETS_H

#include <stdint.h>

#include "bd_status.h"

typedef struct bd_offsets bd_offsets;

bd_status bd_offsets_new(bd_offsets **out, bd_err *err);
void bd_offsets_destroy(bd_offsets *o);

/* A message at (topic, partition, offset) entered the pipeline. Offsets of one partition
 * must be tracked in increasing order (Kafka delivers them so). */
bd_status bd_offsets_track(bd_offsets *o, const char *topic, int32_t partition, int64_t offset,
                           bd_err *err);
/* The message is finished (results stored, or sent to the dead-letter topic). Returns
 * BD_E_NOT_FOUND when it is not tracked (e.g. its partition was revoked meanwhile). */
bd_status bd_offsets_done(bd_offsets *o, const char *topic, int32_t partition, int64_t offset);
/* The offset to store for a partition (next message to consume), or -1 when nothing new
 * became committable since the last call. Advances the internal committed mark. */
int64_t bd_offsets_committable(bd_offsets *o, const char *topic, int32_t partition);
/* Forgets a revoked partition's in-flight messages. */
void bd_offsets_revoke(bd_offsets *o, const char *topic, int32_t partition);
/* Number of tracked, unfinished messages (all partitions). */
int bd_offsets_in_flight(const bd_offsets *o);

/* Iterates partitions with something committable: calls fn for each; returns count. */
int bd_offsets_foreach_committable(bd_offsets *o,
                                   void (*fn)(void *ctx, const char *topic, int32_t partition,
                                              int64_t offset),
                                   void *ctx);

#endif
