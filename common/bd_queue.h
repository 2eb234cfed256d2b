/* bd_queue: a bounded multi-producer multi-consumer FIFO of pointers, the link between
 * pipeline stages (fetch -> decode -> batch -> execute -> write). Bounded so that a slow
 * stage pushes back on the ones before it.
 *
 * Ownership: the queue stores pointers and never frees them; bd_queue_destroy expects an
 * empty (or drained) queue. Thread safety: every function may be called from any thread.
 * After bd_queue_close, pushes fail and pops drain what is left, then return
 * BD_E_CANCELLED.
 *
 * A consumer that waits on more than this queue gives it a bd_notify (set_notify): each
 * successful push and the close signal it, under the queue's lock, after the item is in. */
#ifndef BD_QUEUE_H
#define BD_QUEUE_H

#include <stddef.h>

#include "bd_notify.h"
#include "bd_status.h"

typedef struct bd_queue bd_queue;

bd_status bd_queue_new(size_t capacity, bd_queue **out, bd_err *err);
void bd_queue_destroy(bd_queue *q);

/* Blocks while full, up to timeout_s (< 0: forever). BD_E_TIMEOUT when it could not push,
 * BD_E_CANCELLED when the queue is closed. */
bd_status bd_queue_push(bd_queue *q, void *item, double timeout_s);
/* Blocks while empty, up to timeout_s (< 0: forever; 0: poll). */
bd_status bd_queue_pop(bd_queue *q, void **item, double timeout_s);
void bd_queue_close(bd_queue *q);
size_t bd_queue_len(bd_queue *q);
size_t bd_queue_capacity(const bd_queue *q);
/* n (borrowed; NULL: none) is signalled from now on, replacing any previous one. When
 * this returns, no push or close signals the previous notifier any more, so its owner
 * may destroy it after setting NULL. */
void bd_queue_set_notify(bd_queue *q, bd_notify *n);

#endif
