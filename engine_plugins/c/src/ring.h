/* ring.h: a session's ring of frame slots, one backend behind one interface (interop/shm.py and
 * interop/cuda_ipc.py are the reference for the two layouts and their signals).
 *
 * The engine side owns the ring: it allocates it, describes it for "open", signals `ready`, and reads
 * `released` and `done`. Nothing here blocks or syncs the GPU from the host, except create and close. */
#ifndef SS_RING_H
#define SS_RING_H

#include "codec.h"

typedef struct ss_ring ss_ring;

typedef struct ss_ring_ops {
    /* shm: store the ready counter. cuda-ipc: record the ready event on `stream`. */
    ss_status (*mark_ready)(ss_ring *r, uint32_t slot, uint64_t seq, void *stream);
    /* shm: the released counter shows `seq` (or later); cuda-ipc: never known on the host. */
    int (*is_released)(ss_ring *r, uint32_t slot, uint64_t seq);
    /* cuda-ipc: `stream` waits on the released (or done) event; shm: nothing to do. */
    ss_status (*wait_released)(ss_ring *r, uint32_t slot, void *stream);
    ss_status (*wait_done)(ss_ring *r, uint32_t slot, void *stream);
    void (*close)(ss_ring *r);
} ss_ring_ops;

struct ss_ring {
    const ss_ring_ops *ops;
    ss_ring_desc desc;          /* what "open" sends; offsets, sizes, handles */
    void *inputs[SS_MAX_SLOTS], *outputs[SS_MAX_SLOTS];
    void *impl;
};

ss_status ss_ring_create_shm(uint32_t slots, uint64_t input_bytes, uint64_t output_bytes, ss_ring **out);
ss_status ss_ring_create_cuda(uint32_t slots, uint64_t input_bytes, uint64_t output_bytes, int32_t device,
                              ss_ring **out);

/* The thread's last error, set by failing calls (client.c owns the storage). */
void ss_set_error(const char *code, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
