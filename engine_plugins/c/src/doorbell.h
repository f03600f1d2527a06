/* The doorbell (interop/doorbell.py): a shared-memory segment beside ZeroMQ whose two lanes carry a
 * copy of each frame message to the service and of each done/late answer back, for readers that
 * spin. Its layout and sizes come from the generated contract header (SS_BELL_*). */
#ifndef SS_DOORBELL_H
#define SS_DOORBELL_H

#include <stddef.h>
#include <stdint.h>

typedef struct ss_bell ss_bell;

/* A new segment named /streamstyle-bell-<pid>-<n>, or NULL (errno set). */
ss_bell *ss_bell_create(void);
/* Unmap and unlink. */
void ss_bell_destroy(ss_bell *bell);
/* Its name without the leading "/" (what `open.doorbell` carries). */
const char *ss_bell_name(const ss_bell *bell);
/* Put one message in `lane` (SS_BELL_TO_SERVICE or _TO_ENGINE): 1, or 0 when the lane is full or
 * the message too long (nothing written; ZeroMQ carries it anyway). One writer per lane (it keeps
 * the reader's last `consumed` it read). */
int ss_bell_push(ss_bell *bell, int lane, const void *data, size_t size);
/* Take the next message of `lane` into `out` (`cap` bytes): its length, 0 when the lane is empty,
 * -1 for a record whose length is out of range (consumed). */
long ss_bell_pop(ss_bell *bell, int lane, char *out, size_t cap);
/* The CLOCK_MONOTONIC ns until which `lane`'s reader said it watches the lane (0: never said). */
uint64_t ss_bell_watched_until(const ss_bell *bell, int lane);
/* Ask the CPU to fetch, for writing, the lines the next push to `lane` writes (its counter and the
 * first `bytes` of its next record), so that the push later finds them in this core's cache. A hint:
 * it neither blocks nor changes anything. */
void ss_bell_prefetch(const ss_bell *bell, int lane, size_t bytes);
/* Whether `lane` has a message waiting (a cheap look: two loads). */
int ss_bell_pending(const ss_bell *bell, int lane);

#endif
