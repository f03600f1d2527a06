/* ring_shm.c: the `shm` backend, byte for byte the segment interop/shm.py makes (its constants come
 * from streamstyle_contract.h): header at 0, signals at SS_SHM_SIGNALS, slots on SS_SHM_PAGE
 * boundaries. Counters are written with release stores after the data they guard, and read with
 * acquire loads, so a side that sees a counter sees the data. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"

typedef struct shm_impl {
    char name[64];          /* with the leading '/' that shm_open wants; the protocol gets name + 1 */
    unsigned char *base;
    size_t total;
    volatile uint64_t *ready, *released, *done;
} shm_impl;

static uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

static ss_status shm_mark_ready(ss_ring *r, uint32_t slot, uint64_t seq, void *stream) {
    shm_impl *s = r->impl;
    (void)stream;
    __atomic_store_n(&s->ready[slot], seq, __ATOMIC_RELEASE);
    return SS_OK;
}

static int shm_is_released(ss_ring *r, uint32_t slot, uint64_t seq) {
    shm_impl *s = r->impl;
    return __atomic_load_n(&s->released[slot], __ATOMIC_ACQUIRE) >= seq;
}

/* No stream to order on the host: an acquire load of the slot's signal orders this thread's later
 * accesses of the slot after the service's (whose answer, seen first, already showed it). */
static ss_status shm_wait_released(ss_ring *r, uint32_t slot, void *stream) {
    shm_impl *s = r->impl;
    (void)stream;
    (void)__atomic_load_n(&s->released[slot], __ATOMIC_ACQUIRE);
    return SS_OK;
}

static ss_status shm_wait_done(ss_ring *r, uint32_t slot, void *stream) {
    shm_impl *s = r->impl;
    (void)stream;
    (void)__atomic_load_n(&s->done[slot], __ATOMIC_ACQUIRE);
    return SS_OK;
}

static void shm_close(ss_ring *r) {
    shm_impl *s = r->impl;
    munmap(s->base, s->total);
    shm_unlink(s->name);
    free(s);
    free(r);
}

static const ss_ring_ops SHM_OPS = {shm_mark_ready, shm_is_released, shm_wait_released, shm_wait_done, shm_close};

static void put_u32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put_u64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }

ss_status ss_ring_create_shm(uint32_t slots, uint64_t input_bytes, uint64_t output_bytes, ss_ring **out) {
    static unsigned counter;
    uint64_t first = align_up(SS_SHM_SIGNALS + 3 * SS_SHM_SIGNAL_BYTES * (uint64_t)slots, SS_SHM_PAGE);
    uint64_t in_step = align_up(input_bytes, SS_SHM_PAGE), out_step = align_up(output_bytes, SS_SHM_PAGE);
    uint64_t total = first + slots * (in_step + out_step);
    ss_ring *r = calloc(1, sizeof *r);
    shm_impl *s = calloc(1, sizeof *s);
    struct timespec ts;
    int fd = -1;
    if (!r || !s) { free(r); free(s); ss_set_error("memory", "out of memory"); return SS_OUT_OF_MEMORY; }
    if (total > (uint64_t)SIZE_MAX / 2) { free(r); free(s); ss_set_error("argument", "ring too large"); return SS_INVALID_ARGUMENT; }
    clock_gettime(CLOCK_REALTIME, &ts);
    for (int attempt = 0; attempt < 16 && fd < 0; attempt++) {
        snprintf(s->name, sizeof s->name, "/ss-%ld-%u-%lx", (long)getpid(),
                 __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED), (unsigned long)(ts.tv_nsec ^ (attempt * 7919L)));
        fd = shm_open(s->name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        ss_set_error("system", "shm_open: %s", strerror(errno));
        free(r); free(s);
        return SS_SYSTEM_FAILED;
    }
    if (ftruncate(fd, (off_t)total) != 0) {
        ss_set_error("system", "ftruncate of %llu bytes: %s", (unsigned long long)total, strerror(errno));
        close(fd); shm_unlink(s->name); free(r); free(s);
        return SS_SYSTEM_FAILED;
    }
    s->base = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (s->base == MAP_FAILED) {
        ss_set_error("system", "mmap: %s", strerror(errno));
        shm_unlink(s->name); free(r); free(s);
        return SS_SYSTEM_FAILED;
    }
    s->total = (size_t)total;
    memset(s->base, 0, (size_t)first);  /* a fresh segment is zero already; the header says so explicitly */
    memcpy(s->base + SS_SHM_HEADER_OFFSETS_MAGIC, SS_SHM_MAGIC, 8);
    put_u32(s->base + SS_SHM_HEADER_OFFSETS_VERSION, SS_SHM_VERSION);
    put_u32(s->base + SS_SHM_HEADER_OFFSETS_SLOTS, slots);
    put_u64(s->base + SS_SHM_HEADER_OFFSETS_INPUT_BYTES, input_bytes);
    put_u64(s->base + SS_SHM_HEADER_OFFSETS_OUTPUT_BYTES, output_bytes);
    /* The owner pid: a service that reaps this client as dead unlinks the ring only if this process is gone. */
    put_u32(s->base + SS_SHM_OWNER_OFFSET, (uint32_t)getpid());
    s->ready = (volatile uint64_t *)(void *)(s->base + SS_SHM_SIGNALS);
    s->released = s->ready + slots;
    s->done = s->released + slots;
    r->ops = &SHM_OPS;
    r->impl = s;
    r->desc.backend = SS_BACKEND_SHM;
    r->desc.slots = slots;
    r->desc.device = -1;
    r->desc.shm_name = s->name + 1;
    r->desc.sync_offset = SS_SHM_SIGNALS;
    r->desc.input_bytes = input_bytes;
    r->desc.output_bytes = output_bytes;
    for (uint32_t i = 0; i < slots; i++) {
        r->desc.input_offsets[i] = first + i * in_step;
        r->desc.output_offsets[i] = first + slots * in_step + i * out_step;
        r->inputs[i] = s->base + r->desc.input_offsets[i];
        r->outputs[i] = s->base + r->desc.output_offsets[i];
    }
    *out = r;
    return SS_OK;
}
