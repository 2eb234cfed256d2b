/* bd_notify: a wake-up counter for a thread that waits on several sources at once (the
 * worker's executor: its input queue and every model pool's completion queue). Each
 * source calls bd_notify_signal after it made something available; the waiter reads the
 * sequence number BEFORE it checks its sources without blocking, and, when none had
 * anything, waits for the sequence to move past the number it read. A signal that comes
 * between the check and the wait has already moved the sequence, so it is never lost;
 * a signal for something the waiter already took only costs one extra check.
 *
 *   uint64_t seq = bd_notify_seq(n);
 *   if (!take_anything()) (void)bd_notify_wait(n, seq, 0.2);
 *
 * Thread safety: every function may be called from any thread; bd_notify_destroy only
 * when no other call is in progress or can still come (bd_notify_destroy(NULL) is a
 * no-op). Signalling takes only the notifier's own mutex, never blocks on the waiter,
 * and may be done while holding other locks, as long as no waiter holds them while it
 * calls into the notifier. */
#ifndef BD_NOTIFY_H
#define BD_NOTIFY_H

#include <stdint.h>

#include "bd_status.h"

typedef struct bd_notify bd_notify;

bd_status bd_notify_new(bd_notify **out, bd_err *err);
void bd_notify_destroy(bd_notify *n);

/* Moves the sequence on by one and wakes every waiter. */
void bd_notify_signal(bd_notify *n);

/* The current sequence number (it only grows). */
uint64_t bd_notify_seq(bd_notify *n);

/* Waits until the sequence differs from seen, at most timeout_s seconds (0: no wait,
 * < 0: no limit). BD_OK when it moved (at once if it already had), BD_E_TIMEOUT when
 * not. Spurious wake-ups of the condition variable are absorbed here. */
bd_status bd_notify_wait(bd_notify *n, uint64_t seen, double timeout_s);

#endif
